"""Request handlers for the ``async`` engine: the stdlib's, with ``async def``.

One instance per request, as in the stdlib; ``request``, ``client_address``
and ``server`` are set by the constructor, and the server then runs
``await setup()``, ``await handle()`` and (whatever happened) ``await
finish()`` on its event loop.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from portico.engines.aio_streams import AsyncStream, DatagramReply
from portico.errors import ConfigurationError
from portico.server.protections import MAX_LINE_LENGTH

__all__ = ["AsyncBaseRequestHandler", "AsyncDatagramRequestHandler", "AsyncStreamRequestHandler"]

# The finish() methods that do no more than _portico_after().
_OWN_FINISHES = frozenset({"AsyncBaseRequestHandler.finish", "AsyncDatagramRequestHandler.finish"})


class AsyncBaseRequestHandler:
    """Base class for the async engine's request handler classes.

    Define ``async def handle(self)``; ``setup()`` and ``finish()`` may be
    overridden too (``async def`` as well).  The server builds one instance
    per request and awaits ``setup()``, ``handle()`` and ``finish()`` in
    turn, ``finish()`` even when ``handle()`` raised.  An exception goes to
    the server's ``handle_error()``; an :class:`asyncio.CancelledError` (the
    server closing with ``block_on_close`` false) does not.
    """

    # Whether setup()/finish() are this class's own no-ops: then the server
    # runs handle() alone, one coroutine fewer per request.
    _portico_plain = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._portico_plain = cls.setup is AsyncBaseRequestHandler.setup and (
            getattr(cls.finish, "__qualname__", "") in _OWN_FINISHES
            and getattr(cls.finish, "__module__", "") == __name__
        )

    def __init__(self, request: Any, client_address: Any, server: Any) -> None:
        if not getattr(server, "_portico_async", False):
            raise ConfigurationError(
                f"{type(self).__name__} is an async handler (async def handle()): serve it "
                "with the async engine (portico.engines.AsyncTCPServer, "
                "server_class('async', ...), portico serve --engine async)"
            )
        self.request = request
        self.client_address = client_address
        self.server = server

    async def setup(self) -> None:
        pass

    async def handle(self) -> None:
        pass

    async def finish(self) -> None:
        pass

    def _portico_after(self) -> None:
        """What this class's own finish() does, for a server that skipped it (plain classes)."""

    async def _portico_run(self) -> None:
        await self.setup()
        try:
            await self.handle()
        finally:
            await self.finish()


class AsyncStreamRequestHandler(AsyncBaseRequestHandler):
    """A stream connection as ``self.reader`` and ``self.writer``.

    Both are the connection itself (an
    :class:`~portico.engines.aio_streams.AsyncStream`), which is also
    ``self.request``: ``await self.reader.readline()``, ``async for line in
    self.reader``, ``self.writer.write(data)``, ``await
    self.writer.drain()``.  ``rfile``, ``wfile`` and ``connection`` are
    other names for it.  The server closes it after ``finish()``.
    """

    request: AsyncStream
    reader: AsyncStream
    writer: AsyncStream
    # The longest line readline() returns, newline included; longer raises
    # LineTooLongError.  On by default, as in every server class portico adds.
    max_line_length: int | None = MAX_LINE_LENGTH

    def __init__(self, request: Any, client_address: Any, server: Any) -> None:
        super().__init__(request, client_address, server)
        self.reader = self.writer = request
        request.max_line = self.max_line_length

    @property
    def rfile(self) -> AsyncStream:
        return self.request

    @property
    def wfile(self) -> AsyncStream:
        return self.request

    @property
    def connection(self) -> AsyncStream:
        return self.request


class AsyncDatagramRequestHandler(AsyncBaseRequestHandler):
    """One datagram: ``self.packet``, and ``self.writer.write(reply)`` to answer.

    As in the stdlib, ``self.request`` is ``(packet, socket)``, ``self.socket``
    has ``sendto(data, address)``, ``self.rfile`` reads the packet and
    ``finish()`` sends what ``self.wfile`` holds (even nothing: an empty
    datagram), unless the handler already answered through ``self.writer`` or
    ``self.socket`` and never touched ``wfile``.
    """

    packet: bytes
    socket: DatagramReply
    writer: DatagramReply
    _wfile: BytesIO | None = None
    _rfile: BytesIO | None = None

    def __init__(self, request: Any, client_address: Any, server: Any) -> None:
        super().__init__(request, client_address, server)
        self.packet, self.socket = request
        self.writer = self.socket

    @property
    def rfile(self) -> BytesIO:
        rfile = self._rfile
        if rfile is None:
            rfile = self._rfile = BytesIO(self.packet)
        return rfile

    @property
    def wfile(self) -> BytesIO:
        wfile = self._wfile
        if wfile is None:
            wfile = self._wfile = BytesIO()
        return wfile

    async def finish(self) -> None:
        self._portico_after()

    def _portico_after(self) -> None:
        wfile = self._wfile
        if wfile is not None:
            self.socket.sendto(wfile.getvalue(), self.client_address)
        elif not self.socket.sent:
            self.socket.sendto(b"", self.client_address)
