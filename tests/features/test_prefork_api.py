"""The Supervisor API with stdlib-style server classes: UDP, and a Unix-socket subclass.

Each program runs in a subprocess (a prefork master must own its process:
it forks and handles signals), serves from two workers, and stops with
exit status 0 on SIGTERM.
"""

from __future__ import annotations

import ast
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path

import pytest

from portico.testing import ServerProcess

pytestmark = pytest.mark.timeout(30)

PROGRAM = Path(__file__).with_name("prefork_api_server.py")
DEADLINE = 5.0
SERVING = r"portico\.prefork: master pid \d+: 2 workers serving"


def start(kind: str, path: str = "") -> tuple[ServerProcess, object]:
    process = ServerProcess(
        [sys.executable, str(PROGRAM), kind, path], stream="stdout", timeout=DEADLINE
    )
    try:
        line = process.wait_for(r"^ready (.+)$")[0]
        return process, ast.literal_eval(line.group(1))
    except BaseException:
        process.close()  # a failed start must not leave a master and its workers behind
        raise


def workers_of(process: ServerProcess) -> list[int]:
    """The master's children (Linux's /proc)."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    return [int(pid) for pid in children.read_text().split()]


def test_a_threading_udp_server_is_served_by_two_workers() -> None:
    process, address = start("udp")
    with process, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(DEADLINE)
        pids = set()
        for n in range(20):
            client.sendto(b"datagram %d" % n, address)
            reply, _ = client.recvfrom(1024)
            pid, _, text = reply.partition(b" ")
            assert text == b"DATAGRAM %d" % n
            pids.add(int(pid))
        assert process.pid not in pids
        assert pids <= set(workers_of(process))  # served by the master's children
        assert process.stop(signal.SIGTERM) == 0


def test_a_unix_server_subclass_with_worker_init() -> None:
    with tempfile.TemporaryDirectory(prefix="portico-") as directory:
        path = os.path.join(directory, "api.sock")
        process, address = start("unix", path)
        with process:
            assert address == path
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(DEADLINE)
                client.connect(path)
                client.sendall(b"hello\n")
                pid, booted_in, text = client.makefile("rb").readline().split(b" ", 2)
            assert text == b"HELLO\n" and pid == booted_in  # worker_init ran in that worker
            assert process.stop(signal.SIGTERM) == 0
        assert not os.path.exists(path)  # the master bound it and removed it
