"""The ``async`` engine: ``async def handle()`` handlers on an asyncio event loop.

Each server has its own loop (uvloop's when uvloop imports and
``use_uvloop`` is true, else asyncio's), run by the thread that calls
``serve_forever()`` or ``handle_request()``.  Connections are accepted by
the loop itself (``create_server(sock=...)`` on a duplicate of each
listening socket), each connection is an asyncio Protocol
(:class:`~portico.engines.aio_streams.AsyncStream`), and each handler's
coroutine is stepped by the connection directly
(:class:`~portico.engines.aio_streams.HandlerTask`), not by an
``asyncio.Task``: a request costs little more than a bare Protocol.

The stdlib hooks keep their meaning: ``verify_request()`` may refuse a
connection (it is closed), ``process_request()`` starts the handler,
``handle_error()`` logs a handler's exception, ``shutdown_request()`` and
``close_request()`` close the connection once the handler has finished, and
``service_actions()`` runs every ``poll_interval``.  A ``get_request()``
overridden outside portico is honoured by a slower accept path: the loop
watches the listener, ``get_request()`` accepts, and the accepted socket is
handed to the loop (``connect_accepted_socket``).

Stopping: ``shutdown()`` stops accepting at once and returns; with
``block_on_close`` (the default) ``serve_forever()`` goes on running the
connections in flight until they finish or ``server_close()`` says stop.
``server_close()`` waits for them, or with ``block_on_close`` false cancels
them (each handler sees :class:`asyncio.CancelledError` where it waits, its
``finish()`` runs), then closes every connection and the loop.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from portico.engines.aio_accept import GatedAccept
from portico.engines.aio_admission import AsyncAdmission
from portico.engines.aio_handlers import (
    AsyncBaseRequestHandler,
    AsyncDatagramRequestHandler,
    AsyncStreamRequestHandler,
)
from portico.engines.aio_streams import DEFAULT_LIMIT, AsyncStream, DatagramReply, HandlerTask
from portico.engines.base import EngineStatistics, created_once
from portico.errors import ConfigurationError
from portico.net.addresses import mapped_ipv6_address, plain_peer_address
from portico.net.guard import ConnectionClock, ConnectionLimits
from portico.net.proxy_protocol import ProxyProtocolError, parse
from portico.net.wakeup import Wakeup, signals_wake
from portico.server import oversize, proxy
from portico.server.base import BaseServer
from portico.server.inet import TCPServer, UDPServer
from portico.server.protections import Protected

__all__ = [
    "AsyncBaseRequestHandler",
    "AsyncDatagramRequestHandler",
    "AsyncEngine",
    "AsyncMixIn",
    "AsyncStatistics",
    "AsyncStreamRequestHandler",
    "AsyncTCPServer",
    "AsyncUDPServer",
    "new_event_loop",
]


def new_event_loop(*, use_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    """uvloop's loop when asked for and installed, else asyncio's."""
    if use_uvloop:
        try:
            import uvloop  # noqa: PLC0415 (optional)
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


@dataclass(frozen=True)
class AsyncStatistics(EngineStatistics):
    """A snapshot of an :class:`AsyncEngine`."""

    connections: int  # stream connections open now
    loop: str  # the event loop's class, e.g. "uvloop.Loop"


class _DatagramEndpoint(asyncio.DatagramProtocol):
    """A datagram listener: each datagram is one request."""

    def __init__(self, engine: AsyncEngine, listener: socket.socket) -> None:
        self.engine = engine
        self.listener = listener
        self.mapped = listener.family == socket.AF_INET6
        self.send: Callable[[Any, Any], object] = _not_connected

    def connection_made(self, transport: Any) -> None:
        sendto, mapped, listener = transport.sendto, self.mapped, self.listener

        def send(data: Any, address: Any) -> None:
            if mapped:
                address = mapped_ipv6_address(address)
            if data:
                sendto(data, address)
            else:  # the transports drop empty datagrams; the stdlib sends them
                listener.sendto(data, address)

        self.send = send

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.mapped:
            addr = plain_peer_address(addr)
        self.engine.datagram(data, DatagramReply(self.send, addr), addr)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error about an earlier reply: nobody to tell


def _not_connected(data: Any, address: Any) -> None:
    raise ConnectionError("the datagram endpoint is not connected")


class AsyncEngine:
    """The loop, the listeners and the handlers in flight of one async server."""

    name = "async"

    def __init__(self, server: Any) -> None:
        cls = type(server)
        self.server = server
        self.datagram_server = server.socket_type == socket.SOCK_DGRAM
        self.limit: int = getattr(server, "read_limit", DEFAULT_LIMIT)
        self.loop = new_event_loop(use_uvloop=server.use_uvloop)
        self.tasks: set[HandlerTask] = set()
        self.streams: set[AsyncStream] = set()
        self.completed = 0
        self._listening: list[Any] = []  # asyncio Servers, datagram transports, watched fds
        self._drained: asyncio.Future[None] | None = None
        self._runner: int | None = None  # the thread running the loop now
        self._run_lock = threading.Lock()
        self._closing = False
        self._cancelling = False
        self._draining = False
        self._accepting = False
        self._ticker: asyncio.TimerHandle | None = None
        self._closed = False
        self._failure: BaseException | None = None
        self._relisten: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None  # accepting again after a back-off
        # Sockets accepted by the engine's own accept path, whose connections are not made yet.
        self.pending_accepts = 0
        self._listening_gated = False  # what _listen() chose last
        self._connecting: set[asyncio.Task[Any]] = set()
        # The connections' time limits (portico.net.guard), and what enforces them.
        self._limits: ConnectionLimits | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.admission = AsyncAdmission(
            server, self.loop, self._begin, self._unlisten, self._listen_again
        )
        # Hooks left as they are need not be called: the fast path does their work.
        self._verify = cls.verify_request is not BaseServer.verify_request
        self._process = cls.process_request is not AsyncMixIn.process_request
        if self.datagram_server:
            self._shutdown = not (
                cls.shutdown_request is UDPServer.shutdown_request
                and cls.close_request is UDPServer.close_request
            )
        else:
            self._shutdown = not (
                cls.shutdown_request is TCPServer.shutdown_request
                and cls.close_request is TCPServer.close_request
            )
        get_request = cls.get_request
        self._own_accept = getattr(get_request, "__module__", "").startswith("portico.")

    # -- serving ---------------------------------------------------------

    def serve(self, wakeup: Wakeup, poll_interval: float | None) -> None:
        """The accept loop: run until shutdown() (or server_close()) wakes it."""
        loop = self.loop
        server = self.server
        loop.add_reader(wakeup.fileno(), self._woken, wakeup)
        self._runner = threading.get_ident()
        try:
            self._watch_time_limits()  # first: connections may be accepted while listening starts
            loop.run_until_complete(self._listen())
            server._portico_serving.set()
            if poll_interval is not None:
                self._ticker = loop.call_later(poll_interval, self._tick, poll_interval)
            if not self._stop_requested():
                self._accepting = True
                try:
                    loop.run_forever()
                finally:
                    self._accepting = False
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
        finally:
            self._runner = None
            if self._ticker is not None:
                self._ticker.cancel()
                self._ticker = None
            if self._sweeper is not None:
                self._sweeper.cancel()
                self._sweeper = None
            loop.remove_reader(wakeup.fileno())
            self._unlisten()

    def _stop_requested(self) -> bool:
        # Set by shutdown() before it wakes us.
        return self._closing or self.server._portico_shutdown_requested()

    def _woken(self, wakeup: Wakeup) -> None:
        wakeup.drain()
        if self._stop_requested():
            self._unlisten()  # at once: no connection accepted from now on
            self._end_accept_loop()

    def _end_accept_loop(self) -> None:
        # Once only: a second loop.stop() in the same turn would stop the next run too.
        if self._accepting:
            self._accepting = False
            self.loop.stop()

    def _tick(self, interval: float) -> None:
        try:
            self.server.service_actions()
        except BaseException as exc:
            self._failure = exc
            self._end_accept_loop()
            return
        self._ticker = self.loop.call_later(interval, self._tick, interval)

    async def _listen(self) -> None:
        server, loop = self.server, self.loop
        gated = self._listening_gated = self._gated()
        for sock in server.listeners:
            if not self._own_accept:
                loop.add_reader(sock.fileno(), self._fallback_accept, sock)
                self._listening.append(sock.fileno())
                continue
            if gated:
                self._listening.append(
                    GatedAccept(self, sock, self._new_stream, _tls_arguments(server))
                )
                continue
            dup = sock.dup()
            try:
                if self.datagram_server:
                    transport, _ = await loop.create_datagram_endpoint(
                        functools.partial(_DatagramEndpoint, self, sock), sock=dup
                    )
                    self._listening.append(transport)
                    continue
                if sock.family == getattr(socket, "AF_UNIX", None):
                    extra: dict[str, Any] = {}
                    if sys.version_info >= (3, 13):
                        extra["cleanup_socket"] = False  # the server removes its file itself
                    listening = await loop.create_unix_server(
                        self._new_stream,
                        sock=dup,
                        backlog=server.request_queue_size,
                        **extra,
                        **_tls_arguments(server),
                    )
                else:
                    listening = await loop.create_server(
                        self._new_stream,
                        sock=dup,
                        backlog=server.request_queue_size,
                        **_tls_arguments(server),
                    )
            except BaseException:
                dup.close()
                raise
            self._listening.append(listening)

    def _watch_time_limits(self) -> None:
        """Look at every connection's clock a few times a second, while serving."""
        if not self.datagram_server:
            self._limits = self.server._portico_connection_limits()
        if self._limits is not None:
            self._sweeper = self.loop.call_later(self._limits.tick, self._sweep)

    def _sweep(self) -> None:
        """Fire the time limits that have passed (the blocking engines' watchdog, on the loop)."""
        now = time.monotonic()
        for stream in list(self.streams):
            clock = stream._clock
            if clock is not None and clock.fired is None:
                overdue = clock.overdue(now)
                if overdue is not None:
                    stream.fire(overdue)
        assert self._limits is not None
        self._sweeper = self.loop.call_later(self._limits.tick, self._sweep)

    def _gated(self) -> bool:
        """Accept through the engine's own path: a connection limit that pauses is near.

        Always for a limit of the operator's (a number).  For ``"auto"``, only
        while the room left is no more than the listen backlog: farther off,
        a wake-up of the loop's listener (uvloop's, in C; the own path costs a
        third of the connection rate) cannot take more than the backlog holds,
        so it cannot overshoot the limit.
        """
        server = self.server
        admission = server._portico_admission
        if self.datagram_server or admission is None or not admission.limits.pauses:
            return False
        maximum = admission.limits.max_connections
        if maximum is None:
            return False
        if isinstance(getattr(server, "max_connections", None), int):
            return True
        # Twice the backlog to go back: a server at the boundary must not flip at each connection.
        backlog = int(server.request_queue_size) * (2 if self._listening_gated else 1)
        return bool(maximum - admission.open <= backlog)

    def _switch_accept_path(self) -> None:
        """Near the limit, or far from it again: listen the way :meth:`_gated` says now."""
        if self._listening_gated == self._gated() or self.admission.paused:
            return
        if self._accepting and not self._stop_requested():
            self._unlisten()
            self._listen_again()

    def no_room(self) -> bool:
        """The connection limit leaves no room for one more accept (the own accept path)."""
        admission = self.server._portico_admission
        maximum = None if admission is None else admission.limits.max_connections
        if admission is None or maximum is None:
            return False
        return bool(admission.open + self.pending_accepts >= maximum)

    def back_off(self, delay: float) -> None:
        """accept() failed for want of a resource: stop, and try again after ``delay``."""
        self._unlisten()
        self._retry = self.loop.call_later(delay, self._listen_again)

    def keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a task that makes a connection until it is done; log what it raised."""
        self._connecting.add(task)
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[Any]) -> None:
        self._connecting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.server.handle_error(None, None)

    def _listen_again(self) -> None:
        """After an admission pause: accept again (unless serving is stopping)."""
        if self._accepting and not self._stop_requested():
            self._relisten = self.loop.create_task(self._listen())

    def _unlisten(self) -> None:
        relisten, self._relisten = self._relisten, None
        if relisten is not None:
            relisten.cancel()  # an admission pause ended just as serving stops
        retry, self._retry = self._retry, None
        if retry is not None:
            retry.cancel()
        listening, self._listening = self._listening, []
        for item in listening:
            if isinstance(item, int):
                self.loop.remove_reader(item)
            else:
                item.close()

    def _fallback_accept(self, sock: socket.socket) -> None:
        server = self.server
        server._portico_ready = sock if server._portico_listeners_extra() else None
        server._handle_request_noblock()

    # -- connections -----------------------------------------------------

    def _new_stream(self) -> AsyncStream:
        return AsyncStream(self.loop, self, self.limit)

    def stream_made(self, stream: AsyncStream) -> None:
        """A connection accepted by the loop: verify, then start its handler."""
        self.streams.add(stream)
        if stream.client_address is not None:  # adopted: verified already
            self.start(stream, stream.client_address)
            return
        address = stream.client_address = plain_peer_address(
            stream.transport.get_extra_info("peername")
        )
        if self._limits is not None:
            stream._clock = ConnectionClock(self._limits)
        self.admission.admit(stream, address)
        if not self._listening_gated and self.server._portico_admission is not None:
            self._switch_accept_path()

    def _begin(self, stream: AsyncStream, address: Any) -> None:
        """An admitted connection: read its PROXY header if one comes first, then serve it."""
        if self.server.proxy_protocol is not None:
            self._read_proxy_header(stream, address)
            return
        self._serve_stream(stream, address)

    def _serve_stream(self, stream: AsyncStream, address: Any) -> None:
        server = self.server
        try:
            if self._verify and not server.verify_request(stream, address):
                self._close(stream)
                return
            if self._process:
                server.process_request(stream, address)
            else:
                self.start(stream, address)
        except Exception:
            server.handle_error(stream, address)
            self._close(stream)

    def _read_proxy_header(self, stream: AsyncStream, peer: Any) -> None:
        """Read the PROXY header from the stream's first bytes, then serve it.

        As on the other engines (``portico.server.proxy``): only peers in
        ``proxy_allow``, within ``proxy_header_timeout``, a well-formed
        header; anything else is logged and closed before a handler exists.
        """
        server = self.server
        if not proxy.is_trusted(peer, server.proxy_allow):
            proxy.dropped(peer, "not an allowed proxy (proxy_allow)")
            stream.transport.close()
            return
        timeout = server.proxy_header_timeout
        timer = None
        if timeout is not None:
            timer = self.loop.call_later(timeout, self._proxy_header_late, stream, peer)

        def arrived(stream: AsyncStream) -> None:
            try:
                header = parse(stream.unread(), versions=server.proxy_protocol)
            except ProxyProtocolError as exc:
                header = None
                reason: str | None = f"bad PROXY header: {exc}"
            else:
                reason = "ended before its PROXY header" if stream.eof_seen else None
            if header is None and reason is None:
                return  # more to come
            stream._before_handler = None
            if timer is not None:
                timer.cancel()
            if header is None:
                proxy.dropped(peer, str(reason))
                stream.transport.close()
                return
            stream.skip(header.length)
            stream.proxy_header = header
            address = proxy.original_address(header, stream, peer)
            stream.client_address = address
            with proxy.serving(header):  # the handler's task copies this context
                self._serve_stream(stream, address)

        stream._before_handler = arrived

    def _proxy_header_late(self, stream: AsyncStream, peer: Any) -> None:
        if stream._before_handler is not None:
            stream._before_handler = None
            proxy.dropped(peer, "no PROXY header in time")
            stream.transport.close()

    def stream_lost(self, stream: AsyncStream) -> None:
        self.streams.discard(stream)
        self.server._portico_release(stream)  # however it ended: its admission slot is free
        if self.admission.paused:
            # Paused for want of room (the own accept path counts sockets not yet
            # admitted, so the server need not have been full): see if there is room now.
            self.admission.slot_freed()
        elif self._listening_gated:
            self._switch_accept_path()
        if not self.streams:
            self._recheck_drain()

    def _recheck_drain(self) -> None:
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def datagram(self, data: bytes, reply: DatagramReply, address: Any) -> None:
        server = self.server
        limit = server.max_packet_size
        if len(data) > limit:  # the loop reads whole datagrams: check them here
            server.datagrams_oversize += 1
            oversize.record(server, address, limit)
            if server.oversize_datagrams == "drop":
                return
            data = data[:limit]
        request = (data, reply)
        try:
            if self._verify and not server.verify_request(request, address):
                self._close(request)
                return
            if self._process:
                server.process_request(request, address)
            else:
                self.start(request, address)
        except Exception:
            server.handle_error(request, address)
            self._close(request)

    def start(self, request: Any, client_address: Any) -> HandlerTask:
        """Build the handler and run it until it first waits."""
        server = self.server
        server._portico_count().handed_over()
        handler = server.RequestHandlerClass(request, client_address, server)
        task = HandlerTask(self.loop, self, handler, request, client_address)
        task.started = time.monotonic()
        if not self.datagram_server:
            request._task = task
        task.step()
        if not task._done:
            self.tasks.add(task)
        return task

    def task_failed(self, task: HandlerTask) -> None:
        self.server.handle_error(task.request, task.client_address)

    def task_done(self, task: HandlerTask) -> None:
        self.completed += 1
        request = task.request
        if isinstance(request, tuple):  # a datagram and its reply
            traffic = len(request[0]), request[1].bytes_out
        else:
            traffic = request.bytes_in, request.bytes_out
        self.server._portico_count().finished(time.monotonic() - task.started, *traffic)
        self.tasks.discard(task)
        try:
            if task.handler._portico_plain:
                task.handler._portico_after()
        except Exception:
            self.server.handle_error(task.request, task.client_address)
        finally:
            self._close(task.request)
            if not self.tasks:
                self._recheck_drain()

    def _close(self, request: Any) -> None:
        if self._shutdown:
            self.server.shutdown_request(request)
        elif not self.datagram_server:
            request.close()

    # -- requests from get_request() (handle_request(), the fallback accept path) --

    def adopt(self, request: Any, client_address: Any) -> None:
        """Run a request that get_request() returned: an accepted socket, or a datagram."""
        loop = self.loop
        if self.datagram_server:
            data, sock = request
            reply = DatagramReply(sock.sendto, client_address)
            self._run_here_or_there(lambda: self.start((data, reply), client_address))
            return

        def protocol() -> AsyncStream:
            return AsyncStream(loop, self, self.limit, client_address)

        # Not counted against the admission limits: handle_request() serves one at a time.
        self.server._portico_release(request)

        if self._runner == threading.get_ident():
            self.keep(loop.create_task(loop.connect_accepted_socket(protocol, sock=request)))
        else:
            self._run_here(self._adopt_stream(protocol, request))

    async def _adopt_stream(self, protocol: Callable[[], AsyncStream], sock: Any) -> None:
        _, stream = await self.loop.connect_accepted_socket(protocol, sock=sock)
        task = stream._task
        if task is not None and not task._done:
            await self._until_done(task)

    def _run_here_or_there(self, start: Callable[[], HandlerTask]) -> None:
        if self._runner == threading.get_ident():
            start()
            return

        started: list[HandlerTask] = []

        async def run() -> None:
            # Started by a callback, not by this Task: a handler task runs outside any Task.
            self.loop.call_soon(lambda: started.append(start()))
            await asyncio.sleep(0)
            await self._until_done(started[0])

        self._run_here(run())

    async def _until_done(self, task: HandlerTask) -> None:
        while not task._done:
            self._drained = self.loop.create_future()
            await self._drained

    def _run_here(self, coro: Any) -> None:
        with self._run_lock:
            self._runner = threading.get_ident()
            try:
                self.loop.run_until_complete(coro)
            finally:
                self._runner = None

    # -- stopping --------------------------------------------------------

    def finish_in_flight(self) -> None:
        """Run the loop until the connections in flight end (or close() says stop).

        Connections whose handler has finished count until they are closed
        (what they wrote is sent first), unless server_close() was called.
        """
        with self._run_lock:
            if self._closed or not self._in_flight():
                return
            self._runner = threading.get_ident()
            try:
                self.loop.run_until_complete(self._until_drained())
            finally:
                self._runner = None

    def _in_flight(self) -> bool:
        return bool(self.tasks or (self.streams and not self._closing))

    async def _until_drained(self) -> None:
        self._draining = True
        try:
            while self._in_flight():
                if self._cancelling:
                    self._cancel_all()
                self._drained = self.loop.create_future()
                await self._drained
        finally:
            self._draining = False

    def _cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()

    def _stop_from_elsewhere(self, wait: bool) -> None:
        """In the loop's thread: server_close() asked from another one."""
        self._unlisten()
        if not wait:
            self._cancelling = True
            self._cancel_all()
        self._recheck_drain()  # closing connections no longer count
        self._end_accept_loop()  # server_close() takes over from here

    def drain(self, deadline: float | None = None) -> bool:
        """Run the loop in this thread until nothing is in flight, or ``deadline``.

        While another thread runs the loop (serve_forever() finishing the
        connections in flight), wait for it first.  True if nothing is left.
        """
        if self._closed:
            return True
        if self._runner == threading.get_ident():
            return not self._in_flight()  # from a handler: it cannot wait for itself
        remaining = _remaining(deadline)
        if not self._run_lock.acquire(timeout=-1 if remaining is None else remaining):
            return False
        try:
            if self._closed or not self._in_flight():
                return True
            self._runner = threading.get_ident()
            try:
                until = asyncio.wait_for(self._until_drained(), _remaining(deadline))
                self.loop.run_until_complete(until)
            except asyncio.TimeoutError:
                return False
            finally:
                self._runner = None
            return True
        finally:
            self._run_lock.release()

    def close(self, *, wait: bool = True) -> None:
        """Stop accepting, finish or cancel the handlers in flight, close the loop."""
        if self._closed:
            return
        self._closing = True
        me = threading.get_ident()
        if self._runner == me:
            # server_close() from a handler: the loop runs below us; cancel, stop accepting.
            self._unlisten()
            if not wait:
                self._cancelling = True
                self._cancel_all()
            return
        if self._runner is not None:
            try:
                self.loop.call_soon_threadsafe(self._stop_from_elsewhere, wait)
            except RuntimeError:  # closed meanwhile
                pass
        with self._run_lock:
            if self._closed:
                return
            self._closed = True
            self._finish_here(wait)

    def _finish_here(self, wait: bool) -> None:
        loop = self.loop
        self._runner = threading.get_ident()
        try:
            self._unlisten()
            self.admission.close()
            if not wait:
                self._cancelling = True
            if self.tasks:
                loop.run_until_complete(self._until_drained())
            for stream in list(self.streams):
                stream.abort()
            # Let the transports and listeners finish closing.
            for _ in range(3):
                loop.run_until_complete(asyncio.sleep(0))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            self._runner = None
            loop.close()

    def statistics(self) -> AsyncStatistics:
        loop_class = type(self.loop)
        return AsyncStatistics(
            engine=self.name,
            in_flight=len(self.tasks),
            completed=self.completed,
            connections=len(self.streams),
            loop=f"{loop_class.__module__}.{loop_class.__qualname__}",
        )


