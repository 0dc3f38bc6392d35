"""One server, several listeners: add_listener(), listeners, server_addresses.

Every listener serves, under serve_forever() and under handle_request(); a
reply goes out through the listener the request came in on; server_close()
closes every one.  Real sockets on loopback only: 127.0.0.1, 127.0.0.2 (also
loopback on Linux) and ::1 where the machine has it.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from typing import Any

import pytest

import portico
from portico.errors import AddressInUseError
from portico.testing import has_ipv6_loopback, serving

TIMEOUT = 10.0


def can_bind(family: int, host: str) -> bool:
    try:
        with socket.socket(family) as probe:
            probe.bind((host, 0))
    except OSError:
        return False
    return True


HAS_IPV6 = has_ipv6_loopback()
HAS_SECOND_LOOPBACK = can_bind(socket.AF_INET, "127.0.0.2")
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback (::1)")
needs_second_loopback = pytest.mark.skipif(
    not HAS_SECOND_LOOPBACK, reason="127.0.0.2 is not a loopback address here"
)
needs_both = pytest.mark.skipif(
    not (HAS_IPV6 and HAS_SECOND_LOOPBACK), reason="needs ::1 and 127.0.0.2"
)


class Recorder:
    """Handlers that answer, and record the client address and the local address."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, Any]] = []

    def stream(self) -> type[portico.StreamRequestHandler]:
        seen = self.seen

        class Upper(portico.StreamRequestHandler):
            def handle(self) -> None:
                seen.append((self.client_address, self.connection.getsockname()))
                self.wfile.write(self.rfile.readline().upper())

        return Upper

    def datagram(self) -> type[portico.DatagramRequestHandler]:
        seen = self.seen

        class Upper(portico.DatagramRequestHandler):
            def handle(self) -> None:
                seen.append((self.client_address, self.socket.getsockname()))
                self.wfile.write(self.rfile.read().upper())

        return Upper


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    yield Recorder()


def family_of(address: Any) -> int:
    return socket.AF_INET6 if ":" in address[0] else socket.AF_INET


def tcp_ask(address: Any, line: bytes = b"hello\n") -> bytes:
    with socket.socket(family_of(address), socket.SOCK_STREAM) as client:
        client.settimeout(TIMEOUT)
        client.connect(address[:2])
        client.sendall(line)
        client.shutdown(socket.SHUT_WR)
        return client.makefile("rb").read()


def udp_ask(address: Any, payload: bytes = b"ping") -> tuple[bytes, Any]:
    with socket.socket(family_of(address), socket.SOCK_DGRAM) as client:
        client.settimeout(TIMEOUT)
        client.sendto(payload, address[:2])
        return client.recvfrom(1024)


def three_listener_server(server_class: type[Any], handler: type[Any]) -> Any:
    server = server_class(("127.0.0.1", 0), handler)
    try:
        server.add_listener(("::1", 0))
        server.add_listener(("127.0.0.2", 0))
    except BaseException:
        server.server_close()
        raise
    return server


def assert_all_closed(sockets: list[socket.socket]) -> None:
    assert len(sockets) >= 2
    assert all(sock.fileno() == -1 for sock in sockets)


# -- the bookkeeping ----------------------------------------------------------


@needs_both
def test_listeners_and_server_addresses() -> None:
    server = three_listener_server(portico.TCPServer, portico.BaseRequestHandler)
    with server:
        listeners = server.listeners
        addresses = server.server_addresses
        assert len(listeners) == len(addresses) == 3
        assert listeners[0] is server.socket
        assert addresses[0] == server.server_address
        assert [sock.getsockname() for sock in listeners] == addresses
        v4, v6, second = addresses
        assert v4[0] == "127.0.0.1"
        assert (v6[0], len(v6)) == ("::1", 4)
        assert second[0] == "127.0.0.2"
        assert all(address[1] != 0 for address in addresses)
        assert [sock.family for sock in listeners] == [
            socket.AF_INET,
            socket.AF_INET6,
            socket.AF_INET,
        ]
        assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for sock in listeners)


def test_a_single_listener_server_lists_itself() -> None:
    with portico.TCPServer(("127.0.0.1", 0), portico.BaseRequestHandler) as server:
        assert server.listeners == [server.socket]
        assert server.server_addresses == [server.server_address]


