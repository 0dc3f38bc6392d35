"""``portico serve`` listener flags, observed from outside: ss(8) for the kernel's view."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess

import pytest
from conversations import DEADLINE, converse, converse_on

from portico.testing import has_ipv6_loopback

pytestmark = pytest.mark.timeout(30)

SS = shutil.which("ss")


def ss(*args: str) -> str:
    assert SS is not None
    return subprocess.run(
        [SS, *args], capture_output=True, text=True, timeout=DEADLINE, check=True
    ).stdout


@pytest.mark.skipif(SS is None, reason="needs ss (iproute2)")
def test_backlog_and_keepalive_flags_reach_the_kernel(portico_serve) -> None:
    server = portico_serve(
        "upper", "--bind", "127.0.0.1:0", "--backlog", "17", "--tcp-keepalive", "300,10,4",
        "--tcp-nodelay",
    )  # fmt: skip
    host, port = server.addresses[0]
    listening = ss("-ltnH", f"sport = :{port}")
    assert re.search(r"LISTEN\s+\d+\s+17\s", listening), listening  # Send-Q: the backlog
    with socket.create_connection((host, port), timeout=DEADLINE) as client:
        assert converse_on(client, [b"x\n"]) == [b"X\n"]
        local = client.getsockname()[1]
        served = ss("-tnoH", "state", "established", f"sport = :{port}", f"dport = :{local}")
        assert "timer:(keepalive," in served, served  # the accepted socket probes
    assert server.stop() == 0


def test_abstract_unix_socket(portico_serve) -> None:
    name = f"portico-cli-{os.getpid()}"
    server = portico_serve("upper", "--unix", f"@{name}", listeners=0)
    server.wait_for(r"serving on ")
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(DEADLINE)
        client.connect("\0" + name)
        assert converse_on(client, [b"abstract\n"]) == [b"ABSTRACT\n"]
    assert server.stop() == 0


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_only_flag(portico_serve) -> None:
    server = portico_serve("upper", "--bind", "[::]:0", "--ipv6-only")
    port = server.addresses[0][1]
    assert converse(("::1", port), [b"six\n"]) == [b"SIX\n"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    assert server.stop() == 0


def test_listener_flags_are_checked(portico_run) -> None:
    result = portico_run("serve", "--tcp-keepalive", "60,10")
    assert result.returncode == 2 and "IDLE,INTERVAL,COUNT" in result.stderr
    result = portico_run("serve", "--unix-owner", "root")
    assert result.returncode == 2 and "--unix-owner needs --unix" in result.stderr