if TYPE_CHECKING:
    _ServerBase = BaseServer
else:
    _ServerBase = object


def _tls_arguments(server: Any) -> dict[str, Any]:
    """TLS for the loop's listeners, when the server has a context: asyncio runs it.

    The handshake runs on the loop, bounded by ``tls_handshake_timeout``;
    the context follows ``reload_tls()``.  A handler finds the session with
    ``self.request.transport.get_extra_info("ssl_object")``.
    """
    if getattr(server, "ssl_context", None) is None:
        return {}
    if server.proxy_protocol is not None:
        raise ConfigurationError(
            "the async engine cannot yet read a PROXY header before TLS: use the event "
            "engine (or threads, pool) for TLS behind a proxy that sends one"
        )
    from portico.tls.serve import following_reloads  # noqa: PLC0415 (imports ssl)

    return {
        "ssl": following_reloads(server),
        "ssl_handshake_timeout": server.tls_handshake_timeout,
    }


def _check_async_handler(handler: Any) -> None:
    if isinstance(handler, type) and issubclass(handler, AsyncBaseRequestHandler):
        return
    name = getattr(handler, "__name__", repr(handler))
    raise ConfigurationError(
        f"{name} is not an async handler: the async engine runs subclasses of "
        "portico.engines.AsyncStreamRequestHandler (or AsyncDatagramRequestHandler) with "
        "async def handle(); serve a blocking handler with --engine event (or threads, pool)"
    )


