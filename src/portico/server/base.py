"""BaseServer: the stdlib contract, served by a loop that wakes up instead of polling.

The hooks, their order and their meaning are those of the standard library's
``socketserver.BaseServer``.  What differs is underneath them:

* ``shutdown()`` wakes the serving loop through a wake-up descriptor, so it
  returns at once rather than after up to ``poll_interval`` seconds; called
  from the serving thread (a handler of a serial server, a signal handler),
  or before ``serve_forever()`` ever ran, it returns instead of deadlocking.
* a failed accept is sorted by :mod:`portico.net.accept`: capacity errors
  pause accepting with exponential back-off instead of spinning; a broken
  listener stops ``serve_forever()`` with :class:`~portico.errors.ListenerError`.
* ``handle_error()`` logs to the ``portico.error`` logger instead of printing.
* an accept gate lets a bounded engine push back: after each request it hands
  over, the serving loop asks ``_portico_can_accept()`` (always True here);
  on False it stops accepting until the engine wakes it (see ``_AcceptLoop``).
* admission limits (:mod:`portico.server.admission`: connections open at
  once, per client, accepted per second) are counted here, for the server
  classes that set them; ``handle_overload()`` turns a connection away.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import selectors
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from portico.errors import ConnectionLimitError, ListenerError, stops_the_process
from portico.net.accept import AcceptAction, AcceptBackoff, classify_accept_error
from portico.net.addresses import format_address
from portico.net.context import current
from portico.net.wakeup import Wakeup, signals_wake
from portico.server.admission import Admission, AdmissionLimits
from portico.server.statistics import ServerCounters, ServerStatistics
from portico.server.throttle import Throttle

__all__ = ["BaseServer", "ServerState"]

# The stdlib prefers poll() where it exists: it has no FD_SETSIZE ceiling.
_ServerSelector: type[selectors.BaseSelector]
if hasattr(selectors, "PollSelector"):
    _ServerSelector = selectors.PollSelector
else:  # pragma: no cover - every POSIX system portico supports has poll()
    _ServerSelector = selectors.SelectSelector

server_log = logging.getLogger("portico.server")
error_log = logging.getLogger("portico.error")

# What the serving loop selects on: a file-like object and the listener it stands for
# (None means "the server itself": its fileno() and get_request(), as in the stdlib).
Source = tuple[Any, Any]


class ServerState(enum.Enum):
    """Where a server is in its life; see :meth:`BaseServer.drain`."""

    OPEN = "open"  # built; serving, or able to
    DRAINING = "draining"  # listeners closed; the requests in flight finish
    FORCED = "forced"  # the drain deadline passed: the connections left are being closed
    CLOSED = "closed"  # server_close() ran


class BaseServer:
    """Base class for server classes.

    Methods for the caller:

    - __init__(server_address, RequestHandlerClass)
    - serve_forever(poll_interval=0.5)
    - shutdown()
    - handle_request()  # if you do not use serve_forever()
    - fileno() -> int   # for selector

    Methods that may be overridden:

    - server_bind()
    - server_activate()
    - get_request() -> request, client_address
    - handle_timeout()
    - verify_request(request, client_address)
    - server_close()
    - process_request(request, client_address)
    - shutdown_request(request)
    - close_request(request)
    - service_actions()
    - handle_error()

    Methods for derived classes:

    - finish_request(request, client_address)

    Class variables that may be overridden by derived classes or
    instances:

    - timeout
    - address_family
    - socket_type
    - allow_reuse_address
    - allow_reuse_port

    Instance variables:

    - RequestHandlerClass
    - socket
    """

    timeout: float | None = None

    # Defaults at class level, so that a subclass whose __init__ skips ours
    # (the stdlib tolerates a few such) still finds them.
    _portico_serving_thread: int | None = None
    _portico_waiting_room: _WaitingRoom | None = None  # while serve_forever() runs
    _portico_wakeup: Wakeup | None = None
    _portico_ready: Any = None
    # True from the end of a serve_forever() loop until the next one starts:
    # a shutdown() then has nothing to stop, and must not leave a request
    # behind that would end the next serve_forever() at once.
    _portico_stopped: bool = False
    _portico_state = ServerState.OPEN
    _portico_requests: weakref.WeakSet[socket.socket] | None = None
    # Requests taken per readiness of a listener.  More than one only where an
    # engine made its listeners non-blocking, so that an empty queue ends the batch.
    _portico_accept_batch = 1
    # Counts the open connections against the admission limits, once serving
    # started with one set (see portico.server.admission).
    _portico_admission: Admission | None = None

    def __init__(self, server_address: Any, RequestHandlerClass: Callable[..., Any]) -> None:
        """Constructor.  May be extended, do not override."""
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        # Set while no serve_forever() runs, so shutdown() never waits for one
        # that was never started.
        self.__is_shut_down = threading.Event()
        self.__is_shut_down.set()
        self.__shutdown_request = False
        self._portico_accept = AcceptBackoff()
        self._portico_serving = threading.Event()

    def server_activate(self) -> None:
        """Called by constructor to activate the server.

        May be overridden.
        """

    def serve_forever(self, poll_interval: float | None = 0.5) -> None:
        """Handle one request at a time until shutdown.

        Polls for shutdown every poll_interval seconds: that is, calls
        service_actions() at least that often.  shutdown() itself does not
        wait for the poll: it wakes the loop at once.
        """
        # Record the serving thread first: a signal handler running in this
        # thread between these lines must see that it is the serving thread,
        # or its shutdown() would wait for an event only this thread can set.
        self._portico_serving_thread = threading.get_ident()
        self._portico_stopped = False
        self.__is_shut_down.clear()
        try:
            # A shutdown() that came before us must win: check only after
            # clearing the event, which is what that shutdown() looked at.
            if not self.__shutdown_request:
                try:
                    self._portico_serve(poll_interval)
                except (OSError, ValueError):
                    # drain() closed the listeners while the loop was setting up.
                    if not self.draining:
                        raise
        finally:
            self._portico_stopped = True
            self.__shutdown_request = False
            self._portico_serving_thread = None
            self._portico_serving.clear()
            self.__is_shut_down.set()

    def _portico_serve(self, poll_interval: float | None) -> None:
        self._portico_start_admission()
        wakeup = Wakeup()
        self._portico_wakeup = wakeup
        try:
            with signals_wake(wakeup), self._portico_new_selector() as selector:
                selector.register(wakeup, selectors.EVENT_READ)
                loop = _AcceptLoop(self, selector, poll_interval)
                self._portico_waiting_room = loop.room
                try:
                    self._portico_serving.set()
                    while not self.__shutdown_request:
                        ready = selector.select(loop.wait_time())
                        if self.__shutdown_request:
                            break
                        loop.dispatch(ready, wakeup)
                        self.service_actions()
                finally:
                    self._portico_waiting_room = None
                    loop.room.close_all()  # never served: their clients sent nothing yet
        finally:
            self._portico_wakeup = None
            wakeup.close()

    # -- the graceful stop -----------------------------------------------

    @property
    def state(self) -> ServerState:
        """OPEN, DRAINING, FORCED or CLOSED (see :meth:`drain`)."""
        return self._portico_state

    @property
    def draining(self) -> bool:
        """True once :meth:`drain` began: a handler's loop should finish its request and return."""
        return self._portico_state is not ServerState.OPEN

    def drain(self, timeout: float | None = None) -> bool:
        """Stop gracefully: no new connections, the ones in flight finish, then close.

        DRAINING: the serving loop stops and the listeners close at once, so
        a new connection is refused (not accepted and dropped later); handlers
        see ``self.server.draining``.  The requests in flight run on, for up
        to ``timeout`` seconds (None: as long as they take).  FORCED, if some
        are left then: their sockets are shut down (a handler waiting on one
        sees end of file or an error), asyncio and event tasks are cancelled,
        forked children are killed, and nothing waits for them any more
        (``block_on_close`` becomes false).  CLOSED: ``server_close()``.

        Returns True if everything finished in time.  Call it from any thread
        but a handler's; ``shutdown()`` and ``server_close()`` keep their
        stdlib meaning.
        """
        if self._portico_state is ServerState.CLOSED:
            return True
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        self._portico_state = ServerState.DRAINING
        self.__shutdown_request = True
        wakeup = self._portico_wakeup
        if wakeup is not None:
            wakeup.set()
        self._portico_take_queued()
        self._portico_close_listeners()
        server_log.info("draining: the listeners are closed; the requests in flight finish")
        # A serial server's request in flight is the serving loop itself.
        loop_stopped = True
        if self._portico_serving_thread not in (None, threading.get_ident()):
            loop_stopped = self.__is_shut_down.wait(_remaining(deadline))
        finished = loop_stopped and self._portico_wait_in_flight(deadline)
        if not finished:
            self._portico_state = ServerState.FORCED
            server_log.warning("drain deadline passed: closing the connections left")
            vars(self)["block_on_close"] = False  # on the instance, as a user may set it
            self._portico_force_in_flight()
        self.server_close()
        self._portico_state = ServerState.CLOSED
        self._portico_count().drain_seconds = time.monotonic() - started
        return finished

    def _portico_take_queued(self) -> None:
        """Before the listeners close: take what waits in them (a server with listeners)."""

    def _portico_close_listeners(self) -> None:
        """Close the listening sockets (a server with listeners overrides this)."""

    def _portico_wait_in_flight(self, deadline: float | None) -> bool:
        """Wait for the requests in flight, until ``deadline``; True if none is left.

        Here requests run in the serving loop, which has stopped by now.
        Engines override this.
        """
        return True

    def _portico_force_in_flight(self) -> None:
        """Past the deadline: make the requests left end; engines add to this."""
        for sock in list(self._portico_requests or ()):
            if sock.fileno() != -1:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _portico_shutdown_requested(self) -> bool:
        """Whether shutdown() asked the serving loop to stop (for engines with their own loop)."""
        return self.__shutdown_request

    def _portico_new_selector(self) -> selectors.BaseSelector:
        """The selector that serve_forever() waits on.

        An engine that runs its own event loop in the serving thread returns
        one whose ``select()`` also runs that loop's work (see
        :mod:`portico.engines.event`); the serving loop stays the same.
        """
        return _ServerSelector()

    def shutdown(self) -> None:
        """Stop the serve_forever loop and wait until it has stopped.

        Returns at once when called from the thread that runs serve_forever()
        (which then stops after the current request), when no serve_forever()
        is running, and when called again.  A shutdown() before the first
        serve_forever() stops that one as soon as it starts, as in the stdlib.
        """
        if self._portico_stopped and self._portico_serving_thread is None:
            return  # the loop already stopped: nothing to do
        self.__shutdown_request = True
        wakeup = self._portico_wakeup
        if wakeup is not None:
            wakeup.set()
        if self._portico_serving_thread == threading.get_ident():
            return
        self.__is_shut_down.wait()

    def service_actions(self) -> None:
        """Called by the serve_forever() loop.

        May be overridden by a subclass / Mixin to implement any code that
        needs to be run during the loop.
        """

    # How one request travels: handle_request() (or the serve_forever() loop)
    # waits for a readable listener; get_request() accepts (streams) or
    # receives (datagrams); verify_request() may refuse; process_request() is
    # where a mixin hands the work to a thread or a child process; and
    # finish_request() builds the handler, whose constructor does the rest.

    def handle_request(self) -> None:
        """Handle one request, possibly blocking.

        Respects self.timeout.
        """
        timeout = self.socket.gettimeout()  # type: ignore[attr-defined]
        if timeout is None:
            timeout = self.timeout
        elif self.timeout is not None:
            timeout = min(timeout, self.timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._portico_start_admission()
        # A capacity error paused accepting: wait the pause out (within the timeout)
        # rather than fail again at once, so a handle_request() loop does not spin.
        pause = self._portico_accept.remaining()
        if pause:
            if timeout is not None and pause >= timeout:
                time.sleep(timeout)
                return self.handle_timeout()
            time.sleep(pause)
            if timeout is not None:
                timeout = deadline - time.monotonic()  # type: ignore[operator]
        with _ServerSelector() as selector:
            for fileobj, listener in self._portico_sources():
                selector.register(fileobj, selectors.EVENT_READ, listener)
            while True:
                ready = selector.select(timeout)
                if ready:
                    self._portico_ready = ready[0][0].data
                    return self._handle_request_noblock()
                if deadline is not None:
                    timeout = deadline - time.monotonic()
                    if timeout < 0:
                        return self.handle_timeout()

    def _handle_request_noblock(self) -> None:
        """Handle one request, without blocking.

        I assume that selector.select() has returned that the socket is
        readable before this function was called, so there should be no risk of
        blocking in get_request().
        """
        self._portico_take_request()

    def _portico_take_request(self) -> bool:
        """Handle one request if there is one; False if a non-blocking listener had none."""
        try:
            request, client_address = self.get_request()  # type: ignore[attr-defined]
        except BlockingIOError:
            return False  # another process took it, or a batch emptied the queue
        except OSError as exc:
            self._portico_accept_failed(exc)
            return False
        if isinstance(request, socket.socket):
            # Remembered (weakly) so that a drain past its deadline can close it.
            requests = self._portico_requests
            if requests is None:
                requests = self._portico_requests = weakref.WeakSet()
            requests.add(request)
        if self._portico_accept.paused:
            self._portico_accept_recovered()
        if not self.verify_request(request, client_address):
            self.shutdown_request(request)
            return True
        admission = self._portico_admission
        if admission is not None:
            refused = admission.admit(request, client_address)
            if refused is not None:
                self._portico_turn_away(request, client_address, refused)
                return True
        room = self._portico_waiting_room
        timeout = (
            None if room is None else self._portico_first_byte_timeout(request, client_address)
        )
        if room is not None and timeout is not None:
            room.hold(request, client_address, timeout)
        else:
            self._portico_process(request, client_address)
        return True

    def _portico_process(self, request: Any, client_address: Any) -> None:
        """process_request(), with the stdlib's handling of its errors."""
        self._portico_count().handed_over()
        try:
            self.process_request(request, client_address)
        except BaseException as exc:
            if stops_the_process(exc):
                self.shutdown_request(request)
                raise
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    # -- admission -----------------------------------------------------------

    def _portico_admission_limits(self) -> AdmissionLimits | None:
        """The admission limits to count against, or None (here: none; a stream server has them)."""
        return None

    def _portico_start_admission(self) -> None:
        """Count against the limits set now; keep counting where they did not change."""
        limits = self._portico_admission_limits()
        current = self._portico_admission
        if limits is None or not limits.active:
            self._portico_admission = None
        elif current is None or current.limits != limits:
            self._portico_admission = Admission(limits)

    def _portico_admission_full(self) -> bool:
        """Whether a limit asks the serving loop to stop accepting for now."""
        admission = self._portico_admission
        return admission is not None and admission.limits.pauses and admission.full

    def _portico_accept_delay(self) -> float:
        """Seconds to stop accepting for, to keep to the accept rate (0.0: none)."""
        admission = self._portico_admission
        if admission is None or not admission.limits.pauses:
            return 0.0
        return admission.accept_delay()

    def _portico_release(self, request: Any) -> None:
        """``request`` ended: free its slot, and wake a loop that stopped accepting."""
        admission = self._portico_admission
        if admission is not None and admission.release(request):
            self._portico_slot_freed()

    def _portico_slot_freed(self) -> None:
        """A full server has a free slot again: the serving loop resumes accepting."""
        wakeup = self._portico_wakeup
        if wakeup is not None:
            wakeup.set()

    def _portico_turn_away(self, request: Any, client_address: Any, limit: str) -> None:
        try:
            self.handle_overload(request, client_address, limit)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def handle_overload(self, request: Any, client_address: Any, limit: str) -> None:
        """Called for a connection turned away by an admission limit; may be overridden.

        ``limit`` names it: ``max_connections``, ``max_connections_per_client``
        or ``max_accept_rate``.  The connection is closed afterwards.  This
        runs in the serving loop, so it must not block: a short reply fits
        the new socket's send buffer.  By default it logs (the first time at
        once, then at most one line every 10 s, with the count) and sends
        ``busy_reply`` if that is set (and the server does not serve TLS),
        without waiting.
        """
        admission = self._portico_admission
        throttle = self.__dict__.setdefault("_portico_overload_log", Throttle())
        if throttle.ready():
            server_log.warning(
                "connection from %s turned away: %s reached; %d turned away so far",
                format_address(client_address),
                limit,
                sum(admission.rejected.values()) if admission is not None else 1,
            )
        reply = getattr(self, "busy_reply", None)
        # Not over TLS: the client expects a handshake, and plain text would garble it.
        if reply and getattr(self, "ssl_context", None) is None:
            _send_without_waiting(request, reply)

    def _portico_first_byte_timeout(self, request: Any, client_address: Any) -> float | None:
        """Seconds the serving loop may hold ``request`` until its client sends something.

        None: hand it to the engine at once (the default).  A server whose
        clients speak first (TLS, the PROXY protocol) holds new connections
        in the serving loop's selector instead, so that one that never
        speaks costs a descriptor, not a thread, a pool slot or a fork.
        """
        return None

    def _portico_sent_nothing(self, client_address: Any) -> None:
        """A held connection's deadline passed before its client sent anything."""
        server_log.info(
            "connection from %s closed: it sent nothing in time", format_address(client_address)
        )

    def _portico_sources(self) -> list[Source]:
        """What to select on for new requests: by default the server's own fileno()."""
        return [(self, None)]

    def _portico_can_accept(self) -> bool:
        """The accept gate: may serve_forever() take another request now?

        Asked after each request the loop hands to process_request().  False
        stops accepting: the listeners leave the selector, so connections wait
        in the kernel backlog (datagrams in the socket buffer).  Whoever says
        False must call ``self._portico_wakeup.set()`` once the answer turns
        True; the loop then asks again and resumes.  A bounded engine
        overrides this; by default the server always accepts.
        """
        return True

    def _portico_accept_failed(self, exc: OSError) -> None:
        backoff = self._portico_accept
        backoff.record(exc)
        action = classify_accept_error(exc)
        if action is AcceptAction.RETRY:
            server_log.debug("accept failed, retrying: %s", exc)
        elif action is AcceptAction.BACK_OFF:
            first = not backoff.paused
            delay = backoff.pause()
            if first:
                server_log.warning(
                    "accepting paused: %s; retrying with back-off (%.3f s, doubling)",
                    exc.strerror or exc,
                    delay,
                )
        elif not self.__shutdown_request:
            server_log.error("listening socket failed: %s; serving stops", exc)
            raise ListenerError(
                exc.errno,
                f"the listening socket failed: {exc.strerror or exc}",
                hint="it was closed or is no longer listening; create a new server",
            ) from exc

    def _portico_accept_recovered(self) -> None:
        absorbed = self._portico_accept.recover()
        server_log.info("accepting again after %d failed attempts", absorbed)

    def handle_timeout(self) -> None:
        """Called if no new request arrives within self.timeout.

        Overridden by ForkingMixIn.
        """

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Verify the request.  May be overridden.

        Return True if we should proceed with this request.
        """
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        """Call finish_request.

        Overridden by ForkingMixIn and ThreadingMixIn.
        """
        self.finish_request(request, client_address)
        self.shutdown_request(request)

    def server_close(self) -> None:
        """Called to clean-up the server.

        May be overridden.
        """

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Finish one request by instantiating RequestHandlerClass.

        portico: timed and counted (see :meth:`statistics`).
        """
        started = time.monotonic()
        try:
            self._portico_handle(request, client_address)
        finally:
            connection = current.get()
            bytes_in, bytes_out = (0, 0) if connection is None else connection.traffic
            self._portico_count().finished(time.monotonic() - started, bytes_in, bytes_out)

    def _portico_handle(self, request: Any, client_address: Any) -> None:
        """What finish_request() does, untimed: a server class adds its layers here."""
        self._portico_run_handler(request, client_address)

    def _portico_run_handler(self, request: Any, client_address: Any) -> None:
        self.RequestHandlerClass(request, client_address, self)

    # -- statistics ------------------------------------------------------------

    def statistics(self) -> ServerStatistics:
        """A frozen snapshot of what the server counted (portico); see ServerStatistics."""
        admission = self._portico_admission
        return self._portico_count().snapshot(
            active=self._portico_active(),
            rejected=admission.rejected if admission is not None else {},
            accept_errors=self._portico_accept.counts,
            engine=self._portico_engine_statistics(),
        )

    def _portico_count(self) -> ServerCounters:
        """The server's counters, made on first use (also by a subclass that skips __init__)."""
        counters = self.__dict__.get("_portico_counters")
        if counters is None:
            with _counters_made:
                counters = self.__dict__.setdefault("_portico_counters", ServerCounters())
        return counters  # type: ignore[no-any-return]

    def _portico_active(self) -> int | None:
        """Requests in flight, where the counters cannot tell (None: accepted less finished)."""
        return None

    def _portico_engine_statistics(self) -> Any:
        """The engine's own snapshot (an engine mixin returns it)."""
        return None

    def shutdown_request(self, request: Any) -> None:
        """Called to shutdown and close an individual request."""
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """Called to clean up an individual request."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Handle an error gracefully.  May be overridden.

        Logs the exception being handled, with its traceback and the client
        address, to the ``portico.error`` logger; the server keeps serving.
        A client that went past a limit (:class:`ConnectionLimitError`) is
        one warning line, without a traceback: it is the client's doing.
        """
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionLimitError):
            self._portico_count().limit_fired(exc.limit)
            server_log.warning("connection from %s closed: %s", format_address(client_address), exc)
            return
        error_log.error(
            "Exception occurred during processing of request from %s",
            format_address(client_address),
            exc_info=True,
            extra={"client_address": client_address},
        )

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *args: object) -> None:
        self.server_close()


