"""The listen backlog: the system maximum by default, request_queue_size when set.

The kernel's own view is the proof: for a listening socket, ``ss`` reports
the backlog it was granted in the Send-Q column.  The measuring method is
checked first on a plain socket given listen(5); where ``ss`` is missing or
cannot see this process's sockets, these tests are skipped with the reason.
"""

from __future__ import annotations

import shutil
import socket
import socketserver
import subprocess
from pathlib import Path
from typing import Any

import pytest

import portico
from portico.net.listeners import open_listener, system_max_backlog
from portico.testing import has_ipv6_loopback, serving

TIMEOUT = 10.0
SS = shutil.which("ss")


def ss_lines(args: list[str]) -> list[list[str]]:
    assert SS is not None
    result = subprocess.run(
        [SS, "-Hn", *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    if result.returncode != 0:
        pytest.skip(f"ss failed: {result.stderr.strip()}")
    return [line.split() for line in result.stdout.splitlines() if line.strip()]


def tcp_backlog(sock: socket.socket) -> int:
    """The backlog the kernel granted a listening TCP socket, as ``ss -lt`` shows it."""
    host, port = sock.getsockname()[:2]
    wanted = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    # Columns without -H headers and Netid: State Recv-Q Send-Q Local Peer
    rows = [row for row in ss_lines(["-lt", f"sport = :{port}"]) if row[3] == wanted]
    assert len(rows) == 1, f"ss shows {rows!r} for {wanted}"
    return int(rows[0][2])


def unix_backlog(path: str) -> int:
    """The backlog of a listening Unix stream socket, as ``ss -lx`` shows it."""
    # Columns: Netid State Recv-Q Send-Q Local Port Peer Port
    rows = [row for row in ss_lines(["-lx"]) if row[4] == path]
    assert len(rows) == 1, f"ss shows {rows!r} for {path}"
    return int(rows[0][3])


def check_ss_measures_backlogs() -> None:
    if SS is None:
        pytest.skip("the ss utility (iproute2) is not installed")
    with socket.socket() as control:
        control.bind(("127.0.0.1", 0))
        control.listen(5)
        port = control.getsockname()[1]
        rows = [row for row in ss_lines(["-lt", f"sport = :{port}"]) if row]
        if not rows:
            pytest.skip("ss cannot see this process's sockets")
        assert tcp_backlog(control) == 5


@pytest.fixture(autouse=True)
def _ss_works() -> None:
    check_ss_measures_backlogs()


class SmallQueue(portico.TCPServer):
    request_queue_size = 5


# -- the default is the system maximum ----------------------------------------


def test_stdlib_server_gets_five_for_comparison() -> None:
    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as server:
        assert tcp_backlog(server.socket) == 5


def test_tcp_server_gets_the_system_maximum() -> None:
    with portico.TCPServer(("127.0.0.1", 0), portico.BaseRequestHandler) as server:
        assert tcp_backlog(server.socket) == system_max_backlog()


def test_threading_server_gets_the_system_maximum() -> None:
    with portico.ThreadingTCPServer(("127.0.0.1", 0), portico.BaseRequestHandler) as server:
        assert tcp_backlog(server.socket) == system_max_backlog()


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1)")
def test_ipv6_server_gets_the_system_maximum() -> None:
    with portico.TCPServer(("::1", 0), portico.BaseRequestHandler) as server:
        assert tcp_backlog(server.socket) == system_max_backlog()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
def test_unix_stream_server_gets_the_system_maximum(tmp_path: Path) -> None:
    path = str(tmp_path / "backlog.sock")
    with portico.UnixStreamServer(path, portico.BaseRequestHandler):
        assert unix_backlog(path) == system_max_backlog()


def test_open_listener_defaults_to_the_system_maximum() -> None:
    sock, _ = open_listener(("127.0.0.1", 0), family=socket.AF_INET)
    with sock:
        assert tcp_backlog(sock) == system_max_backlog()


# -- request_queue_size is honoured ---------------------------------------------


def test_subclass_request_queue_size() -> None:
    with SmallQueue(("127.0.0.1", 0), portico.BaseRequestHandler) as server:
        assert tcp_backlog(server.socket) == 5


def test_instance_request_queue_size_before_activation() -> None:
    server = portico.TCPServer(
        ("127.0.0.1", 0), portico.BaseRequestHandler, bind_and_activate=False
    )
    with server:
        server.request_queue_size = 7
        server.server_bind()
        server.server_activate()
        assert tcp_backlog(server.socket) == 7


def test_extra_listeners_get_the_same_backlog() -> None:
    with SmallQueue(("127.0.0.1", 0), portico.BaseRequestHandler) as small:
        assert tcp_backlog(small.add_listener(("127.0.0.1", 0))) == 5
    with portico.TCPServer(("127.0.0.1", 0), portico.BaseRequestHandler) as default:
        assert tcp_backlog(default.add_listener(("127.0.0.1", 0))) == system_max_backlog()


def test_open_listener_explicit_backlog() -> None:
    sock, _ = open_listener(("127.0.0.1", 0), family=socket.AF_INET, backlog=5)
    with sock:
        assert tcp_backlog(sock) == 5


def test_a_larger_request_is_clamped_by_the_kernel() -> None:
    class Huge(portico.TCPServer):
        request_queue_size = system_max_backlog() + 1000

    with Huge(("127.0.0.1", 0), portico.BaseRequestHandler) as server:
        assert tcp_backlog(server.socket) == system_max_backlog()


# -- and it absorbs a burst -------------------------------------------------------

BURST = 64


class Upper(portico.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())


@pytest.mark.skipif(system_max_backlog() <= BURST, reason="the system backlog is too small")
def test_a_burst_queues_in_the_backlog_until_served() -> None:
    # Every client connects and sends before the server accepts anything; with
    # the stdlib's backlog of 5 the later connects would wait for SYN retries.
    server: Any = portico.TCPServer(("127.0.0.1", 0), Upper)
    clients: list[socket.socket] = []
    try:
        for number in range(BURST):
            client = socket.create_connection(server.server_address, timeout=TIMEOUT)
            clients.append(client)
            client.sendall(b"client %d\n" % number)
        with serving(server):
            for number, client in enumerate(clients):
                assert client.makefile("rb").readline() == b"CLIENT %d\n" % number
    finally:
        for client in clients:
            client.close()
        server.server_close()
