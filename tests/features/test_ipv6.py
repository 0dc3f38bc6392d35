"""IPv6: literals pick the family, and "::" serves IPv4 clients as plain IPv4 peers.

Real sockets on loopback only (127.0.0.1 and ::1); skipped where the machine
has no IPv6 loopback.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

import portico
from portico.testing import has_ipv6_loopback, serving

TIMEOUT = 10.0


pytestmark = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1)")


class Recorder:
    """Handler classes that record the client_address each request saw."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def stream(self) -> type[portico.StreamRequestHandler]:
        seen = self.seen

        class Upper(portico.StreamRequestHandler):
            def handle(self) -> None:
                seen.append(self.client_address)
                self.wfile.write(self.rfile.readline().upper())

        return Upper

    def datagram(self) -> type[portico.DatagramRequestHandler]:
        seen = self.seen

        class Upper(portico.DatagramRequestHandler):
            def handle(self) -> None:
                seen.append(self.client_address)
                self.wfile.write(self.rfile.read().upper())

        return Upper


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    yield Recorder()


def tcp_ask(family: int, address: Any) -> tuple[bytes, Any]:
    """Send one line; return the reply and the client's own address."""
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(TIMEOUT)
        client.connect(address)
        client.sendall(b"hello\n")
        client.shutdown(socket.SHUT_WR)
        mine = client.getsockname()
        return client.makefile("rb").read(), mine


def udp_ask(family: int, address: Any, payload: bytes = b"ping") -> tuple[bytes, Any, Any]:
    """Send one datagram; return the reply, where it came from, and the client's address."""
    with socket.socket(family, socket.SOCK_DGRAM) as client:
        client.settimeout(TIMEOUT)
        client.sendto(payload, address)
        reply, source = client.recvfrom(1024)
        return reply, source, client.getsockname()


# -- an IPv6 literal is enough -------------------------------------------------


def test_tcp_server_on_ipv6_loopback_needs_no_address_family(recorder: Recorder) -> None:
    server = portico.TCPServer(("::1", 0), recorder.stream())
    assert server.address_family == socket.AF_INET6
    assert server.socket.family == socket.AF_INET6
    assert portico.TCPServer.address_family == socket.AF_INET  # the class is untouched
    host, port, _flowinfo, _scope = server.server_address
    assert (host, port != 0) == ("::1", True)
    with serving(server) as running:
        reply, mine = tcp_ask(socket.AF_INET6, ("::1", running.address[1]))
    assert reply == b"HELLO\n"
    assert recorder.seen == [mine]
    assert len(mine) == 4


def test_udp_server_on_ipv6_loopback_needs_no_address_family(recorder: Recorder) -> None:
    server = portico.UDPServer(("::1", 0), recorder.datagram())
    assert server.socket.family == socket.AF_INET6
    with serving(server) as running:
        reply, source, mine = udp_ask(socket.AF_INET6, running.address[:2])
    assert reply == b"PING"
    assert source[:2] == running.address[:2]
    # An unconnected client's own name has a wildcard host: compare the port.
    assert recorder.seen == [("::1", mine[1], 0, 0)]


def test_threading_server_on_ipv6_loopback(recorder: Recorder) -> None:
    with serving(portico.ThreadingTCPServer, recorder.stream(), ("::1", 0)) as running:
        reply, _ = tcp_ask(socket.AF_INET6, running.address[:2])
    assert reply == b"HELLO\n"


def test_explicit_address_family_still_works(recorder: Recorder) -> None:
    class V6Server(portico.TCPServer):
        address_family = socket.AF_INET6

    with serving(V6Server, recorder.stream(), ("::1", 0)) as running:
        reply, _ = tcp_ask(socket.AF_INET6, running.address[:2])
    assert reply == b"HELLO\n"


def test_ipv4_server_is_unchanged(recorder: Recorder) -> None:
    server = portico.TCPServer(("127.0.0.1", 0), recorder.stream())
    with server:
        assert server.address_family == socket.AF_INET
        assert server.socket.family == socket.AF_INET


# -- the wildcard serves both families ----------------------------------------


def test_wildcard_is_dual_stack() -> None:
    with portico.TCPServer(("::", 0), portico.BaseRequestHandler) as server:
        assert server.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0


def test_tcp_wildcard_answers_ipv4_and_ipv6_clients(recorder: Recorder) -> None:
    with serving(portico.TCPServer, recorder.stream(), ("::", 0)) as running:
        port = running.address[1]
        v4_reply, v4_client = tcp_ask(socket.AF_INET, ("127.0.0.1", port))
        v6_reply, v6_client = tcp_ask(socket.AF_INET6, ("::1", port))
    assert (v4_reply, v6_reply) == (b"HELLO\n", b"HELLO\n")
    v4_seen, v6_seen = recorder.seen
    assert v4_seen == ("127.0.0.1", v4_client[1])
    assert type(v4_seen) is tuple
    assert v6_seen == v6_client
    assert len(v6_seen) == 4
    assert v6_seen[0] == "::1"


