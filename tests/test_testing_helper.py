"""portico.testing.serving(): serve in a thread, hand back the address, always clean up."""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import Any

import pytest

import portico
from portico.testing import RunningServer, serving

TIMEOUT = 10.0


class Upper(portico.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())


class StdlibUpper(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())


def ask(address: Any, line: bytes = b"hello\n") -> bytes:
    with socket.create_connection(address, timeout=TIMEOUT) as client:
        client.sendall(line)
        client.shutdown(socket.SHUT_WR)
        return client.makefile("rb").read()


def assert_stopped_and_closed(running: RunningServer) -> None:
    assert not running.thread.is_alive()
    assert running.server.socket.fileno() == -1


def test_builds_the_server_and_gives_its_address() -> None:
    with serving(portico.TCPServer, Upper) as running:
        host, port = running.address
        assert host == "127.0.0.1"
        assert port != 0
        assert running.address == running.server.server_address
        assert isinstance(running.server, portico.TCPServer)
        assert ask(running.address) == b"HELLO\n"
    assert_stopped_and_closed(running)


def test_serves_an_instance() -> None:
    server = portico.TCPServer(("127.0.0.1", 0), Upper)
    with serving(server) as running:
        assert running.server is server
        assert ask(running.address) == b"HELLO\n"
    assert_stopped_and_closed(running)


def test_builds_on_the_given_address() -> None:
    with serving(portico.TCPServer, Upper, ("127.0.0.2", 0)) as running:
        assert running.address[0] == "127.0.0.2"
        assert ask(running.address) == b"HELLO\n"


def test_returns_only_once_the_loop_serves() -> None:
    with serving(portico.TCPServer, Upper) as running:
        assert running.thread.is_alive()
        # The loop's own flag, set just before its first select().
        assert running.server._portico_serving.is_set()


class GatedServer(portico.TCPServer):
    """A server whose serve_forever() does not start its loop until shutdown()."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.gate = threading.Event()

    def serve_forever(self, poll_interval: float | None = 0.5) -> None:
        self.gate.wait(TIMEOUT)
        super().serve_forever(poll_interval)

    def shutdown(self) -> None:
        super().shutdown()  # no loop yet: returns at once, and the loop will not start
        self.gate.set()


def test_a_loop_that_never_starts_times_out_and_is_cleaned_up() -> None:
    # Proves serving() waits for the loop itself, not merely for the thread.
    server = GatedServer(("127.0.0.1", 0), Upper)
    body_ran = False
    with (
        pytest.raises(TimeoutError, match="did not start serving"),
        serving(server, ready_timeout=0.2),
    ):
        body_ran = True
    assert not body_ran
    assert server.socket.fileno() == -1


def test_shuts_down_and_closes_when_the_body_raises() -> None:
    class BodyError(Exception):
        pass

    with pytest.raises(BodyError), serving(portico.TCPServer, Upper) as running:
        assert ask(running.address) == b"HELLO\n"
        raise BodyError
    assert_stopped_and_closed(running)
    assert running.errors == []


def test_shuts_down_on_keyboard_interrupt_in_the_body() -> None:
    with pytest.raises(KeyboardInterrupt), serving(portico.TCPServer, Upper) as running:
        raise KeyboardInterrupt
    assert_stopped_and_closed(running)


class LoopError(RuntimeError):
    pass


class DyingServer(portico.TCPServer):
    """Its serving loop dies with LoopError on the first request."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.died = threading.Event()

    def process_request(self, request: Any, client_address: Any) -> None:
        self.shutdown_request(request)
        self.died.set()

    def service_actions(self) -> None:
        if self.died.is_set():
            raise LoopError("the loop died")


def test_reraises_the_error_the_loop_died_with() -> None:
    with (
        pytest.raises(LoopError, match="the loop died"),
        serving(DyingServer, portico.BaseRequestHandler) as running,
    ):
        socket.create_connection(running.address, timeout=TIMEOUT).close()
        running.thread.join(TIMEOUT)
        assert not running.thread.is_alive()
        assert [type(e) for e in running.errors] == [LoopError]
    assert running.server.socket.fileno() == -1


class BrokenServer(portico.TCPServer):
    def serve_forever(self, poll_interval: float | None = 0.5) -> None:
        raise LoopError("could not even start")


def test_a_loop_that_dies_before_serving_is_reported() -> None:
    server = BrokenServer(("127.0.0.1", 0), Upper)
    body_ran = False
    with pytest.raises(LoopError, match="could not even start") as info, serving(server):
        body_ran = True
    assert not body_ran
    # The helper's own complaint is kept as the context.
    assert "ended before serving" in str(info.value.__context__)
    assert server.socket.fileno() == -1


def test_serves_a_stdlib_server_too() -> None:
    with serving(socketserver.TCPServer, StdlibUpper, poll_interval=0.05) as running:
        assert ask(running.address) == b"HELLO\n"
    assert_stopped_and_closed(running)


def test_serves_a_udp_server() -> None:
    class Echo(portico.DatagramRequestHandler):
        def handle(self) -> None:
            self.wfile.write(self.rfile.read().upper())

    with (
        serving(portico.UDPServer, Echo) as running,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        client.settimeout(TIMEOUT)
        client.sendto(b"ping", running.address)
        assert client.recvfrom(100)[0] == b"PING"
    assert_stopped_and_closed(running)


def test_a_server_shut_down_inside_the_body_is_fine() -> None:
    with serving(portico.TCPServer, Upper) as running:
        running.server.shutdown()
        running.thread.join(TIMEOUT)
        assert not running.thread.is_alive()
    assert_stopped_and_closed(running)
