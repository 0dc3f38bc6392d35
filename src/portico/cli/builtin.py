"""The built-in handlers of ``portico serve``: ``upper``, ``echo`` and ``discard``.

Each comes in two variants and the transport picks one: a stream handler
(TCP, Unix stream) that answers line by line for as long as the client keeps
the connection open, and a datagram handler (UDP, Unix datagram) that answers
each datagram on its own.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from portico.server.handlers import (
    BaseRequestHandler,
    DatagramRequestHandler,
    StreamRequestHandler,
)

if TYPE_CHECKING:
    from portico.engines.aio_handlers import AsyncBaseRequestHandler

__all__ = [
    "BUILTINS",
    "DEFAULT_HANDLER",
    "Builtin",
    "DiscardDatagramHandler",
    "DiscardStreamHandler",
    "EchoDatagramHandler",
    "EchoStreamHandler",
    "UpperDatagramHandler",
    "UpperStreamHandler",
]

# A line longer than this is answered in pieces, so memory stays bounded.
MAX_LINE = 64 * 1024


class AnswerStreamHandler(StreamRequestHandler):
    """Answer each line with ``answer(line)`` until the client closes."""

    def handle(self) -> None:
        readline, write, answer = self.rfile.readline, self.wfile.write, self.answer
        # With max_line_length (portico serve's default), a longer line is an error that
        # closes the connection; without it, a long line is answered in pieces.
        size = -1 if self.max_line_length is not None else MAX_LINE
        try:
            while line := readline(size):
                write(answer(line))
        except ConnectionError:
            pass  # the client went away: that ends the conversation, it is not a server error

    def answer(self, line: bytes) -> bytes:
        return line


class AnswerDatagramHandler(DatagramRequestHandler):
    """Answer each datagram with ``answer(packet)``."""

    def handle(self) -> None:
        self.wfile.write(self.answer(self.packet))

    def answer(self, packet: bytes) -> bytes:
        return packet


class UpperStreamHandler(AnswerStreamHandler):
    """Answer each line upper-cased (ASCII letters)."""

    def answer(self, line: bytes) -> bytes:
        return line.upper()


class UpperDatagramHandler(AnswerDatagramHandler):
    """Answer each datagram upper-cased (ASCII letters)."""

    def answer(self, packet: bytes) -> bytes:
        return packet.upper()


class EchoStreamHandler(AnswerStreamHandler):
    """Answer each line unchanged."""


class EchoDatagramHandler(AnswerDatagramHandler):
    """Answer each datagram unchanged."""


class DiscardStreamHandler(StreamRequestHandler):
    """Read everything the client sends and drop it."""

    def handle(self) -> None:
        read = self.rfile.read1
        try:
            while read(MAX_LINE):
                pass
        except ConnectionError:
            pass


class DiscardDatagramHandler(DatagramRequestHandler):
    """Drop each datagram, answering nothing."""

    def finish(self) -> None:
        # DatagramRequestHandler.finish() would send back an empty datagram.
        pass


@dataclass(frozen=True)
class Builtin:
    """A built-in handler: its name, what it does, and its variants (async: for --engine async)."""

    name: str
    summary: str
    stream: type[BaseRequestHandler]
    datagram: type[BaseRequestHandler]
    # The async engine's variants, by name in builtin_async: imported only when chosen,
    # so that no other engine pays for importing asyncio.
    async_stream: str
    async_datagram: str

    def variant(self, *, datagram: bool) -> type[BaseRequestHandler]:
        return self.datagram if datagram else self.stream

    def async_variant(self, *, datagram: bool) -> type[AsyncBaseRequestHandler]:
        module = importlib.import_module("portico.cli.builtin_async")
        handler: type[AsyncBaseRequestHandler] = getattr(
            module, self.async_datagram if datagram else self.async_stream
        )
        return handler


BUILTINS: dict[str, Builtin] = {
    builtin.name: builtin
    for builtin in (
        Builtin(
            "upper",
            "answer each line upper-cased",
            UpperStreamHandler,
            UpperDatagramHandler,
            "AsyncUpperStreamHandler",
            "AsyncUpperDatagramHandler",
        ),
        Builtin(
            "echo",
            "answer each line unchanged",
            EchoStreamHandler,
            EchoDatagramHandler,
            "AsyncAnswerStreamHandler",
            "AsyncAnswerDatagramHandler",
        ),
        Builtin(
            "discard",
            "read and drop everything",
            DiscardStreamHandler,
            DiscardDatagramHandler,
            "AsyncDiscardStreamHandler",
            "AsyncDiscardDatagramHandler",
        ),
    )
}
DEFAULT_HANDLER = "upper"
