"""Listener settings: TCP_NODELAY and keep-alive on accepted connections, IPv6-only,
Unix socket owner and group, abstract Unix names, SO_REUSEPORT; and their CLI flags."""

from __future__ import annotations

import grp
import os
import socket
from typing import Any

import pytest

import portico
from portico.net.listeners import TCPKeepalive
from portico.testing import has_ipv6_loopback

pytestmark = pytest.mark.timeout(30)

DEADLINE = 10.0


class Options(portico.StreamRequestHandler):
    """Answers with the TCP options of the accepted connection, as the server sees them."""

    def handle(self) -> None:
        sock = self.connection
        values = [
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        ]
        self.wfile.write(b" ".join(b"%d" % value for value in values) + b"\n")


@pytest.fixture
def serve(serving: Any) -> Any:
    return serving


def options_seen(address: Any) -> list[int]:
    with socket.create_connection(address, timeout=DEADLINE) as sock:
        return [int(value) for value in sock.makefile("rb").readline().split()]


def test_nodelay_and_keepalive_reach_every_accepted_connection(serve) -> None:
    server = portico.ThreadingTCPServer(("127.0.0.1", 0), Options, bind_and_activate=False)
    server.tcp_nodelay = True
    server.tcp_keepalive = TCPKeepalive(idle=42, interval=7, count=3)
    server.server_bind()
    server.server_activate()
    extra = server.add_listener(("127.0.0.1", 0))
    serve(server)
    for address in (server.server_address, extra.getsockname()):
        assert options_seen(address) == [1, 1, 42, 7, 3]


def test_defaults_leave_the_system_defaults(serve) -> None:
    server = serve(portico.ThreadingTCPServer(("127.0.0.1", 0), Options))
    nodelay, keepalive, *_ = options_seen(server.server_address)
    assert (nodelay, keepalive) == (0, 0)


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_only_leaves_ipv4_to_another_listener() -> None:
    dual = portico.TCPServer(("::", 0), portico.StreamRequestHandler)
    with dual:
        assert not dual.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    # An IPv4 listener holds the port first (a port picked for IPv6 alone could be taken on
    # IPv4 by another process meanwhile): an IPv6-only server binds it too, a dual one cannot.
    with socket.create_server(("127.0.0.1", 0)) as ipv4:
        port = ipv4.getsockname()[1]
        with pytest.raises(OSError):
            portico.TCPServer(("::", port), portico.StreamRequestHandler)
        only = portico.TCPServer(
            ("::", port), portico.StreamRequestHandler, bind_and_activate=False
        )
        only.ipv6_only = True
        with only:
            only.server_bind()
            only.server_activate()
            assert only.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            assert only.server_address[1] == port


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's group to another needs root")
def test_unix_socket_owner_group_and_mode(tmp_path) -> None:
    group = grp.getgrnam("nogroup" if _has_group("nogroup") else "daemon")
    path = str(tmp_path / "owned.sock")
    server = portico.UnixStreamServer(path, portico.StreamRequestHandler, bind_and_activate=False)
    server.unix_socket_group = group.gr_name
    server.unix_socket_mode = 0o660
    with server:
        server.server_bind()
        info = os.stat(path)
        assert info.st_gid == group.gr_gid and info.st_mode & 0o777 == 0o660


def test_an_unknown_unix_group_is_a_clear_error(tmp_path) -> None:
    path = str(tmp_path / "bad.sock")
    server = portico.UnixStreamServer(path, portico.StreamRequestHandler, bind_and_activate=False)
    server.unix_socket_group = "no-such-group-portico"
    with server, pytest.raises(OSError, match="cannot set the owner or mode"):
        server.server_bind()
    assert not os.path.exists(path)  # nothing left behind


def _has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


class Upper(portico.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


def test_abstract_unix_names_need_no_file(serve) -> None:
    name = f"\0portico-test-{os.getpid()}"
    server = serve(portico.ThreadingUnixStreamServer(name, Upper))
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(DEADLINE)
        client.connect(name)
        client.sendall(b"abstract\n")
        assert client.makefile("rb").readline() == b"ABSTRACT\n"
    assert server.server_address in (name, name.encode())
