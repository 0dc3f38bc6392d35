"""The servers behind ``portico serve``: a socket server, an engine and an access log.

The access log (logger ``portico.access``, level INFO) has one line when a
connection opens and one when it closes, with its duration and the bytes it
carried; a datagram gets one line.  Bytes are counted by wrapping the request
socket in ``get_request()``: a Python-level method call per ``recv``/``send``,
next to the system call it wraps.  When the access log is off, nothing is
wrapped, timed or formatted.

The engine comes from :mod:`portico.engines` by name, composed over the
access-logging server of the transport.  Stopping drains: see
``_DrainedByTheCommand``.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from portico.engines import choose_engine
from portico.errors import ConfigurationError
from portico.net.addresses import format_address
from portico.server.inet import TCPServer, UDPServer

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = [
    "CountingSocket",
    "DatagramAccessLog",
    "StreamAccessLog",
    "Transport",
    "transport_for",
]

access_log = logging.getLogger("portico.access")

# Numbers tie a connection's "closed" line to its "opened" line.
_numbers = itertools.count(1)
_OPENED = "connection %d from %s opened"
_CLOSED = "connection %d from %s closed after %.3f s: %d bytes in, %d bytes out"
_DATAGRAM = "datagram %d from %s handled in %.3f s: %d bytes in, %d bytes out"


class CountingSocket(socket.socket):
    """A connected socket that counts the bytes received and sent through it."""

    __slots__ = ("bytes_in", "bytes_out")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bytes_in = 0
        self.bytes_out = 0

    @classmethod
    def adopt(cls, sock: socket.socket) -> CountingSocket:
        """Take over ``sock``'s descriptor (no system call); ``sock`` is left detached."""
        timeout = sock.gettimeout()
        counting = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        if counting.gettimeout() != timeout:
            counting.settimeout(timeout)
        return counting

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        data = super().recv(bufsize, flags)
        self.bytes_in += len(data)
        return data

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0, /) -> int:
        received = super().recv_into(buffer, nbytes, flags)
        self.bytes_in += received
        return received

    def send(self, data: ReadableBuffer, flags: int = 0, /) -> int:
        sent = super().send(data, flags)
        self.bytes_out += sent
        return sent

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        super().sendall(data, flags)
        with memoryview(data) as view:
            self.bytes_out += view.nbytes


