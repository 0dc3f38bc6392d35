"""The servers behind ``portico serve``: a socket server, an engine and an access log.

The access log (logger ``portico.access``) has one line per connection, when
it ends (at INFO; ``--access-log-level`` moves it): its number, the client
(and the proxy it came through), the TLS version, its duration, the bytes it
carried and how it ended; a datagram gets one line too.  A DEBUG line marks
a connection's start.  While a connection is served, its
:class:`~portico.net.context.Connection` is the current one, so every log
call the handler makes carries its number and peer.  Bytes are counted by
wrapping the connection in ``finish_request()`` (portico.net.counting): a
Python-level method call per ``recv``/``send``, next to the system call it
wraps.  When the access log is off, nothing is wrapped, timed or formatted.

The engine comes from :mod:`portico.engines` by name, composed over the
access-logging server of the transport.  Stopping drains: see
``_DrainedByTheCommand``.
"""

from __future__ import annotations

import contextvars
import logging
import socket
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from portico.engines import choose_engine
from portico.errors import ConfigurationError
from portico.net.addresses import format_address, plain_peer_address
from portico.net.context import Connection, current, how_it_ended
from portico.server.inet import TCPServer, UDPServer

if TYPE_CHECKING:
    pass

__all__ = [
    "DatagramAccessLog",
    "StreamAccessLog",
    "Transport",
    "transport_for",
]

access_log = logging.getLogger("portico.access")

_OPENED = "connection %d from %s opened"
_CLOSED = "connection %d from %s%s closed after %.3f s: %d bytes in, %d bytes out; %s"
_DATAGRAM = "datagram %d from %s handled in %.3f s: %d bytes in, %d bytes out; %s"


def _make_current(connection: Connection) -> None:
    """The connection is now the current one; a DEBUG line marks its start."""
    current.set(connection)
    access_log.debug(_OPENED, connection.id, connection.client)


def _closed(bytes_in: int, bytes_out: int, datagram: bool = False) -> None:
    """The access line of the current connection, which stops being current."""
    connection = current.get()
    if connection is None:
        return  # never served (refused, turned away): no access line
    current.set(None)
    _log_access(connection, bytes_in, bytes_out, datagram)


def _log_access(connection: Connection, bytes_in: int, bytes_out: int, datagram: bool) -> None:
    elapsed = time.monotonic() - connection.started
    ended = how_it_ended(connection.failure)
    fields = {
        "connection_id": connection.id,
        "peer": connection.client,
        "access": {
            "peer": format_address(connection.peer),
            "client": connection.client,
            "tls": connection.tls_version,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "duration": round(elapsed, 6),
            "ended": ended,
        },
    }
    if datagram:
        access_log.info(
            _DATAGRAM, connection.id, connection.client, elapsed, bytes_in, bytes_out, ended,
            extra=fields,
        )  # fmt: skip
        return
    via = ""
    if connection.proxied_peer is not None:
        via = f" via {format_address(connection.peer)}"
    if connection.tls_version is not None:
        via += f" over {connection.tls_version}"
    access_log.info(
        _CLOSED, connection.id, connection.client, via, elapsed, bytes_in, bytes_out, ended,
        extra=fields,
    )  # fmt: skip


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
    """One access line per connection, and the connection as the context of every log call.

    The server counts each connection's bytes and makes it the current one
    where the engine runs it (``count_bytes``); it stays current through
    ``handle_error()`` (its traceback carries it too), until
    ``shutdown_request()`` has closed it and the access line is written.
    """

    count_bytes = True

    def _portico_connection_opened(self, connection: Connection) -> None:
        access_log.debug(_OPENED, connection.id, connection.client)

    def _portico_connection_closed(self, connection: Connection) -> None:
        if access_log.isEnabledFor(logging.INFO):
            _log_access(connection, connection.bytes_in, connection.bytes_out, datagram=False)


class DatagramAccessLog(UDPServer):
    """Log each datagram once it is handled."""

    def get_request(self) -> tuple[Any, Any]:
        (data, sock), client_address = super().get_request()
        if access_log.isEnabledFor(logging.INFO):
            sock = _CountingReplySocket(sock)
        return (data, sock), client_address

    def finish_request(self, request: Any, client_address: Any) -> None:
        _, sock = request
        if not isinstance(sock, _CountingReplySocket):
            return super().finish_request(request, client_address)
        connection = Connection(client_address, bytes_in=len(request[0]))
        current.set(connection)
        try:
            super().finish_request(request, client_address)
        except BaseException as exc:
            connection.failure = exc
            raise

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        data, sock = request
        if isinstance(sock, _CountingReplySocket):
            _closed(len(data), sock.bytes_out, datagram=True)


class _AsyncAccessLog:
    """The access log of the async engine, whose connections count their own bytes.

    Its servers accept on their event loop, not in ``get_request()``, and a
    handler ends long after ``finish_request()`` would have returned: the
    lines are written by ``process_request()`` (opened) and
    ``shutdown_request()`` (closed, or the datagram's line).
    """

    _portico_log: dict[Any, tuple[contextvars.Context, Connection]]

    def process_request(self, request: Any, client_address: Any) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            super().process_request(request, client_address)  # type: ignore[misc]
            return
        if not hasattr(self, "_portico_log"):
            self._portico_log = {}
        connection = Connection(client_address)
        if not isinstance(request, tuple):
            if request.proxy_header is not None:  # client_address is the original client
                connection.peer = plain_peer_address(request.getpeername())
                connection.proxied_peer = client_address
            tls = request.get_extra_info("ssl_object")
            connection.tls_version = None if tls is None else tls.version()
        # The handler's task copies this context: its log calls carry the connection.
        context = contextvars.copy_context()
        context.run(_make_current, connection)
        self._portico_log[_log_key(request)] = context, connection
        context.run(super().process_request, request, client_address)  # type: ignore[misc]

    def handle_error(self, request: Any, client_address: Any) -> None:
        entry = getattr(self, "_portico_log", {}).get(_log_key(request))
        if entry is None or current.get() is entry[1]:  # not logged, or in its context already
            super().handle_error(request, client_address)  # type: ignore[misc]
            if entry is not None:
                entry[1].failure = sys.exc_info()[1]
            return
        context, connection = entry
        connection.failure = sys.exc_info()[1]
        context.run(super().handle_error, request, client_address)  # type: ignore[misc]

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)  # type: ignore[misc]
        logged = getattr(self, "_portico_log", None)
        entry = logged.pop(_log_key(request), None) if logged else None
        if entry is None:
            return
        connection = entry[1]
        if isinstance(request, tuple):
            data, reply = request
            _log_access(connection, len(data), reply.bytes_out, datagram=True)
        else:
            _log_access(connection, request.bytes_in, request.bytes_out, datagram=False)


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