def test_add_listener_returns_the_listening_socket() -> None:
    with portico.TCPServer(("127.0.0.1", 0), portico.BaseRequestHandler) as server:
        sock = server.add_listener(("127.0.0.1", 0))
        assert server.listeners == [server.socket, sock]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)


# -- TCP: every listener serves ------------------------------------------------


@needs_both
def test_tcp_serve_forever_serves_every_listener(recorder: Recorder) -> None:
    server = three_listener_server(portico.TCPServer, recorder.stream())
    listeners = server.listeners
    with serving(server):
        addresses = server.server_addresses
        for address in addresses:
            assert tcp_ask(address) == b"HELLO\n"
        # And again, in another order.
        for address in reversed(addresses):
            assert tcp_ask(address) == b"HELLO\n"
    local = [seen_local[:2] for _, seen_local in recorder.seen]
    assert local == [a[:2] for a in addresses] + [a[:2] for a in reversed(addresses)]
    assert_all_closed(listeners)


@needs_both
def test_tcp_handle_request_serves_every_listener(recorder: Recorder) -> None:
    server = three_listener_server(portico.TCPServer, recorder.stream())
    server.timeout = TIMEOUT
    listeners = server.listeners
    with server:
        for address in server.server_addresses:
            with socket.socket(family_of(address)) as client:
                client.settimeout(TIMEOUT)
                client.connect(address[:2])
                client.sendall(b"one\n")
                server.handle_request()
                assert client.makefile("rb").readline() == b"ONE\n"
        assert [local[:2] for _, local in recorder.seen] == [a[:2] for a in server.server_addresses]
    assert_all_closed(listeners)


@needs_both
def test_tcp_handle_request_with_every_listener_waiting(recorder: Recorder) -> None:
    server = three_listener_server(portico.TCPServer, recorder.stream())
    server.timeout = TIMEOUT
    with server:
        addresses = server.server_addresses
        clients = []
        try:
            for address in addresses:
                client = socket.socket(family_of(address))
                clients.append(client)
                client.settimeout(TIMEOUT)
                client.connect(address[:2])
                client.sendall(b"queued\n")
            for _ in addresses:
                server.handle_request()
            for client in clients:
                assert client.makefile("rb").readline() == b"QUEUED\n"
        finally:
            for client in clients:
                client.close()
        assert sorted(local[:2] for _, local in recorder.seen) == sorted(a[:2] for a in addresses)


@needs_ipv6
def test_ipv6_listener_reports_ipv6_peers_and_ipv4_reports_ipv4(recorder: Recorder) -> None:
    server = portico.TCPServer(("127.0.0.1", 0), recorder.stream())
    server.add_listener(("::1", 0))
    with serving(server):
        v4, v6 = server.server_addresses
        assert tcp_ask(v4) == b"HELLO\n"
        assert tcp_ask(v6) == b"HELLO\n"
    (v4_peer, _), (v6_peer, _) = recorder.seen
    assert (v4_peer[0], len(v4_peer)) == ("127.0.0.1", 2)
    assert (v6_peer[0], len(v6_peer)) == ("::1", 4)


@needs_ipv6
def test_ipv6_server_with_an_ipv4_listener(recorder: Recorder) -> None:
    server = portico.TCPServer(("::1", 0), recorder.stream())
    extra = server.add_listener(("127.0.0.1", 0))
    assert extra.family == socket.AF_INET
    with serving(server):
        for address in server.server_addresses:
            assert tcp_ask(address) == b"HELLO\n"


@needs_second_loopback
def test_threading_server_serves_every_listener(recorder: Recorder) -> None:
    server = portico.ThreadingTCPServer(("127.0.0.1", 0), recorder.stream())
    server.add_listener(("127.0.0.2", 0))
    server.add_listener(("127.0.0.1", 0))
    listeners = server.listeners
    with serving(server):
        for address in server.server_addresses:
            assert tcp_ask(address) == b"HELLO\n"
    assert len(recorder.seen) == 3
    assert_all_closed(listeners)


@needs_second_loopback
def test_shutdown_is_prompt_with_several_listeners() -> None:
    server = portico.TCPServer(("127.0.0.1", 0), portico.BaseRequestHandler)
    server.add_listener(("127.0.0.2", 0))
    listeners = server.listeners
    # A poll interval far beyond the test timeout: only the wake-up can end the loop.
    with serving(server, poll_interval=3600):
        pass
    assert_all_closed(listeners)


