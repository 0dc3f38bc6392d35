"""Per-connection time limits: first byte, idle, whole connection, minimum rate, send.

Each test plays one misbehaving client against a real server on loopback
and checks three things: the connection is closed, the log names the limit
and the peer, and the handler saw a ConnectionTimeoutError with that limit.
The slow clients pace their bytes with short sleeps: the pace is the
behaviour under test, not a way to wait for the server.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import portico
from portico.engines import AsyncStreamRequestHandler, available_engines, server_class
from portico.errors import ConnectionTimeoutError

pytestmark = pytest.mark.timeout(30)

DEADLINE = 10.0
ENGINES = [e for e in ("threads", "pool", "event", "async") if e in available_engines()]


class Fired:
    """The limits that fired, which the test can wait for (the handler records, then
    the connection closes: the client may see the close first)."""

    def __init__(self) -> None:
        self.limits: list[str] = []
        self._changed = threading.Condition()

    def append(self, limit: str) -> None:
        with self._changed:
            self.limits.append(limit)
            self._changed.notify_all()

    def wait_for(self, limit: str) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: limit in self.limits, DEADLINE):
                raise AssertionError(f"{limit} did not fire: {self.limits}")


class Recording(portico.StreamRequestHandler):
    """Upper-cases lines; "flood" answers with 64 MiB; records the limit that fired."""

    def handle(self) -> None:
        try:
            for line in self.rfile:
                if line == b"flood\n":
                    self.wfile.write(b"z" * (64 * 1024 * 1024))
                self.wfile.write(line.upper())
        except ConnectionTimeoutError as exc:
            self.server.fired.append(exc.limit)
            raise


class AsyncRecording(AsyncStreamRequestHandler):
    """Recording for the async engine: there, a reply waits for the client in drain()."""

    async def handle(self) -> None:
        try:
            async for line in self.reader:
                if line == b"flood\n":
                    self.writer.write(b"z" * (64 * 1024 * 1024))
                self.writer.write(line.upper())
                await self.writer.drain()
        except ConnectionTimeoutError as exc:
            self.server.fired.append(exc.limit)
            raise


@pytest.fixture
def serve(serving: Any) -> Any:
    def start(engine: str, **limits: Any) -> Any:
        handler = AsyncRecording if engine == "async" else Recording
        server = server_class(engine, portico.TCPServer)(("127.0.0.1", 0), handler)
        server.fired = Fired()
        for name, value in limits.items():
            setattr(server, name, value)
        return serving(server)

    return start


def closed_by_server(sock: socket.socket) -> bool:
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def wait_fired(server: Any, limit: str) -> None:
    server.fired.wait_for(limit)


class LogLine(logging.Handler):
    """Sets an event when a record containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


@contextmanager
def logged(text: str) -> Iterator[threading.Event]:
    """An event set once ``portico.server`` logs a line containing ``text``."""
    line = LogLine(text)
    logger = logging.getLogger("portico.server")
    logger.addHandler(line)
    try:
        yield line.seen
    finally:
        logger.removeHandler(line)


@pytest.mark.parametrize("engine", ENGINES)
def test_idle_and_first_byte(serve, engine: str) -> None:
    server = serve(engine, idle_timeout=0.4, first_byte_timeout=0.2)
    with logged("closed: nothing received within 0.2 s (first_byte_timeout)") as seen:
        with socket.create_connection(server.server_address, timeout=DEADLINE) as silent:
            assert closed_by_server(silent)
        wait_fired(server, "first_byte_timeout")
        assert seen.wait(DEADLINE)
    with logged("closed: idle for 0.4 s (idle_timeout)") as seen:
        with socket.create_connection(server.server_address, timeout=DEADLINE) as quiet:
            quiet.sendall(b"hello\n")
            assert quiet.makefile("rb").readline() == b"HELLO\n"
            assert closed_by_server(quiet)
        wait_fired(server, "idle_timeout")
        assert seen.wait(DEADLINE)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_slowloris_trickle_is_cut_by_the_minimum_rate(serve, engine: str) -> None:
    server = serve(engine, min_receive_rate=100, min_receive_rate_window=0.5, idle_timeout=5)
    with logged("fewer than 100 bytes per second over 0.5 s (min_receive_rate)") as seen:
        with socket.create_connection(server.server_address, timeout=DEADLINE) as slow:
            started = time.monotonic()
            try:
                for _ in range(200):  # 20 bytes a second, with no newline: far below 100
                    slow.sendall(b"x")
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert closed_by_server(slow)
            assert time.monotonic() - started < 5  # well before the idle limit
        wait_fired(server, "min_receive_rate")
        assert seen.wait(DEADLINE)
    # A client that is quick is not touched.
    with socket.create_connection(server.server_address, timeout=DEADLINE) as quick:
        quick.sendall(b"quick\n")
        assert quick.makefile("rb").readline() == b"QUICK\n"


@pytest.mark.parametrize("engine", ENGINES)
def test_the_whole_connection_deadline(serve, engine: str) -> None:
    server = serve(engine, connection_timeout=0.5)
    with socket.create_connection(server.server_address, timeout=DEADLINE) as chatty:
        replies = chatty.makefile("rb")
        try:
            for n in range(100):  # busy all along: only the deadline can end it
                chatty.sendall(b"line %d\n" % n)
                assert replies.readline() == b"LINE %d\n" % n
                time.sleep(0.02)
        except (AssertionError, OSError):
            pass
        assert closed_by_server(chatty)
    wait_fired(server, "connection_timeout")


@pytest.mark.parametrize("engine", ENGINES)
def test_a_client_that_never_reads_its_replies(serve, engine: str) -> None:
    server = serve(engine, send_timeout=0.3)
    with (
        logged("closed: did not take its replies for 0.3 s (send_timeout)") as seen,
        socket.create_connection(server.server_address, timeout=DEADLINE) as deaf,
    ):
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        deaf.sendall(b"flood\n")
        wait_fired(server, "send_timeout")
        assert seen.wait(DEADLINE)


def test_the_handlers_own_timeout_stays_a_plain_timeout(serve) -> None:
    class Own(portico.StreamRequestHandler):
        timeout = 0.2

        def handle(self) -> None:
            try:
                self.rfile.readline()
            except ConnectionTimeoutError:
                self.server.fired.append("typed")
            except TimeoutError:
                self.server.fired.append("plain")

    server = serve("threads", idle_timeout=5)
    server.RequestHandlerClass = Own
    with socket.create_connection(server.server_address, timeout=DEADLINE) as sock:
        assert closed_by_server(sock)
    wait_fired(server, "plain")
