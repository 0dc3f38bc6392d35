"""The socket servers: TCP, UDP and their Unix-domain twins.

Stdlib behaviour, plus what a real deployment needs: the backlog defaults to
the system maximum, a wildcard IPv6 address serves IPv4 clients too (and
reports them as plain IPv4 addresses), one server may listen on several
addresses (:meth:`TCPServer.add_listener`), and a Unix socket file left behind
by a dead server is replaced while a live one is refused.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any, Literal

from portico.errors import ConfigurationError
from portico.net.addresses import (
    family_of_host,
    format_address,
    is_ipv6_literal,
    mapped_ipv6_address,
    plain_peer_address,
)
from portico.net.context import Connection, current, note
from portico.net.counting import CountingStream
from portico.net.guard import ConnectionLimits, GuardedSocket
from portico.net.listeners import (
    TCPKeepalive,
    UnixSocketFile,
    bind_errors_explained,
    bind_socket,
    open_listener,
    prepare_bind,
    system_max_backlog,
    tune_stream_listener,
)
from portico.net.quiesce import accept_queue_length, stop_new_connections
from portico.server import oversize
from portico.server.admission import AdmissionLimits
from portico.server.base import BaseServer, Source
from portico.server.proxy import (
    LOOPBACK,
    dropped,
    is_trusted,
    original_address,
    parse_networks,
    serving,
    take_proxy_header,
)

__all__ = ["TCPServer", "UDPServer"]

tls_log = logging.getLogger("portico.tls")


class TCPServer(BaseServer):
    """Base class for various socket-based server classes.

    Defaults to synchronous IP stream (i.e., TCP).

    Methods for the caller:

    - __init__(server_address, RequestHandlerClass, bind_and_activate=True)
    - serve_forever(poll_interval=0.5)
    - shutdown()
    - handle_request()  # if you don't use serve_forever()
    - fileno() -> int   # for selector
    - add_listener(address_or_socket)  # portico: serve more addresses

    Methods that may be overridden:

    - server_bind()
    - server_activate()
    - get_request() -> request, client_address
    - handle_timeout()
    - verify_request(request, client_address)
    - process_request(request, client_address)
    - shutdown_request(request)
    - close_request(request)
    - handle_error()

    Methods for derived classes:

    - finish_request(request, client_address)

    Class variables that may be overridden by derived classes or
    instances:

    - timeout
    - address_family
    - socket_type
    - request_queue_size (only for stream sockets)
    - allow_reuse_address
    - allow_reuse_port
    - unix_socket_mode (portico: permission bits of a Unix socket file)
    - unix_socket_owner, unix_socket_group (portico: owner of a Unix socket file)
    - ipv6_only (portico: None serves IPv4 on a wildcard IPv6 address too)
    - tcp_nodelay, tcp_keepalive (portico: TCP options of every connection)

    Instance variables:

    - server_address
    - RequestHandlerClass
    - socket
    """

    address_family: int = socket.AF_INET
    socket_type: int = socket.SOCK_STREAM
    # The stdlib's 5 drops connections under any burst; the kernel clamps this.
    request_queue_size: int = system_max_backlog()
    allow_reuse_address: bool = False
    if sys.version_info >= (3, 11):
        allow_reuse_port: bool = False
    unix_socket_mode: int | None = None
    # portico: listener settings (see portico.net.listeners).
    unix_socket_owner: str | int | None = None  # user name or uid of a Unix socket file
    unix_socket_group: str | int | None = None
    ipv6_only: bool | None = None  # None: a wildcard IPv6 address serves IPv4 too
    tcp_nodelay: bool = False  # on every accepted connection (Linux passes it on)
    tcp_keepalive: TCPKeepalive | None = None

    _portico_unix_file: UnixSocketFile | None = None
    _portico_listeners_shared = False

    # portico: TLS (see portico.tls).  An ssl.SSLContext makes every connection TLS;
    # use_tls() sets it from a reloadable TLSConfig.
    ssl_context: Any = None
    tls_config: Any = None
    tls_handshake_timeout: float | None = 10.0
    # portico: the PROXY protocol (see portico.server.proxy): "v1", "v2" or "auto" makes
    # every connection start with a header, from peers in proxy_allow only.
    proxy_protocol: str | None = None
    proxy_allow: tuple[Any, ...] = parse_networks(LOOPBACK)
    proxy_header_timeout: float | None = 5.0
    # portico: time limits of each connection (see portico.net.guard); None: off, as in
    # the stdlib.  When one fires, the handler's wait raises ConnectionTimeout.
    first_byte_timeout: float | None = None
    idle_timeout: float | None = None
    connection_timeout: float | None = None
    min_receive_rate: float | None = None  # bytes per second, over the window below
    min_receive_rate_window: float = 20.0
    send_timeout: float | None = None
    # portico: admission limits (see portico.server.admission); None: off, as in the stdlib.
    max_connections: int | Literal["auto"] | None = None
    max_connections_per_client: int | None = None
    client_prefix: tuple[int, int] = (32, 128)  # IPv4, IPv6 prefix lengths of "one client"
    max_accept_rate: float | None = None  # new connections per second
    overload_policy: str = "pause"  # or "reject": handle_overload() turns them away
    busy_reply: bytes | None = None  # what handle_overload() sends a connection turned away
    # portico: count each connection's bytes, and make it the current one (portico.net.context)
    # while it is served; off in the stdlib-named classes (a wrapper per connection).
    count_bytes: bool = False
    # Hold connections whose client speaks first in the serving loop until it does
    # (engines whose requests wait cooperatively need not).
    _portico_holds_for_first_byte = True

    def __init__(
        self,
        server_address: Any,
        RequestHandlerClass: Callable[..., Any],
        bind_and_activate: bool = True,
    ) -> None:
        """Constructor.  May be extended, do not override."""
        BaseServer.__init__(self, server_address, RequestHandlerClass)
        self._portico_extra_listeners: list[socket.socket] = []
        self._portico_extra_files: list[UnixSocketFile] = []
        if (
            self.address_family == socket.AF_INET
            and isinstance(server_address, tuple)
            and is_ipv6_literal(server_address[0])
        ):
            # An IPv6 literal given to an IPv4 class would fail in bind(); serve it instead.
            self.address_family = socket.AF_INET6
        with bind_errors_explained(server_address):  # e.g. no IPv6 on this host
            self.socket = socket.socket(self.address_family, self.socket_type)
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except BaseException:
                self.server_close()
                raise

    def server_bind(self) -> None:
        """Called by constructor to bind the socket.

        May be overridden.
        """
        prepare_bind(
            self.socket,
            self.server_address,
            reuse_address=self.allow_reuse_address,
            reuse_port=getattr(self, "allow_reuse_port", False),
            ipv6_only=self.ipv6_only,
        )
        self._portico_unix_file = bind_socket(
            self.socket,
            self.server_address,
            unix_mode=self.unix_socket_mode,
            unix_owner=self.unix_socket_owner,
            unix_group=self.unix_socket_group,
        )
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Called by constructor to activate the server.

        May be overridden.
        """
        self.socket.listen(self.request_queue_size)
        tune_stream_listener(self.socket, nodelay=self.tcp_nodelay, keepalive=self.tcp_keepalive)

    def _portico_take_queued(self) -> None:
        """Serve the connections already queued on the listeners, before they close.

        Closing a listener resets the connections still waiting in its accept
        queue: clients that connected, and may have sent a request, would
        read a reset.  Once the serving loop has stopped (``portico serve``
        drains after it), a socket filter holds new connection attempts off
        (their retry finds the listener closed and is refused) and the
        queued ones are accepted and served here, so that a client is either
        served or refused, never reset.  Linux TCP listeners only; shared
        listeners are left to the process that owns them.
        """
        if self._portico_listeners_shared or self._portico_serving_thread is not None:
            return
        for listener in self.listeners:
            if not stop_new_connections(listener):
                continue
            listener.setblocking(False)
            self._portico_ready = listener
            try:
                # Bounded: the filter lets nothing new into the queue.
                for _ in range(self.request_queue_size):
                    if not accept_queue_length(listener):
                        break
                    self._handle_request_noblock()
            finally:
                self._portico_ready = None

    def _portico_close_listeners(self) -> None:
        for listener in self.listeners:
            if self._portico_listeners_shared:
                # Another process listens on it too (systemd, a prefork master, its other
                # workers): shutdown() would stop it listening for them all.
                listener.close()
                continue
            # shutdown() first: it stops the socket listening at once (a new client is
            # refused), even while the serving loop's poll() or a duplicate (the async
            # engine's) still holds the descriptor open.
            with contextlib.suppress(OSError):  # a datagram socket is "not connected"
                listener.shutdown(socket.SHUT_RD)
            listener.close()

    def adopt_socket(self, sock: socket.socket) -> None:
        """Serve ``sock``, already bound (and listening, for streams), as ``self.socket``.

        For sockets inherited from systemd or a parent process: build the
        server with ``bind_and_activate=False`` and call this instead of
        ``server_bind()`` and ``server_activate()``.  The server closes the
        socket in ``server_close()`` but never removes a Unix socket's file,
        which is not its own, and draining only closes it: the process that
        passed it may still be listening on it.
        """
        self.socket.close()
        self.socket = sock
        self.address_family = sock.family
        self.server_address = sock.getsockname()
        self._portico_listeners_shared = True

    def share_listeners(self) -> None:
        """Declare the listening sockets shared with other processes (portico).

        A prefork worker, or a master handing its sockets to its successor,
        calls this: draining then only closes this process's descriptors
        (never ``shutdown()``, which would stop the socket listening for
        every process), ``server_close()`` leaves Unix socket files in place
        for the processes still serving them, and the listeners become
        non-blocking, since a process that wakes for a client another one
        accepted must not block in ``accept()``.
        """
        self._portico_listeners_shared = True
        self._portico_unix_file = None
        self._portico_extra_files = []
        for listener in self.listeners:
            # Every process that waits on it wakes for a new client and one wins:
            # the others' accept() must fail at once, not block until the next one.
            if listener.fileno() != -1:
                listener.setblocking(False)

    def _portico_handle(self, request: Any, client_address: Any) -> None:
        """Run the handler (``finish_request()`` calls this).

        portico: with ``count_bytes``, the connection becomes the current one
        (``portico.net.context``) and its bytes are counted; a PROXY header is
        read first (``proxy_protocol``), then the TLS handshake runs
        (``ssl_context``), here where the engine runs the request, never on
        the accept path.
        """
        if not self.count_bytes or isinstance(request, tuple):
            return self._portico_proxied(request, client_address)
        connection = Connection(client_address)
        current.set(connection)
        self._portico_connection_opened(connection)
        try:
            self._portico_proxied(CountingStream(request, connection), client_address)
        except BaseException as exc:
            connection.failure = exc
            raise
        return None

    def _portico_connection_opened(self, connection: Connection) -> None:
        """The connection is the current one now (a hook for the access log)."""

    def _portico_connection_closed(self, connection: Connection) -> None:
        """The connection ended and is about to stop being current (a hook for the access log)."""

    def _portico_proxied(self, request: Any, client_address: Any) -> None:
        if self.proxy_protocol is None:
            return self._portico_finish(request, client_address)
        taken = take_proxy_header(self, request, client_address)
        if taken is None:
            return None  # dropped, and logged
        request, header = taken
        address = original_address(header, request, client_address)
        if address != client_address:
            note(proxied_peer=address)  # for the access line: the client behind the proxy
        with serving(header):
            self._portico_finish(request, address)
        return None

    def _portico_finish(self, request: Any, client_address: Any) -> None:
        limits = self._portico_connection_limits()
        if limits is not None and not isinstance(request, tuple):
            request = GuardedSocket(request, limits)
        if self.ssl_context is None:
            return self._portico_run_handler(request, client_address)
        # Imported here: ssl costs every server start that does not use it.
        from portico.tls.serve import finish_over_tls  # noqa: PLC0415

        finish_over_tls(self, request, client_address, self._portico_run_handler)
        return None

    def _portico_connection_limits(self) -> ConnectionLimits | None:
        """The time limits of a connection, or None when none is set (the stdlib's way)."""
        limits = ConnectionLimits(
            first_byte=self.first_byte_timeout,
            idle=self.idle_timeout,
            deadline=self.connection_timeout,
            min_rate=self.min_receive_rate,
            rate_window=self.min_receive_rate_window,
            send=self.send_timeout,
        )
        return limits if limits.active else None

    def _portico_first_byte_timeout(self, request: Any, client_address: Any) -> float | None:
        """With TLS or the PROXY protocol the client speaks first: hold it until it does.

        A peer that may not send a PROXY header is not held: finish_request()
        drops it at once.
        """
        if not self._portico_holds_for_first_byte or isinstance(request, tuple):
            return None
        if self.proxy_protocol is not None:
            if not is_trusted(client_address, self.proxy_allow):
                return None
            return self.proxy_header_timeout
        if self.ssl_context is not None:
            return self.tls_handshake_timeout
        return None

    def _portico_sent_nothing(self, client_address: Any) -> None:
        """The client of a held connection said nothing in time: log it as its protocol would."""
        if self.proxy_protocol is not None:
            dropped(client_address, "no PROXY header in time")
        elif self.ssl_context is not None:
            tls_log.info(
                "TLS handshake with %s failed: no handshake within the time allowed",
                format_address(client_address),
            )
        else:
            super()._portico_sent_nothing(client_address)

    def use_tls(self, config: Any) -> None:
        """Serve TLS from now on, with a :class:`portico.tls.TLSConfig` (portico).

        The certificates are loaded now: a ConfigurationError says what is
        wrong with them.  :meth:`reload_tls` reads them again.
        """
        if self.socket_type != socket.SOCK_STREAM:
            raise ConfigurationError("TLS needs a stream server, not datagrams")
        self.ssl_context = config.load()
        self.tls_config = config

    def reload_tls(self) -> bool:
        """Read the TLS certificates again; new connections get them (portico).

        The new files are loaded into a new context first: if they are
        broken (missing, unreadable, a key that does not match), the old
        context goes on serving and the reason is logged.  True if reloaded.
        """
        if self.tls_config is None:
            return False
        try:
            context = self.tls_config.load()
        except ConfigurationError as exc:
            tls_log.error("TLS reload failed; the previous certificates go on serving: %s", exc)
            return False
        self.ssl_context = context  # one assignment: a connection sees the old or the new
        tls_log.info("TLS certificates reloaded")
        return True

    def server_close(self) -> None:
        """Called to clean-up the server.

        May be overridden.
        """
        self.socket.close()
        for listener in self._portico_listeners_extra():
            listener.close()
        for owned in [self._portico_unix_file, *getattr(self, "_portico_extra_files", [])]:
            if owned is not None:
                owned.remove_if_ours()

    def fileno(self) -> int:
        """Return socket file number.

        Interface required by selector.
        """
        return self.socket.fileno()

    def get_request(self) -> tuple[Any, Any]:
        """Get the request and client address from the socket.

        May be overridden.
        """
        listener = self._portico_ready or self.socket
        request, client_address = listener.accept()
        return request, plain_peer_address(client_address)

    def shutdown_request(self, request: Any) -> None:
        """Called to shutdown and close an individual request."""
        try:
            # Explicitly shut down: socket.close() merely releases the socket
            # and waits for GC to perform the actual close.
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # some platforms may raise ENOTCONN here
        self.close_request(request)
        connection = current.get()
        if connection is not None:
            self._portico_connection_closed(connection)
            current.set(None)

    def close_request(self, request: Any) -> None:
        """Called to clean up an individual request.

        portico: the request's admission slot is freed here.
        """
        self._portico_release(request)
        request.close()

    def _portico_admission_limits(self) -> AdmissionLimits | None:
        if self.socket_type != socket.SOCK_STREAM:
            return None  # datagrams have no connections to count
        return AdmissionLimits.of(self)

    # -- portico additions -------------------------------------------------

    def add_listener(self, listener: Any) -> socket.socket:
        """Serve one more address, or an already bound socket, from this server.

        ``listener`` is an address in this server's form (a ``(host, port)``
        pair, which may be IPv6 whatever ``address_family`` says, or a Unix
        path) or a socket that is already bound (and listening, for streams).
        Call it before ``serve_forever()``.  The socket is closed by
        ``server_close()``.  Returns the listening socket.
        """
        if isinstance(listener, socket.socket):
            sock = listener
        else:
            family = self.address_family
            if isinstance(listener, tuple) and family in (socket.AF_INET, socket.AF_INET6):
                family = family_of_host(listener[0], socket.AF_INET)
            sock, owned = open_listener(
                listener,
                family=family,
                socket_type=self.socket_type,
                backlog=self.request_queue_size,
                reuse_address=self.allow_reuse_address,
                reuse_port=getattr(self, "allow_reuse_port", False),
                unix_mode=self.unix_socket_mode,
                ipv6_only=self.ipv6_only,
                unix_owner=self.unix_socket_owner,
                unix_group=self.unix_socket_group,
                nodelay=self.tcp_nodelay,
                keepalive=self.tcp_keepalive,
            )
            if owned is not None:
                self._portico_extra_files.append(owned)
        self._portico_extra_listeners.append(sock)
        return sock

    @property
    def listeners(self) -> list[socket.socket]:
        """Every socket this server serves: ``self.socket`` first."""
        return [self.socket, *self._portico_listeners_extra()]

    @property
    def server_addresses(self) -> list[Any]:
        """The bound address of every listener, ``server_address`` first."""
        return [self.server_address, *(s.getsockname() for s in self._portico_listeners_extra())]

    def _portico_listeners_extra(self) -> list[socket.socket]:
        return getattr(self, "_portico_extra_listeners", [])

    def _portico_sources(self) -> list[Source]:
        extra = self._portico_listeners_extra()
        if not extra:
            return [(self, None)]  # honours an overridden fileno(), as the stdlib does
        return [(sock, sock) for sock in [self.socket, *extra]]


