"""Handlers that raise on request, served by ``portico serve attack_handlers:CLASS``.

Each answers lines upper-cased, as the built-in ``upper`` does, except a
line ``raise:NAME``, on which it raises the exception ``NAME`` names (see
``RAISES``).  ``Raising`` is for the blocking engines (threads, pool, fork,
event), ``AsyncRaising`` for the async engine.
"""

from __future__ import annotations

import portico
from portico.engines import AsyncStreamRequestHandler

__all__ = ["RAISES", "AsyncRaising", "Boom", "Raising"]


class Boom(BaseException):
    """A BaseException that is neither SystemExit nor KeyboardInterrupt."""


RAISES: dict[str, type[BaseException]] = {
    "ValueError": ValueError,
    "Boom": Boom,
    "GeneratorExit": GeneratorExit,
}


def answer(line: bytes) -> bytes:
    """The line upper-cased, unless it asks for an exception: then raise it."""
    if line.startswith(b"raise:"):
        name = line[len(b"raise:") :].strip().decode()
        raise RAISES[name](f"raised on request: {name}")
    return line.upper()


class Raising(portico.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(answer(line))


class AsyncRaising(AsyncStreamRequestHandler):
    async def handle(self) -> None:
        async for line in self.reader:
            self.writer.write(answer(line))
            await self.writer.drain()