class _CountingReplySocket:
    """A datagram handler's view of the server socket, counting the bytes sent back."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.bytes_out = 0

    def sendto(self, data: Any, *args: Any) -> int:
        sent: int = self._sock.sendto(data, *args)
        self.bytes_out += sent
        return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class StreamAccessLog(TCPServer):
    """Log each connection when it opens and when it closes."""

    def get_request(self) -> tuple[Any, Any]:
        request, client_address = super().get_request()
        if access_log.isEnabledFor(logging.INFO):
            request = CountingSocket.adopt(request)
        return request, client_address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if not isinstance(request, CountingSocket):
            return super().finish_request(request, client_address)
        number, peer = next(_numbers), format_address(client_address)
        access_log.info(_OPENED, number, peer)
        started = time.monotonic()
        try:
            super().finish_request(request, client_address)
        finally:
            elapsed = time.monotonic() - started
            access_log.info(_CLOSED, number, peer, elapsed, request.bytes_in, request.bytes_out)


class DatagramAccessLog(UDPServer):
    """Log each datagram once it is handled."""

    def get_request(self) -> tuple[Any, Any]:
        (data, sock), client_address = super().get_request()
        if access_log.isEnabledFor(logging.INFO):
            sock = _CountingReplySocket(sock)
        return (data, sock), client_address

    def finish_request(self, request: Any, client_address: Any) -> None:
        data, sock = request
        if not isinstance(sock, _CountingReplySocket):
            return super().finish_request(request, client_address)
        started = time.monotonic()
        try:
            super().finish_request(request, client_address)
        finally:
            elapsed, peer = time.monotonic() - started, format_address(client_address)
            access_log.info(_DATAGRAM, next(_numbers), peer, elapsed, len(data), sock.bytes_out)


class _AsyncAccessLog:
    """The access log of the async engine, whose connections count their own bytes.

    Its servers accept on their event loop, not in ``get_request()``, and a
    handler ends long after ``finish_request()`` would have returned: the
    lines are written by ``process_request()`` (opened) and
    ``shutdown_request()`` (closed, or the datagram's line).
    """

    _portico_log: dict[Any, tuple[int, str, float]]

    def process_request(self, request: Any, client_address: Any) -> None:
        if access_log.isEnabledFor(logging.INFO):
            if not hasattr(self, "_portico_log"):
                self._portico_log = {}
            number, peer = next(_numbers), format_address(client_address)
            if not isinstance(request, tuple):
                access_log.info(_OPENED, number, peer)
            self._portico_log[_log_key(request)] = (number, peer, time.monotonic())
        super().process_request(request, client_address)  # type: ignore[misc]

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)  # type: ignore[misc]
        logged = getattr(self, "_portico_log", None)
        entry = logged.pop(_log_key(request), None) if logged else None
        if entry is None:
            return
        number, peer, started = entry
        elapsed = time.monotonic() - started
        if isinstance(request, tuple):
            data, reply = request
            access_log.info(_DATAGRAM, number, peer, elapsed, len(data), reply.bytes_out)
        else:
            access_log.info(_CLOSED, number, peer, elapsed, request.bytes_in, request.bytes_out)


def _log_key(request: Any) -> Any:
    return id(request[1]) if isinstance(request, tuple) else id(request)


class _DrainedByTheCommand:
    """How ``portico serve`` stops: ``drain()``, by its deadline, after serve_forever().

    Request threads and pool workers are daemons, so one stuck past the
    deadline cannot keep the process alive.  ``block_on_close`` is true so
    that the threads engine tracks its threads (drain() waits for them; the
    stdlib tracks them only then), and false for the engines with a loop of
    their own (event, async), whose serve_forever() would otherwise finish
    the connections in flight itself, with no deadline, before drain() runs.
    """

    daemon_threads = True
    block_on_close = True


class _LoopDrainedByTheCommand(_DrainedByTheCommand):
    block_on_close = False


class TCPServeBase(StreamAccessLog):
    # A restarted server must not wait for the old one's TIME_WAIT connections;
    # a port that another process listens on stays refused.
    allow_reuse_address = True


class UDPServeBase(DatagramAccessLog):
    # No SO_REUSEADDR: on UDP it would let two servers bind the same port.
    allow_reuse_address = False
    # A datagram cut short is a wrong request: drop it (counted and logged).
    oversize_datagrams = "drop"


@dataclass(frozen=True)
class Transport:
    """What ``--udp`` and ``--unix`` select: a server class and a handler variant."""

    name: str
    base: type[TCPServer]  # the access-logging socket server, before an engine is added
    datagram: bool

    def server_class(self, engine: str) -> type[TCPServer]:
        """The server class serving this transport on the engine called ``engine``."""
        with_engine = choose_engine(engine).server_class(self.base)
        found = _serve_classes.get(with_engine)
        if found is None:
            name = with_engine.__name__.replace("ServeBase", "ServeServer")
            logs = (_AsyncAccessLog,) if engine == "async" else ()
            stop = (
                _LoopDrainedByTheCommand if engine in ("event", "async") else _DrainedByTheCommand
            )
            made = type(name, (stop, *logs, with_engine), {})
            found = _serve_classes.setdefault(with_engine, made)
        return found


_serve_classes: dict[type, type[TCPServer]] = {}

_TRANSPORTS: dict[tuple[bool, bool], Transport] = {
    (False, False): Transport("tcp", TCPServeBase, datagram=False),
    (False, True): Transport("udp", UDPServeBase, datagram=True),
}

if hasattr(socket, "AF_UNIX"):
    from portico.server.inet import UnixDatagramServer, UnixStreamServer

    class UnixStreamServeBase(StreamAccessLog, UnixStreamServer):
        pass

    class UnixDatagramServeBase(DatagramAccessLog, UnixDatagramServer):
        oversize_datagrams = "drop"

    _TRANSPORTS[True, False] = Transport("unix stream", UnixStreamServeBase, datagram=False)
    _TRANSPORTS[True, True] = Transport("unix datagram", UnixDatagramServeBase, datagram=True)


def transport_for(*, unix: bool, udp: bool) -> Transport:
    try:
        return _TRANSPORTS[unix, udp]
    except KeyError:
        raise ConfigurationError("Unix sockets are not available on this platform") from None