class _AcceptLoop:
    """The part of serve_forever() that decides what to select on and when.

    The listeners leave the selector for two reasons, and come back once
    neither holds:

    * accept back-off: a capacity error paused accepting.  The listeners stay
      readable, so selecting on them would spin; they come back when the
      back-off delay has passed.
    * the accept gate: after each request handed over, the server's
      ``_portico_can_accept()`` said False (a bounded engine is full).  The
      engine wakes the loop through the wake-up descriptor when it frees up;
      on every wake-up while gated, the loop asks again, and puts the
      listeners back when the answer is True.
    """

    def __init__(
        self, server: BaseServer, selector: selectors.BaseSelector, poll_interval: float | None
    ) -> None:
        self.server = server
        self.selector = selector
        self.poll_interval = poll_interval
        self.sources = server._portico_sources()
        self.resume_at: float | None = None
        self.gated = False
        self.watching = False
        self.room = _WaitingRoom(server, selector)
        self._watch()

    def _watch(self) -> None:
        if self.watching or self.gated or self.resume_at is not None:
            return
        for fileobj, listener in self.sources:
            self.selector.register(fileobj, selectors.EVENT_READ, listener)
        self.room.watch(True)
        self.watching = True

    def _unwatch(self) -> None:
        if not self.watching:
            return
        for fileobj, _ in self.sources:
            self.selector.unregister(fileobj)
        self.room.watch(False)  # a full engine takes no held request either
        self.watching = False

    def wait_time(self) -> float | None:
        now = time.monotonic()
        self.room.expire(now)
        wait = self.poll_interval
        if self.resume_at is not None:
            remaining = self.resume_at - now
            if remaining <= 0:
                self.resume_at = None
                self._watch()
                return 0.0
            wait = remaining if wait is None else min(remaining, wait)
        first = self.room.next_deadline()
        if first is not None:
            wait = max(0.0, first - now) if wait is None else max(0.0, min(wait, first - now))
        return wait

    def _open(self) -> bool:
        """The gate: the engine can take a request, and no admission limit is reached."""
        server = self.server
        return server._portico_can_accept() and not server._portico_admission_full()

    def _take(self, server: BaseServer) -> None:
        """Take one request, or up to a batch from a listener an engine made non-blocking."""
        server._handle_request_noblock()
        for _ in range(server._portico_accept_batch - 1):
            if server._portico_accept.paused or not self._open():
                return
            if server._portico_accept_delay() or not server._portico_take_request():
                return

    def _pause(self, delay: float) -> None:
        self.resume_at = time.monotonic() + delay
        self._unwatch()

    def dispatch(self, ready: list[tuple[selectors.SelectorKey, int]], wakeup: Wakeup) -> None:
        server = self.server
        for key, _ in ready:
            if key.fileobj is wakeup:
                # Drain first, then ask: a wake-up sent after the question stays pending.
                wakeup.drain()
                if self.gated and self._open():
                    self.gated = False
                    self._watch()
                continue
            if isinstance(key.data, _Held):
                self.room.release(key.data)
            else:
                server._portico_ready = key.data
                self._take(server)
            if server._portico_accept.paused:
                self._pause(server._portico_accept.delay)
                return
            if not self._open():
                self.gated = True
                self._unwatch()
                return
            delay = server._portico_accept_delay()
            if delay:
                self._pause(delay)
                return


