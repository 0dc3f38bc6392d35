"""Per-connection time limits, enforced where a handler waits on its client.

A :class:`GuardedSocket` stands between a handler (its ``rfile``, ``wfile``,
``recv``, ``sendall``) and the connected socket.  Before each wait it sets
the socket's timeout to the nearest of the limits that apply, and when the
wait times out it raises :class:`~portico.errors.ConnectionTimeoutError` naming
the limit.  It works on any engine's socket (the event engine's cooperative
one too: its waits honour the timeout) and under TLS (it sits below it).

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

The handler's own timeout (``StreamRequestHandler.timeout``, or
``settimeout()``) still applies and, when it is the nearest, raises the
plain ``TimeoutError`` it always did.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from portico.errors import ConnectionTimeoutError
from portico.net.streams import makefile

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = ["ConnectionLimits", "GuardedSocket"]

_OWN = "own"  # the handler's own timeout: a plain TimeoutError


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
        return any(
            value is not None
            for value in (self.first_byte, self.idle, self.deadline, self.min_rate, self.send)
        )


class GuardedSocket:
    """A connected socket whose waits are bounded by :class:`ConnectionLimits`."""

    def __init__(self, raw: Any, limits: ConnectionLimits) -> None:
        self.raw = raw
        self.limits = limits
        self.started = time.monotonic()
        self._own_timeout: float | None = raw.gettimeout()
        self._received_any = False
        self._window_start: float | None = None
        self._window_bytes = 0
        self._io_refs = 0
        self._applied: float | None = -1.0  # the timeout last set on raw: none yet

    # -- the handler's own timeout -------------------------------------------

    def settimeout(self, value: float | None) -> None:
        self._own_timeout = value

    def gettimeout(self) -> float | None:
        return self._own_timeout

    def setblocking(self, flag: bool) -> None:
        self._own_timeout = None if flag else 0.0

    # -- receiving -------------------------------------------------------------

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0, /) -> int:
        received: int = self._wait_for(
            self._receive_bound(), self.raw.recv_into, buffer, nbytes, flags
        )
        self._account(received)
        return received

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        data: bytes = self._wait_for(self._receive_bound(), self.raw.recv, bufsize, flags)
        self._account(len(data))
        return data

    def _receive_bound(self) -> tuple[float | None, str]:
        """The nearest limit on this wait for the client's bytes: (seconds, its name)."""
        limits = self.limits
        seconds, name = limits.idle, "idle_timeout"
        if (limits.first_byte is not None and not self._received_any) or self._trickling(limits):
            now = time.monotonic()
            if limits.first_byte is not None and not self._received_any:
                left = self.started + limits.first_byte - now
                if seconds is None or left < seconds:
                    seconds, name = left, "first_byte_timeout"
            if self._trickling(limits):
                assert self._window_start is not None
                left = self._window_start + limits.rate_window - now
                if seconds is None or left < seconds:
                    seconds, name = left, "min_receive_rate"
        return self._nearest(seconds, name)

    def _trickling(self, limits: ConnectionLimits) -> bool:
        """Bytes started coming, and fewer than the rate asks for the window so far."""
        if limits.min_rate is None or self._window_start is None:
            return False
        return self._window_bytes < limits.min_rate * limits.rate_window

    def _account(self, received: int) -> None:
        now = time.monotonic()
        if received:
            self._received_any = True
        limits = self.limits
        if limits.min_rate is None or not received:
            return
        if self._window_start is None:
            self._window_start, self._window_bytes = now, 0
        self._window_bytes += received
        if now - self._window_start >= limits.rate_window:
            if self._window_bytes < limits.min_rate * limits.rate_window:
                raise _too_slow(limits)
            self._window_start, self._window_bytes = now, 0

    # -- sending ----------------------------------------------------------------

    def send(self, data: ReadableBuffer, flags: int = 0, /) -> int:
        sent: int = self._wait_for(self._send_bound(), self.raw.send, data, flags)
        self._window_start = None  # a reply: the next request's bytes start a new window
        return sent

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        self._wait_for(self._send_bound(), self.raw.sendall, data, flags)
        self._window_start = None

    def _send_bound(self) -> tuple[float | None, str]:
        return self._nearest(self.limits.send, "send_timeout")

    # -- waiting ------------------------------------------------------------------

    def _nearest(self, seconds: float | None, name: str) -> tuple[float | None, str]:
        """The nearer of (seconds, name), the connection deadline and the handler's own."""
        if self.limits.deadline is not None:
            left = self.started + self.limits.deadline - time.monotonic()
            if seconds is None or left < seconds:
                seconds, name = left, "connection_timeout"
        own = self._own_timeout
        if own is not None and (seconds is None or own < seconds):
            seconds, name = own, _OWN
        if seconds is None:
            return None, _OWN
        return max(seconds, 0.0), name

    def _wait_for(self, bound: tuple[float | None, str], call: Any, *args: Any) -> Any:
        """``call(*args)`` with the socket's timeout set to the nearest limit's remaining time.

        The timeout applied is rounded down to a coarse grid (powers of two
        of 10 ms), so that a countdown across many calls sets the same
        value again and costs no system call; a wait that ends on the coarse
        timeout before the limit looks again and goes on waiting.
        """
        seconds, name = bound
        if seconds is None or (seconds == 0.0 and name == _OWN):
            self._apply(seconds)  # blocking, or the handler's own non-blocking mode
            return call(*args)
        expires = time.monotonic() + seconds
        while True:
            remaining = expires - time.monotonic()
            if remaining <= 0.0:
                raise TimeoutError("timed out") if name == _OWN else _expired(name, self.limits)
            applied = self._apply_at_most(remaining)
            try:
                return call(*args)
            except TimeoutError:
                if applied >= remaining:
                    if name == _OWN:
                        raise
                    raise _expired(name, self.limits) from None

    def _apply(self, timeout: float | None) -> None:
        if timeout != self._applied:
            self.raw.settimeout(timeout)
            self._applied = timeout

    def _apply_at_most(self, remaining: float) -> float:
        """Set a timeout no longer than ``remaining``; keep the one set if it is close enough.

        A timeout shorter than needed only makes the wait look again (a
        loop pass), one longer would fire a limit late; so the one set is
        lowered when it is too long, raised when it is far too short (an
        eighth), and otherwise left alone: no system call per wait.
        """
        applied = self._applied
        if applied is None or applied < 0 or applied > remaining or applied < remaining / 8:
            applied = _coarse(remaining)
            self.raw.settimeout(applied)
            self._applied = applied
        return applied

    # -- the rest of a socket ----------------------------------------------------

    def makefile(self, mode: str = "r", buffering: int | None = None, **text: Any) -> Any:
        return makefile(self, mode, buffering, **text)

    def _decref_socketios(self) -> None:
        self._io_refs -= 1

    def close(self) -> None:
        """The handler is done with it; the server closes the socket itself."""

    def __getattr__(self, name: str) -> Any:
        # fileno, shutdown, setsockopt, getpeername, family, ...
        return getattr(self.raw, name)


_GRID = 0.01  # seconds: the finest timeout step


def _coarse(seconds: float) -> float:
    """``seconds`` rounded down to 10 ms times a power of two (exact below 20 ms)."""
    if seconds < 2 * _GRID:
        return seconds
    return float(_GRID * 2 ** math.floor(math.log2(seconds / _GRID)))


def _too_slow(limits: ConnectionLimits) -> ConnectionTimeoutError:
    return ConnectionTimeoutError(
        "min_receive_rate",
        f"fewer than {limits.min_rate:g} bytes per second over {limits.rate_window:g} s",
    )


def _expired(name: str, limits: ConnectionLimits) -> ConnectionTimeoutError:
    if name == "min_receive_rate":
        return _too_slow(limits)
    if name == "first_byte_timeout":
        return ConnectionTimeoutError(name, f"nothing received within {limits.first_byte:g} s")
    if name == "idle_timeout":
        return ConnectionTimeoutError(name, f"idle for {limits.idle:g} s")
    if name == "connection_timeout":
        return ConnectionTimeoutError(name, f"open longer than {limits.deadline:g} s")
    return ConnectionTimeoutError(name, f"did not take its replies for {limits.send:g} s")
