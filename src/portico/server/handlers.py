"""Request handlers: one instance per request, ``setup()``, ``handle()``, ``finish()``."""

from __future__ import annotations

import socket
from io import DEFAULT_BUFFER_SIZE, BufferedIOBase, BufferedReader, BytesIO
from typing import Any

from portico.errors import LineTooLongError

__all__ = [
    "BaseRequestHandler",
    "DatagramRequestHandler",
    "StreamRequestHandler",
    "bounded_lines",
]


class BaseRequestHandler:
    """Base class for request handler classes.

    This class is instantiated for each request to be handled.  The
    constructor sets the instance variables request, client_address
    and server, and then calls the handle() method.  To implement a
    specific service, all you need to do is to derive a class which
    defines a handle() method.

    The handle() method can find the request as self.request, the
    client address as self.client_address, and the server (in case it
    needs access to per-server information) as self.server.  Since a
    separate instance is created for each request, the handle() method
    can define other arbitrary instance variables.
    """

    def __init__(self, request: Any, client_address: Any, server: Any) -> None:
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()
        try:
            self.handle()
        finally:
            self.finish()

    def setup(self) -> None:
        pass

    def handle(self) -> None:
        pass

    def finish(self) -> None:
        pass


class StreamRequestHandler(BaseRequestHandler):
    """Define self.rfile and self.wfile for stream sockets."""

    # rfile is buffered: reading a line byte by byte would cost a recv() per
    # byte.  wfile is unbuffered: a reply usually must reach the client before
    # the next read, and large writes go out in one sendall() anyway.
    rbufsize = -1
    wbufsize = 0

    # Applied to the request socket by setup() when not None.
    timeout: float | None = None

    # portico: the longest line rfile.readline() (and iteration) returns, newline
    # included; longer raises LineTooLongError.  None: unbounded, as in the stdlib.
    max_line_length: int | None = None

    # Set TCP_NODELAY; worth it only with a buffered wfile (wbufsize != 0),
    # or every small write becomes its own packet.
    disable_nagle_algorithm = False

    connection: Any
    rfile: Any
    wfile: Any

    def setup(self) -> None:
        self.connection = self.request
        if self.timeout is not None:
            self.connection.settimeout(self.timeout)
        if self.disable_nagle_algorithm:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.rfile = self._portico_reader(self.connection)
        if self.wbufsize == 0:
            self.wfile = _SocketWriter(self.connection)
        else:
            self.wfile = self.connection.makefile("wb", self.wbufsize)

    def _portico_reader(self, connection: Any) -> Any:
        rfile = connection.makefile("rb", self.rbufsize)
        if self.max_line_length is None:
            return rfile
        return bounded_lines(rfile, self.max_line_length, self.rbufsize)

    def finish(self) -> None:
        if not self.wfile.closed:
            try:
                self.wfile.flush()
            except OSError:
                # The peer may be gone already (ECONNABORTED, EPIPE): nothing to flush to.
                pass
        self.wfile.close()
        self.rfile.close()
        upgraded = getattr(self, "_portico_tls", None)
        if upgraded is not None:
            upgraded.close_notify()

    def start_tls(self, context: Any = None, *, timeout: float | None = 10.0) -> None:
        """Switch this connection to TLS now, for STARTTLS-style protocols (portico).

        Call it once the plaintext reply that invites the client to start
        TLS has been written.  ``context`` is an ``ssl.SSLContext``; by
        default the server's ``starttls_context``.  The handshake must end
        within ``timeout`` seconds.  Afterwards ``self.connection``,
        ``self.rfile`` and ``self.wfile`` speak TLS.

        Bytes the client sent before its handshake (still in ``rfile``'s
        buffer) go to TLS, never to the handler: a plaintext command
        slipped in after the STARTTLS one fails the handshake instead of
        being obeyed as if it had come over TLS.
        """
        from portico.tls.stream import TLSStream  # noqa: PLC0415 (imports ssl)

        context = context if context is not None else getattr(self.server, "starttls_context", None)
        if context is None:
            raise ValueError("start_tls() needs an SSLContext (or the server's starttls_context)")
        self.wfile.flush()
        peek = getattr(self.rfile, "peek", None)  # None when unbuffered: nothing is held
        early = peek(1) if peek is not None else b""  # what the client sent: buffered, or now
        self.rfile.read(len(early))
        stream = TLSStream(self.connection, context, received=early)
        stream.handshake(timeout)
        self.wfile.close()
        self.rfile.close()
        self._portico_tls = stream
        self.connection = stream
        self.rfile = self._portico_reader(stream)
        self.wfile = (
            _SocketWriter(stream) if self.wbufsize == 0 else stream.makefile("wb", self.wbufsize)
        )


class _BoundedLines(BufferedReader):
    """A buffered reader whose lines stop at ``maximum`` bytes, with an error.

    ``readline(size)`` with a size of its own keeps the stdlib meaning (at
    most ``size`` bytes, no error): a caller that bounds its lines, as
    ``http.server`` does, decides for itself.
    """

    maximum: int

    def readline(self, size: int | None = -1, /) -> bytes:
        if size is not None and size >= 0:
            return super().readline(size)
        line = super().readline(self.maximum + 1)
        if len(line) > self.maximum:
            raise LineTooLongError(self.maximum)
        return line

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


def bounded_lines(rfile: Any, maximum: int, buffer_size: int = -1) -> Any:
    """``rfile``, a fresh BufferedReader over a socket, with its lines bounded to ``maximum``."""
    if maximum < 1:
        raise ValueError(f"max_line_length must be at least 1, not {maximum}")
    if type(rfile) is not BufferedReader:
        return rfile  # unbuffered (rbufsize == 0): no readline() to bound
    size = DEFAULT_BUFFER_SIZE if buffer_size < 0 else buffer_size
    bounded = _BoundedLines(rfile.detach(), size)
    bounded.maximum = maximum
    return bounded


class _SocketWriter(BufferedIOBase):
    """Simple writable BufferedIOBase implementation for a socket.

    Does not hold data in a buffer, avoiding any need to call flush().
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self._sock.sendall(b)
        if type(b) is bytes:  # the usual case: no memoryview needed to count it
            return len(b)
        with memoryview(b) as view:
            return view.nbytes

    def fileno(self) -> int:
        return int(self._sock.fileno())


class DatagramRequestHandler(BaseRequestHandler):
    """Define self.rfile and self.wfile for datagram sockets."""

    packet: bytes
    socket: Any
    rfile: BytesIO
    wfile: BytesIO

    def setup(self) -> None:
        self.packet, self.socket = self.request
        self.rfile = BytesIO(self.packet)
        self.wfile = BytesIO()

    def finish(self) -> None:
        self.socket.sendto(self.wfile.getvalue(), self.client_address)