class UDPServer(TCPServer):
    """UDP server class."""

    allow_reuse_address = False
    if sys.version_info >= (3, 11):
        allow_reuse_port = False
    socket_type = socket.SOCK_DGRAM
    max_packet_size = 8192
    # portico: a datagram over max_packet_size is detected, counted and logged, then
    # "truncate"d to it (the stdlib's behaviour, which did so silently) or "drop"ped.
    oversize_datagrams = "truncate"
    datagrams_oversize = 0  # how many came in so far

    def get_request(self) -> tuple[Any, Any]:
        listener = self._portico_ready or self.socket
        # One byte more than allowed: a datagram that fills it is over the limit.
        data, client_address = listener.recvfrom(self.max_packet_size + 1)
        if len(data) > self.max_packet_size:
            data = self._portico_oversize(data, client_address)
        plain = plain_peer_address(client_address)
        if plain is not client_address:
            # Replies must go back through the IPv6 socket in its mapped form.
            return (data, _MappedReplySocket(listener)), plain
        return (data, listener), client_address

    def _portico_oversize(self, data: bytes, client_address: Any) -> bytes:
        """Count and log a datagram over ``max_packet_size``; truncate it, or drop it.

        Dropping raises BlockingIOError: to the serving loop, nothing came.
        """
        self.datagrams_oversize += 1
        oversize.record(self, client_address, self.max_packet_size)
        if self.oversize_datagrams == "drop":
            raise BlockingIOError("an oversize datagram was dropped")
        return data[: self.max_packet_size]

    def server_activate(self) -> None:
        # No need to call listen() for UDP.
        pass

    def shutdown_request(self, request: Any) -> None:
        # No need to shutdown anything.
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        # No need to close anything.
        pass


class _MappedReplySocket:
    """A dual-stack UDP socket as a handler sees it: replies to plain IPv4 addresses work."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def sendto(self, data: Any, *args: Any) -> int:
        *flags, address = args
        send: Callable[..., int] = self._sock.sendto
        return send(data, *flags, mapped_ipv6_address(address))

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None) -> int:
        if address is None:
            return self._sock.sendmsg(buffers, ancdata, flags)
        return self._sock.sendmsg(buffers, ancdata, flags, mapped_ipv6_address(address))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


if hasattr(socket, "AF_UNIX"):
    __all__ += ["UnixDatagramServer", "UnixStreamServer"]

    class UnixStreamServer(TCPServer):
        address_family = socket.AF_UNIX

    class UnixDatagramServer(UDPServer):
        address_family = socket.AF_UNIX
