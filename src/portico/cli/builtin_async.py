"""The async engine's variants of the built-in handlers (see :mod:`portico.cli.builtin`).

A module of their own so that asyncio is imported only when ``--engine async``
is chosen.
"""

from __future__ import annotations

from portico.cli.builtin import MAX_LINE
from portico.engines.aio_handlers import AsyncDatagramRequestHandler, AsyncStreamRequestHandler

__all__ = [
    "AsyncAnswerDatagramHandler",
    "AsyncAnswerStreamHandler",
    "AsyncDiscardDatagramHandler",
    "AsyncDiscardStreamHandler",
    "AsyncUpperDatagramHandler",
    "AsyncUpperStreamHandler",
]


class AsyncAnswerStreamHandler(AsyncStreamRequestHandler):
    """The async engine's AnswerStreamHandler: ``answer(line)`` for each line."""

    async def handle(self) -> None:
        readline, write, answer = self.reader.readline, self.writer.write, self.answer
        drain = self.writer.drain
        # As the blocking variant: with max_line_length, a longer line closes the connection.
        size = -1 if self.max_line_length is not None else MAX_LINE
        try:
            while line := await readline(size):
                write(answer(line))
                await drain()  # a client that does not read is held here (send_timeout)
        except ConnectionError:
            pass

    def answer(self, line: bytes) -> bytes:
        return line


class AsyncAnswerDatagramHandler(AsyncDatagramRequestHandler):
    """The async engine's AnswerDatagramHandler."""

    async def handle(self) -> None:
        self.writer.write(self.answer(self.packet))

    def answer(self, packet: bytes) -> bytes:
        return packet


class AsyncUpperStreamHandler(AsyncAnswerStreamHandler):
    async def handle(self) -> None:
        readline, write, drain = self.reader.readline, self.writer.write, self.writer.drain
        size = -1 if self.max_line_length is not None else MAX_LINE
        try:
            while line := await readline(size):
                write(line.upper())  # answer() inlined: this is the benchmarks' hot loop
                await drain()
        except ConnectionError:
            pass

    def answer(self, line: bytes) -> bytes:
        return line.upper()


class AsyncUpperDatagramHandler(AsyncAnswerDatagramHandler):
    def answer(self, packet: bytes) -> bytes:
        return packet.upper()


class AsyncDiscardStreamHandler(AsyncStreamRequestHandler):
    async def handle(self) -> None:
        read = self.reader.read1
        try:
            while await read(MAX_LINE):
                pass
        except ConnectionError:
            pass


class AsyncDiscardDatagramHandler(AsyncDatagramRequestHandler):
    async def finish(self) -> None:
        pass  # no reply, not even an empty datagram