def test_tcp_wildcard_under_handle_request(recorder: Recorder) -> None:
    with portico.TCPServer(("::", 0), recorder.stream()) as server:
        server.timeout = TIMEOUT
        port = server.server_address[1]
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            client.sendall(b"one\n")
            server.handle_request()
            assert client.makefile("rb").readline() == b"ONE\n"
            assert recorder.seen == [("127.0.0.1", client.getsockname()[1])]


def test_verify_request_sees_the_plain_address_too() -> None:
    verified: list[Any] = []

    class Checking(portico.TCPServer):
        def verify_request(self, request: Any, client_address: Any) -> bool:
            verified.append(client_address)
            return client_address[0] == "127.0.0.1"

    with serving(Checking, Recorder().stream(), ("::", 0)) as running:
        reply, mine = tcp_ask(socket.AF_INET, ("127.0.0.1", running.address[1]))
    assert reply == b"HELLO\n"
    assert verified == [("127.0.0.1", mine[1])]


def test_threading_tcp_wildcard_reports_plain_ipv4(recorder: Recorder) -> None:
    with serving(portico.ThreadingTCPServer, recorder.stream(), ("::", 0)) as running:
        reply, mine = tcp_ask(socket.AF_INET, ("127.0.0.1", running.address[1]))
    assert reply == b"HELLO\n"
    assert recorder.seen == [("127.0.0.1", mine[1])]


def test_udp_wildcard_replies_to_an_ipv4_client(recorder: Recorder) -> None:
    with serving(portico.UDPServer, recorder.datagram(), ("::", 0)) as running:
        port = running.address[1]
        reply, source, mine = udp_ask(socket.AF_INET, ("127.0.0.1", port))
    assert reply == b"PING"
    assert source == ("127.0.0.1", port)
    assert recorder.seen == [("127.0.0.1", mine[1])]
    assert type(recorder.seen[0]) is tuple


def test_udp_wildcard_replies_to_an_ipv6_client(recorder: Recorder) -> None:
    with serving(portico.UDPServer, recorder.datagram(), ("::", 0)) as running:
        reply, source, mine = udp_ask(socket.AF_INET6, ("::1", running.address[1]))
    assert reply == b"PING"
    assert source[:2] == ("::1", running.address[1])
    assert recorder.seen == [("::1", mine[1], 0, 0)]


def test_threading_udp_wildcard_replies_to_an_ipv4_client(recorder: Recorder) -> None:
    with serving(portico.ThreadingUDPServer, recorder.datagram(), ("::", 0)) as running:
        reply, _, mine = udp_ask(socket.AF_INET, ("127.0.0.1", running.address[1]))
    assert reply == b"PING"
    assert recorder.seen == [("127.0.0.1", mine[1])]


def test_udp_wildcard_reply_with_flags_and_other_methods() -> None:
    # A handler that talks to the socket directly: sendto(data, flags, address)
    # and the ordinary socket attributes work on what it is given.
    details: list[Any] = []

    class Raw(portico.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            details.append((sock.family, sock.getsockname()[1], sock.fileno() >= 0))
            sock.sendto(data.upper(), 0, self.client_address)

    with serving(portico.UDPServer, Raw, ("::", 0)) as running:
        port = running.address[1]
        reply, _, _ = udp_ask(socket.AF_INET, ("127.0.0.1", port), b"flags")
    assert reply == b"FLAGS"
    assert details == [(socket.AF_INET6, port, True)]


def test_udp_wildcard_under_handle_request(recorder: Recorder) -> None:
    with portico.UDPServer(("::", 0), recorder.datagram()) as server:
        server.timeout = TIMEOUT
        port = server.server_address[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(TIMEOUT)
            client.sendto(b"once", ("127.0.0.1", port))
            server.handle_request()
            assert client.recvfrom(1024)[0] == b"ONCE"
            assert recorder.seen == [("127.0.0.1", client.getsockname()[1])]


def test_udp_wildcard_reply_with_sendmsg() -> None:
    failures: list[BaseException] = []

    class Raw(portico.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            try:
                sock.sendmsg([data.upper()], [], 0, self.client_address)
            except OSError as exc:
                failures.append(exc)
                sock.sendto(b"failed", self.client_address)  # so the client need not wait

    with serving(portico.UDPServer, Raw, ("::", 0)) as running:
        reply, _, _ = udp_ask(socket.AF_INET, ("127.0.0.1", running.address[1]))
    assert failures == []
    assert reply == b"PING"