# -- pre-bound sockets ----------------------------------------------------------


def test_add_listener_with_a_prebound_tcp_socket(recorder: Recorder) -> None:
    prebound = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    prebound.bind(("127.0.0.1", 0))
    prebound.listen()
    server = portico.TCPServer(("127.0.0.1", 0), recorder.stream())
    assert server.add_listener(prebound) is prebound
    assert server.listeners == [server.socket, prebound]
    assert server.server_addresses[1] == prebound.getsockname()
    with serving(server):
        assert tcp_ask(prebound.getsockname()) == b"HELLO\n"
        assert tcp_ask(server.server_address) == b"HELLO\n"
    assert prebound.fileno() == -1


def test_add_listener_with_a_prebound_udp_socket(recorder: Recorder) -> None:
    prebound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    prebound.bind(("127.0.0.1", 0))
    server = portico.UDPServer(("127.0.0.1", 0), recorder.datagram())
    server.add_listener(prebound)
    with serving(server):
        reply, source = udp_ask(prebound.getsockname())
        assert (reply, source) == (b"PING", prebound.getsockname())
    assert prebound.fileno() == -1


# -- add_listener failures -----------------------------------------------------


def test_add_listener_on_a_busy_port_raises_and_changes_nothing() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with portico.TCPServer(("127.0.0.1", 0), portico.BaseRequestHandler) as server:
            with pytest.raises(AddressInUseError) as info:
                server.add_listener(holder.getsockname())
            assert info.value.errno == errno.EADDRINUSE
            assert isinstance(info.value, OSError)
            assert server.listeners == [server.socket]
            assert server.server_addresses == [server.server_address]


def test_extra_listener_uses_the_server_settings() -> None:
    class Reusing(portico.TCPServer):
        allow_reuse_address = True

    with Reusing(("127.0.0.1", 0), portico.BaseRequestHandler) as server:
        extra = server.add_listener(("127.0.0.1", 0))
        assert extra.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert extra.type == socket.SOCK_STREAM


# -- UDP: every listener answers, from its own address ----------------------------


@needs_both
def test_udp_serve_forever_serves_every_listener(recorder: Recorder) -> None:
    server = three_listener_server(portico.UDPServer, recorder.datagram())
    listeners = server.listeners
    assert [sock.type for sock in listeners] == [socket.SOCK_DGRAM] * 3
    with serving(server):
        addresses = server.server_addresses
        for address in addresses:
            reply, source = udp_ask(address)
            assert reply == b"PING"
            # The reply comes from the address the client wrote to.
            assert source[:2] == address[:2]
    assert [local[:2] for _, local in recorder.seen] == [a[:2] for a in addresses]
    assert_all_closed(listeners)


@needs_both
def test_udp_handle_request_serves_every_listener(recorder: Recorder) -> None:
    server = three_listener_server(portico.UDPServer, recorder.datagram())
    server.timeout = TIMEOUT
    listeners = server.listeners
    with server:
        for address in server.server_addresses:
            with socket.socket(family_of(address), socket.SOCK_DGRAM) as client:
                client.settimeout(TIMEOUT)
                client.sendto(b"once", address[:2])
                server.handle_request()
                reply, source = client.recvfrom(1024)
                assert (reply, source[:2]) == (b"ONCE", address[:2])
    assert len(recorder.seen) == 3
    assert_all_closed(listeners)


@needs_second_loopback
def test_threading_udp_serves_every_listener(recorder: Recorder) -> None:
    server = portico.ThreadingUDPServer(("127.0.0.1", 0), recorder.datagram())
    server.add_listener(("127.0.0.2", 0))
    with serving(server):
        for address in server.server_addresses:
            assert udp_ask(address) == (b"PING", address)


@needs_ipv6
def test_udp_extra_wildcard_listener_reports_plain_ipv4(recorder: Recorder) -> None:
    server = portico.UDPServer(("127.0.0.1", 0), recorder.datagram())
    wildcard = server.add_listener(("::", 0))
    port = wildcard.getsockname()[1]
    with serving(server):
        reply, source = udp_ask(("127.0.0.1", port))
    assert (reply, source) == (b"PING", ("127.0.0.1", port))
    [(client_address, _)] = recorder.seen
    assert (client_address[0], len(client_address)) == ("127.0.0.1", 2)