class _Held:
    """A connection held until its client sends its first byte, or its deadline."""

    __slots__ = ("client_address", "deadline", "request")

    def __init__(self, request: Any, client_address: Any, deadline: float) -> None:
        self.request = request
        self.client_address = client_address
        self.deadline = deadline


class _WaitingRoom:
    """New connections whose clients must speak first, held in the serving loop's selector.

    A connection is handed to the engine (``process_request()``) once it is
    readable (its first bytes arrived, or the client closed), or closed
    when its deadline passes first, with a log line.  Held connections
    leave the selector while the listeners do (a full engine, a back-off).
    """

    def __init__(self, server: BaseServer, selector: selectors.BaseSelector) -> None:
        self.server = server
        self.selector = selector
        self.held: dict[int, _Held] = {}
        self.watching = True

    def hold(self, request: Any, client_address: Any, timeout: float) -> None:
        held = _Held(request, client_address, time.monotonic() + timeout)
        self.held[request.fileno()] = held
        if self.watching:
            self.selector.register(request, selectors.EVENT_READ, held)

    def release(self, held: _Held) -> None:
        self._forget(held)
        self.server._portico_process(held.request, held.client_address)

    def watch(self, on: bool) -> None:
        if on == self.watching:
            return
        self.watching = on
        for held in self.held.values():
            if on:
                self.selector.register(held.request, selectors.EVENT_READ, held)
            else:
                self.selector.unregister(held.request)

    def next_deadline(self) -> float | None:
        # Held in arrival order with one timeout each: the first is the earliest.
        return next((held.deadline for held in self.held.values()), None)

    def expire(self, now: float) -> None:
        while self.held:
            held = next(iter(self.held.values()))
            if held.deadline > now:
                return
            self._forget(held)
            self.server._portico_sent_nothing(held.client_address)
            self.server.shutdown_request(held.request)

    def close_all(self) -> None:
        for held in list(self.held.values()):
            self._forget(held)
            self.server.shutdown_request(held.request)

    def _forget(self, held: _Held) -> None:
        del self.held[held.request.fileno()]
        if self.watching:
            self.selector.unregister(held.request)


_counters_made = threading.Lock()


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _send_without_waiting(request: Any, data: bytes) -> None:
    """Send what fits now and no more: a socket with MSG_DONTWAIT, a transport as it buffers."""
    try:
        if isinstance(request, socket.socket):
            request.send(data, socket.MSG_DONTWAIT)
        else:
            request.write(data)  # an async engine's connection never blocks on write()
    except OSError:
        pass  # gone already, or its buffer is full: it is being turned away anyway
