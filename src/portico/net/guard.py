"""Per-connection time limits, enforced where a handler waits on its client.

A :class:`GuardedSocket` stands between a handler (its ``rfile``, ``wfile``,
``recv``, ``sendall``) and the connected socket.  It only notes, on each
call, what it waits for and since when: no system call of its own, no
socket timeout (with a timeout, CPython polls before every ``recv``).  A
watchdog thread per process looks at every guarded connection a few times a
second; when a limit has passed, it records which and shuts the socket
down, which ends the handler's wait at once on every engine (a thread's
``recv``, an event task's, a forked child's), and the guard raises
:class:`~portico.errors.ConnectionTimeoutError` naming the limit.

The limits (all optional, in seconds but the rate):

- ``first_byte``: from the start of the connection to the client's first byte;
- ``idle``: any one wait for the client's next bytes;
- ``deadline``: the whole connection;
- ``min_rate`` (bytes per second) over ``rate_window`` seconds: once bytes
  start coming, a window begins; if at its end fewer than ``min_rate *
  rate_window`` bytes arrived, the client is too slow (a slowloris trickle).
  A reply from the server ends the window: the next request starts afresh,
  and an idle client (no bytes at all) is the idle limit's business;
- ``send``: any one wait for the client to take the server's bytes (a
  client that never reads its replies).

A limit fires within a watchdog tick of its time (``TICK``, or a quarter of
the smallest limit).  The handler's own timeout (``StreamRequestHandler.
timeout``, ``settimeout()``) is the socket's, as in the stdlib, and raises
the plain ``TimeoutError`` it always did.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from portico.errors import ConnectionTimeoutError
from portico.net.streams import SocketWrapper

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = ["RECEIVING", "SENDING", "TICK", "ConnectionClock", "ConnectionLimits", "GuardedSocket"]

TICK = 0.25  # seconds between the watchdog's looks, at most
RECEIVING, SENDING = 1, 2  # what a connection waits for


@dataclass(frozen=True)
class ConnectionLimits:
    """The time limits of each connection; None turns one off."""

    first_byte: float | None = None
    idle: float | None = None
    deadline: float | None = None
    min_rate: float | None = None
    rate_window: float = 20.0
    send: float | None = None

    @property
    def active(self) -> bool:
        return any(value is not None for value in self._timeouts()) or self.min_rate is not None

    def _timeouts(self) -> tuple[float | None, ...]:
        return (self.first_byte, self.idle, self.deadline, self.send)

    @property
    def tick(self) -> float:
        """How often the watchdog must look for these limits to fire on time."""
        shortest = min(
            [value for value in self._timeouts() if value is not None]
            + ([self.rate_window] if self.min_rate is not None else []),
            default=TICK * 4,
        )
        return max(0.01, min(TICK, shortest / 4))


class ConnectionClock:
    """What the time limits of one connection look at: when it started, waits, bytes.

    The connection's owner notes each wait (:meth:`begin`, :meth:`end`),
    bytes received (:meth:`received`) and replies (:meth:`replied`); a
    watchdog asks :meth:`overdue` now and then, and :meth:`fire` records
    the limit that passed.  Shared by :class:`GuardedSocket` (blocking
    engines) and the async engine's connections.
    """

    __slots__ = (
        "_received_any",
        "_wait_started",
        "_waiting",
        "_window_bytes",
        "_window_start",
        "fired",
        "limits",
        "started",
    )

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.started = time.monotonic()
        self._received_any = False
        self._window_start: float | None = None
        self._window_bytes = 0
        self._waiting = 0  # RECEIVING or SENDING while a call waits; 0 otherwise
        self._wait_started = 0.0
        self.fired: ConnectionTimeoutError | None = None

    def begin(self, kind: int) -> None:
        """A wait for the client starts: RECEIVING its bytes, or SENDING to it."""
        self._wait_started = time.monotonic()
        self._waiting = kind

    def end(self) -> None:
        self._waiting = 0

    def received(self, count: int) -> ConnectionTimeoutError | None:
        """``count`` bytes arrived; the rate limit's error if a window ended too slow."""
        if not count:
            return None
        self._received_any = True
        limits = self.limits
        if limits.min_rate is None:
            return None
        now = time.monotonic()
        if self._window_start is None:
            self._window_start, self._window_bytes = now, 0
        self._window_bytes += count
        if now - self._window_start >= limits.rate_window:
            if self._window_bytes < limits.min_rate * limits.rate_window:
                return _too_slow(limits)
            self._window_start, self._window_bytes = now, 0
        return None

    def replied(self) -> None:
        """The server sent a reply: the next request's bytes start a new rate window."""
        self._window_start = None

    def fire(self, error: ConnectionTimeoutError) -> bool:
        """Record ``error`` as the limit that fired; False if one fired already."""
        if self.fired is not None:
            return False
        self.fired = error
        return True

    def overdue(self, now: float) -> ConnectionTimeoutError | None:
        """The limit that has passed at ``now``, if any (the watchdog asks)."""
        limits = self.limits
        if limits.deadline is not None and now - self.started >= limits.deadline:
            return ConnectionTimeoutError(
                "connection_timeout", f"open longer than {limits.deadline:g} s"
            )
        waited = now - self._wait_started
        if self._waiting == SENDING and limits.send is not None and waited >= limits.send:
            return ConnectionTimeoutError(
                "send_timeout", f"did not take its replies for {limits.send:g} s"
            )
        if self._waiting == RECEIVING:
            return self._receive_overdue(now, waited)
        return None

    def _receive_overdue(self, now: float, waited: float) -> ConnectionTimeoutError | None:
        limits = self.limits
        first_byte = limits.first_byte
        if first_byte is not None and not self._received_any and now - self.started >= first_byte:
            return ConnectionTimeoutError(
                "first_byte_timeout", f"nothing received within {first_byte:g} s"
            )
        if limits.idle is not None and waited >= limits.idle:
            return ConnectionTimeoutError("idle_timeout", f"idle for {limits.idle:g} s")
        if self._too_slow_at(now):
            return _too_slow(limits)
        return None

    def _too_slow_at(self, now: float) -> bool:
        """A trickle's window has ended with fewer bytes than the rate asks for."""
        limits, window = self.limits, self._window_start
        if limits.min_rate is None or window is None or now - window < limits.rate_window:
            return False
        return self._window_bytes < limits.min_rate * limits.rate_window


