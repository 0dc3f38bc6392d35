"""A server-side TLS connection over an accepted socket, with the socket API handlers use.

Why not ``ssl.SSLSocket``: it takes the descriptor over and does its I/O in
C, around whatever the server put in its place.  Here TLS runs in memory
(``SSLContext.wrap_bio``) and every byte goes through the accepted socket's
own ``recv``/``sendall``, so one implementation serves every engine: the
access log still counts the bytes on the wire, the event engine's
cooperative socket still yields to its hub, and the socket's timeout
(``StreamRequestHandler.timeout``) still bounds each wait.

A handler gets a :class:`TLSStream` as ``self.request``: ``makefile()``,
``recv``, ``sendall`` and friends work on plaintext; ``getpeercert()``,
``version()``, ``cipher()``, ``selected_alpn_protocol()`` and
:attr:`server_name` tell it about the session.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from portico.net.streams import makefile

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = ["SERVER_NAME_ATTRIBUTE", "TLSStream"]

_READ_SIZE = 64 * 1024  # ciphertext read per system call: several full TLS records
SERVER_NAME_ATTRIBUTE = "portico_server_name"  # set on the SSLObject by the SNI callback


class TLSStream:
    """TLS on a connected socket (``raw``), in memory; the socket stays the server's."""

    def __init__(self, raw: Any, context: ssl.SSLContext, *, received: bytes = b"") -> None:
        """``received``: bytes already read from ``raw`` that belong to TLS (STARTTLS)."""
        self.raw = raw
        self._incoming = ssl.MemoryBIO()
        self._incoming.write(received)
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._io_refs = 0
        self._closed = False
        self._chunk: bytearray | None = None
        self._view: memoryview = memoryview(b"")

    # -- the handshake and the end -------------------------------------------

    def handshake(self, timeout: float | None) -> None:
        """Run the TLS handshake within ``timeout`` seconds in all (TimeoutError past it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        previous = self.raw.gettimeout()
        try:
            while True:
                try:
                    self._tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush()
                    self._set_remaining(deadline)
                    if not self._fill():
                        message = "the client closed during the TLS handshake"
                        raise ConnectionResetError(message) from None
            self._flush()
        finally:
            self.raw.settimeout(previous)

    def _set_remaining(self, deadline: float | None) -> None:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the TLS handshake took too long")
            self.raw.settimeout(remaining)

    def close_notify(self) -> None:
        """Say goodbye the TLS way (best effort: the peer may be gone already)."""
        try:
            self._tls.unwrap()
        except (ssl.SSLError, ValueError):
            pass  # the peer's close_notify is not awaited: the server closes the socket next
        try:
            self._flush()
        except OSError:
            pass

    # -- plaintext in --------------------------------------------------------

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0, /) -> int:
        self._check_open()
        size = nbytes or memoryview(buffer).nbytes
        while True:
            try:
                received: int = self._tls.read(size, buffer)  # type: ignore[assignment]
                return received
            except ssl.SSLWantReadError:
                self._flush()  # TLS 1.3 may want to send something (a key update reply)
                if not self._fill():
                    return 0
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return 0  # close_notify, or a peer that just closed: end of file

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        buffer = bytearray(bufsize)
        received = self.recv_into(buffer, bufsize)
        return bytes(buffer[:received])

    def _fill(self) -> bool:
        """Read ciphertext from the socket into TLS; False at end of file."""
        if self._chunk is None:  # one buffer per connection, not a new one per read
            self._chunk = bytearray(_READ_SIZE)
            self._view = memoryview(self._chunk)
        received = self.raw.recv_into(self._chunk)
        if not received:
            self._incoming.write_eof()
            return False
        self._incoming.write(self._view[:received])
        return True

    # -- plaintext out -------------------------------------------------------

    def send(self, data: ReadableBuffer, flags: int = 0, /) -> int:
        self._check_open()
        written = self._tls.write(data)
        self._flush()
        return written

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        with memoryview(data) as view:
            sent = 0
            while sent < view.nbytes:
                sent += self.send(view[sent:])

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self.raw.sendall(data)

    # -- files, as socket.makefile() makes them -------------------------------

    def makefile(self, mode: str = "r", buffering: int | None = None, **text: Any) -> Any:
        return makefile(self, mode, buffering, **text)

    def _decref_socketios(self) -> None:
        self._io_refs -= 1

    # -- the session ----------------------------------------------------------

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._tls.getpeercert(binary_form)

    def version(self) -> str | None:
        return self._tls.version()

    def cipher(self) -> tuple[str, str, int] | None:
        return self._tls.cipher()

    def selected_alpn_protocol(self) -> str | None:
        return self._tls.selected_alpn_protocol()

    @property
    def server_name(self) -> str | None:
        """The name the client asked for (SNI), or None."""
        return getattr(self._tls, SERVER_NAME_ATTRIBUTE, None)

    # -- the socket underneath ------------------------------------------------

    def shutdown(self, how: int) -> None:
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            self.close_notify()
        self.raw.shutdown(how)

    def close(self) -> None:
        """The handler is done with it; the server closes the socket itself."""
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise OSError("the TLS stream is closed")

    def __getattr__(self, name: str) -> Any:
        # fileno, settimeout, gettimeout, setsockopt, getpeername, family, ...
        return getattr(self.raw, name)

    def __repr__(self) -> str:
        return f"<TLSStream {self.version() or 'handshaking'} over {self.raw!r}>"
