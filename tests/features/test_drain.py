"""drain(): listeners closed first, requests in flight finish, the deadline forces the rest.

Each engine that runs in this process: a server serving in a thread, a client
in the middle of a conversation when ``drain()`` starts (in another thread,
as a supervisor or a signal's consequence would call it).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import portico
from portico.engines import AsyncStreamRequestHandler, server_class
from portico.server.base import ServerState

pytestmark = pytest.mark.timeout(30)

DEADLINE = 10.0
ENGINES = ["serial", "threads", "pool", "event", "async"]


class Lines(portico.StreamRequestHandler):
    """Answers each line upper-cased, followed by whether the server is draining."""

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper().rstrip() + b" %d\n" % self.server.draining)


class AsyncLines(AsyncStreamRequestHandler):
    async def handle(self) -> None:
        async for line in self.reader:
            self.writer.write(line.upper().rstrip() + b" %d\n" % self.server.draining)


class Instrumented:
    """Tells the test the moment the listeners are closed."""

    listeners_closed: threading.Event

    def _portico_close_listeners(self) -> None:
        super()._portico_close_listeners()  # type: ignore[misc]
        self.listeners_closed.set()


def make(engine: str) -> Any:
    base = type("Instrumented", (Instrumented, portico.TCPServer), {})
    handler = AsyncLines if engine == "async" else Lines
    server = server_class(engine, base)(("127.0.0.1", 0), handler)
    server.listeners_closed = threading.Event()
    return server


@pytest.fixture(params=ENGINES)
def served(request: pytest.FixtureRequest) -> Iterator[Any]:
    server = make(request.param)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        if server.state is not ServerState.CLOSED:
            server.shutdown()
            server.server_close()
        thread.join(DEADLINE)
        assert not thread.is_alive()


def ask(sock: socket.socket, reader: Any, line: bytes) -> bytes:
    sock.sendall(line)
    answer: bytes = reader.readline()
    return answer


def start_drain(server: Any, timeout: float | None) -> tuple[threading.Thread, list[bool]]:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(server.drain(timeout)))
    thread.start()
    return thread, result


def test_requests_in_flight_finish_and_new_connections_are_refused(served: Any) -> None:
    with socket.create_connection(served.server_address, timeout=DEADLINE) as sock:
        reader = sock.makefile("rb")
        assert ask(sock, reader, b"before\n") == b"BEFORE 0\n"
        drainer, result = start_drain(served, DEADLINE)
        assert served.listeners_closed.wait(DEADLINE)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(served.server_address, timeout=DEADLINE).close()
        # The conversation under way goes on, and its handler sees the drain.
        assert ask(sock, reader, b"during\n") == b"DURING 1\n"
        assert drainer.is_alive()  # it waits for this connection
        reader.close()
    drainer.join(DEADLINE)
    assert result == [True]
    assert served.state is ServerState.CLOSED


def test_the_deadline_closes_what_is_left(served: Any) -> None:
    with socket.create_connection(served.server_address, timeout=DEADLINE) as sock:
        reader = sock.makefile("rb")
        assert ask(sock, reader, b"idle next\n") == b"IDLE NEXT 0\n"
        started = time.monotonic()
        drainer, result = start_drain(served, 0.3)
        drainer.join(DEADLINE)
        assert result == [False]
        assert 0.3 <= time.monotonic() - started < 5
        assert reader.read() == b""  # the server closed the connection
        reader.close()
    assert served.state is ServerState.CLOSED


def test_drain_without_requests_is_immediate_and_idempotent(served: Any) -> None:
    assert served.drain(DEADLINE) is True
    assert served.state is ServerState.CLOSED
    assert served.drain(DEADLINE) is True


@pytest.mark.parametrize("engine", ENGINES)
def test_connections_queued_when_the_loop_stopped_are_served_not_reset(engine: str) -> None:
    """drain() after serve_forever() returned (as ``portico serve`` does): nobody accepted
    the queued clients yet, and closing the listener would reset them."""
    server = make(engine)
    address = server.server_address
    queued = [socket.create_connection(address, timeout=DEADLINE) for _ in range(3)]
    try:
        for number, sock in enumerate(queued):
            sock.sendall(b"queued %d\n" % number)
            sock.shutdown(socket.SHUT_WR)  # one line, then the handler sees end of file
        assert server.drain(DEADLINE)
        for number, sock in enumerate(queued):
            with sock.makefile("rb") as reader:
                assert reader.read() == b"QUEUED %d 1\n" % number
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=DEADLINE)
    finally:
        for sock in queued:
            sock.close()