class AsyncMixIn(Protected, _ServerBase):
    """Mix-in class to run ``async def handle()`` handlers on an asyncio event loop.

    The handler class must derive from
    :class:`~portico.engines.aio_handlers.AsyncBaseRequestHandler`
    (``AsyncStreamRequestHandler``, ``AsyncDatagramRequestHandler``);
    anything else is refused with ConfigurationError when the server is
    built.  ``use_uvloop`` (default True) runs uvloop's loop when uvloop is
    installed; ``read_limit`` bounds what a connection buffers unread before
    reading pauses (twice this, as asyncio's ``limit``).  ``block_on_close``
    means what it means for ``ThreadingMixIn``.  ``daemon_threads`` is
    accepted and ignored: the engine starts no thread.
    """

    use_uvloop = True
    read_limit = DEFAULT_LIMIT
    block_on_close = True
    daemon_threads = False

    _portico_async = True
    # Its requests run on a loop of the serving thread: drain() must run there too.
    _portico_drain_in_serving_thread = True
    _portico_async_engine: AsyncEngine | None = None

    def __init__(
        self, server_address: Any, RequestHandlerClass: Any, *args: Any, **kwargs: Any
    ) -> None:
        _check_async_handler(RequestHandlerClass)
        super().__init__(server_address, RequestHandlerClass, *args, **kwargs)

    @property
    def async_engine(self) -> AsyncEngine:
        """The engine, with its loop (created on first use)."""
        return created_once(self, "_portico_async_engine", lambda: AsyncEngine(self))

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The server's event loop (for ``call_soon_threadsafe`` and the like)."""
        return self.async_engine.loop

    def _portico_engine_statistics(self) -> AsyncStatistics:
        """The engine's snapshot, as ``statistics().engine`` (its fields read through too)."""
        return self.async_engine.statistics()

    def serve_forever(self, poll_interval: float | None = 0.5) -> None:
        engine = self.async_engine
        try:
            super().serve_forever(poll_interval)
            if self.block_on_close:
                engine.finish_in_flight()
        finally:
            if engine._closing:  # server_close() was called by a handler meanwhile
                engine.close(wait=self.block_on_close)

    def _portico_serve(self, poll_interval: float | None) -> None:
        self._portico_start_admission()
        engine = self.async_engine
        wakeup = Wakeup()
        self._portico_wakeup = wakeup
        try:
            with signals_wake(wakeup), engine._run_lock:
                engine.serve(wakeup, poll_interval)
        finally:
            self._portico_wakeup = None
            wakeup.close()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start the handler on the loop; it runs until it first waits.

        ``request`` is a connection the loop accepted, a datagram, or (from
        ``handle_request()`` and an overridden ``get_request()``) an accepted
        socket, which is handed to the loop first.
        """
        engine = self.async_engine
        if (isinstance(request, AsyncStream) and request.transport is not None) or (
            isinstance(request, tuple) and isinstance(request[1], DatagramReply)
        ):
            engine.start(request, client_address)
        else:
            engine.adopt(request, client_address)

    def server_close(self) -> None:
        super().server_close()
        engine = self._portico_async_engine
        if engine is not None:
            engine.close(wait=self.block_on_close)

    def _portico_slot_freed(self) -> None:
        engine = self.async_engine
        if engine._runner == threading.get_ident():
            engine.admission.slot_freed()
        elif not engine.loop.is_closed():
            engine.loop.call_soon_threadsafe(engine.admission.slot_freed)

    def _portico_wait_in_flight(self, deadline: float | None) -> bool:
        engine = self._portico_async_engine
        return engine is None or engine.drain(deadline)

    def _portico_force_in_flight(self) -> None:
        super()._portico_force_in_flight()
        engine = self._portico_async_engine
        if engine is not None:
            engine.close(wait=False)


class AsyncTCPServer(AsyncMixIn, TCPServer):
    pass


class AsyncUDPServer(AsyncMixIn, UDPServer):
    pass


if hasattr(socket, "AF_UNIX"):
    from portico.server.inet import UnixDatagramServer, UnixStreamServer

    __all__ += ["AsyncUnixDatagramServer", "AsyncUnixStreamServer"]

    class AsyncUnixStreamServer(AsyncMixIn, UnixStreamServer):
        pass

    class AsyncUnixDatagramServer(AsyncMixIn, UnixDatagramServer):
        pass


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
