"""max_line_length: rfile lines are bounded, a longer one is a typed error and one log line.

A client that sends a line without end (here 16 MiB of "x") makes the handler's
readline() raise LineTooLongError after reading at most max_line_length + 1
bytes: the connection is closed, the log says which limit and which peer, and
the other clients go on being served.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest

import portico
from portico.engines import AsyncStreamRequestHandler, available_engines, server_class
from portico.errors import LineTooLongError

pytestmark = pytest.mark.timeout(30)

DEADLINE = 10.0
ENGINES = [e for e in ("serial", "threads", "pool", "event", "async") if e in available_engines()]


class Upper(portico.StreamRequestHandler):
    max_line_length = 100

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


class AsyncUpper(AsyncStreamRequestHandler):
    max_line_length = 100

    async def handle(self) -> None:
        async for line in self.reader:
            self.writer.write(line.upper())


@pytest.fixture
def serve(serving: Any) -> Any:
    def start(engine: str, handler: type | None = None) -> Any:
        if handler is None:
            handler = AsyncUpper if engine == "async" else Upper
        return serving(server_class(engine, portico.TCPServer)(("127.0.0.1", 0), handler))

    return start


def converse(address: Any, lines: list[bytes]) -> list[bytes]:
    with socket.create_connection(address, timeout=DEADLINE) as sock:
        replies = sock.makefile("rb")
        answers = []
        for line in lines:
            sock.sendall(line)
            answers.append(replies.readline())
        return answers


def flood(address: Any, size: int) -> bytes:
    """Send ``size`` bytes without a newline; what the server answered before closing."""
    with socket.create_connection(address, timeout=DEADLINE) as sock:
        try:
            sock.sendall(b"x" * size)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed while we were still sending: as it should
        try:
            return sock.recv(100)
        except ConnectionResetError:
            return b""


@pytest.mark.parametrize("engine", ENGINES)
def test_a_line_without_end_is_cut_short_and_others_are_served(serve, engine, caplog) -> None:
    server = serve(engine)
    exact = b"y" * 99 + b"\n"  # 100 bytes with its newline: the most allowed
    assert converse(server.server_address, [exact]) == [exact.upper()]
    with caplog.at_level(logging.WARNING, logger="portico.server"):
        assert flood(server.server_address, 16 * 1024 * 1024) == b""
        assert converse(server.server_address, [b"after\n"]) == [b"AFTER\n"]
    assert "closed: a line longer than 100 bytes (max_line_length)" in caplog.text
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("engine", ENGINES)
def test_a_long_line_that_arrives_whole_is_refused_too(serve, engine: str) -> None:
    server = serve(engine)
    assert converse(server.server_address, [b"a" * 300 + b"\n"]) == [b""]
    assert converse(server.server_address, [b"fine\n"]) == [b"FINE\n"]


def test_the_async_handlers_lines_are_bounded_by_default() -> None:
    assert AsyncStreamRequestHandler.max_line_length == 65536


def test_readline_with_a_size_keeps_the_stdlib_meaning(serve) -> None:
    class Sized(portico.StreamRequestHandler):
        max_line_length = 10

        def handle(self) -> None:
            self.wfile.write(self.rfile.readline(50))

    server = serve("threads", Sized)
    assert converse(server.server_address, [b"a" * 30 + b"\n"]) == [b"a" * 30 + b"\n"]


def test_without_a_limit_lines_are_unbounded_as_in_the_stdlib(serve) -> None:
    class Unbounded(portico.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(b"%d\n" % len(self.rfile.readline()))

    assert Unbounded.max_line_length is None
    server = serve("threads", Unbounded)
    assert converse(server.server_address, [b"z" * 200_000 + b"\n"]) == [b"200001\n"]


def test_the_error_is_typed() -> None:
    error = LineTooLongError(64)
    assert isinstance(error, ValueError) and error.limit == "max_line_length"
    assert error.maximum == 64 and "64 bytes" in str(error)
