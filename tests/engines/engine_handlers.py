"""The handlers the engine conformance suite serves, importable in-process and by engine_server."""

from __future__ import annotations

import portico
from portico.engines import AsyncDatagramRequestHandler, AsyncStreamRequestHandler

BOOM = b"boom\n"


class UpperLines(portico.StreamRequestHandler):
    """Answers each line upper-cased until EOF; the line ``boom`` raises ZeroDivisionError."""

    def handle(self) -> None:
        for line in self.rfile:
            if line == BOOM:
                raise ZeroDivisionError("handler failure on purpose")
            self.wfile.write(line.upper())


class UpperDatagrams(portico.DatagramRequestHandler):
    """Answers each datagram upper-cased; the datagram ``boom`` raises ZeroDivisionError."""

    def handle(self) -> None:
        if self.packet == BOOM:
            raise ZeroDivisionError("handler failure on purpose")
        self.wfile.write(self.packet.upper())


HANDLERS = {"stream": UpperLines, "datagram": UpperDatagrams}


class AsyncUpperLines(AsyncStreamRequestHandler):
    """UpperLines for the async engine."""

    max_line_length = None  # as the stdlib-style UpperLines: the 1 MiB line test

    async def handle(self) -> None:
        async for line in self.reader:
            if line == BOOM:
                raise ZeroDivisionError("handler failure on purpose")
            self.writer.write(line.upper())


class AsyncUpperDatagrams(AsyncDatagramRequestHandler):
    """UpperDatagrams for the async engine."""

    async def handle(self) -> None:
        if self.packet == BOOM:
            raise ZeroDivisionError("handler failure on purpose")
        self.wfile.write(self.packet.upper())


ASYNC_HANDLERS = {"stream": AsyncUpperLines, "datagram": AsyncUpperDatagrams}
ASYNC_ENGINES = frozenset({"async"})


def handlers_for(engine: str) -> dict[str, type]:
    """The conformance handlers that ``engine`` runs."""
    return ASYNC_HANDLERS if engine in ASYNC_ENGINES else HANDLERS