class GuardedSocket(SocketWrapper):
    """A connected socket whose waits are bounded by :class:`ConnectionLimits`."""

    def __init__(self, raw: Any, limits: ConnectionLimits) -> None:
        super().__init__(raw)
        self.limits = limits
        self.clock = ConnectionClock(limits)
        _watchdog().watch(self)

    # -- receiving -------------------------------------------------------------

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0, /) -> int:
        received: int = self._wait(RECEIVING, self.raw.recv_into, buffer, nbytes, flags)
        self._account(received)
        return received

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        data: bytes = self._wait(RECEIVING, self.raw.recv, bufsize, flags)
        self._account(len(data))
        return data

    def _account(self, received: int) -> None:
        too_slow = self.clock.received(received)
        if too_slow is not None:
            raise self._fire(too_slow)

    # -- sending ----------------------------------------------------------------

    def send(self, data: ReadableBuffer, flags: int = 0, /) -> int:
        sent: int = self._wait(SENDING, self.raw.send, data, flags)
        self.clock.replied()
        return sent

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        self._wait(SENDING, self.raw.sendall, data, flags)
        self.clock.replied()

    # -- waiting ------------------------------------------------------------------

    def _wait(self, kind: int, call: Any, *args: Any) -> Any:
        clock = self.clock
        if clock.fired is not None:
            raise clock.fired
        clock.begin(kind)
        try:
            result = call(*args)
        except OSError:
            if clock.fired is not None:  # the watchdog shut the socket down
                raise clock.fired from None
            raise
        finally:
            clock.end()
        if clock.fired is not None:  # end of file: what the shutdown looks like to recv
            raise clock.fired
        return result

    def _fire(self, error: ConnectionTimeoutError) -> ConnectionTimeoutError:
        """Record the limit that fired and end the connection's waits (any thread)."""
        if self.clock.fire(error):
            try:
                self.raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed already: nothing waits on it
        assert self.clock.fired is not None
        return self.clock.fired


class _Watchdog:
    """One thread per process that looks at every guarded connection, a few times a second."""

    def __init__(self) -> None:
        self._guards: weakref.WeakSet[GuardedSocket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._tick = TICK
        self._thread: threading.Thread | None = None

    def watch(self, guard: GuardedSocket) -> None:
        with self._lock:
            self._guards.add(guard)
            self._tick = min(self._tick, guard.limits.tick)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="portico-connection-limits", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self._tick)  # a fixed pace: this thread only looks at clocks
            now = time.monotonic()
            with self._lock:
                guards = list(self._guards)
            for guard in guards:
                if guard.clock.fired is None:
                    overdue = guard.clock.overdue(now)
                    if overdue is not None:
                        guard._fire(overdue)


_watchdogs: dict[int, _Watchdog] = {}


def _watchdog() -> _Watchdog:
    """This process's watchdog (a forked child starts its own: threads do not fork)."""
    pid = os.getpid()
    found = _watchdogs.get(pid)
    if found is None:
        _watchdogs.clear()
        found = _watchdogs[pid] = _Watchdog()
    return found


def _too_slow(limits: ConnectionLimits) -> ConnectionTimeoutError:
    return ConnectionTimeoutError(
        "min_receive_rate",
        f"fewer than {limits.min_rate:g} bytes per second over {limits.rate_window:g} s",
    )
