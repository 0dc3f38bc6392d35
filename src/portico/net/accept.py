"""What to do when ``accept()`` (or a datagram ``recvfrom()``) fails.

The policy is data: each errno belongs to one named set, and the set decides
the action.  Capacity errors mean the process or the system ran out of
something (descriptors, buffers, memory) that will come back once other
connections close, so the server pauses accepting, backing off
exponentially, instead of spinning on a listener that stays readable.
Fatal errors mean the listener itself is broken; retrying cannot help.
Everything else concerns one failed connection and is simply retried.
"""

from __future__ import annotations

import collections
import enum
import errno
import time

__all__ = [
    "CAPACITY_ERRNOS",
    "FATAL_ERRNOS",
    "AcceptAction",
    "AcceptBackoff",
    "classify_accept_error",
]

CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
FATAL_ERRNOS = frozenset({errno.EBADF, errno.EINVAL, errno.ENOTSOCK, errno.EOPNOTSUPP})


class AcceptAction(enum.Enum):
    """The three answers to a failed accept."""

    RETRY = "retry"
    BACK_OFF = "back off"
    STOP = "stop"


def classify_accept_error(exc: OSError) -> AcceptAction:
    """Sort one accept error into its action by errno.

    Errors without an errno (an ``ssl.SSLError`` raised by a ``get_request``
    that wraps sockets, say) concern one connection and are retried.
    """
    if exc.errno in CAPACITY_ERRNOS:
        return AcceptAction.BACK_OFF
    if exc.errno in FATAL_ERRNOS:
        return AcceptAction.STOP
    return AcceptAction.RETRY


class AcceptBackoff:
    """Exponential back-off with a ceiling, and a count of what caused it.

    ``pause()`` returns the next delay (doubling from ``initial`` up to
    ``maximum``); ``recover()`` resets it once an accept succeeds again and
    returns how many errors the pause absorbed.
    """

    def __init__(self, initial: float = 0.01, maximum: float = 1.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.delay = 0.0
        self.resume_at = 0.0  # time.monotonic() when the current pause ends
        self.errors_in_pause = 0
        self.counts: collections.Counter[str] = collections.Counter()

    @property
    def paused(self) -> bool:
        return self.delay > 0.0

    def record(self, exc: OSError) -> None:
        self.counts[errno.errorcode.get(exc.errno or 0, "unknown")] += 1

    def pause(self) -> float:
        self.delay = min(self.maximum, self.delay * 2 if self.delay else self.initial)
        self.resume_at = time.monotonic() + self.delay
        self.errors_in_pause += 1
        return self.delay

    def remaining(self) -> float:
        """Seconds until the current pause ends (0 when not paused)."""
        return max(0.0, self.resume_at - time.monotonic()) if self.paused else 0.0

    def recover(self) -> int:
        absorbed = self.errors_in_pause
        self.delay = 0.0
        self.errors_in_pause = 0
        return absorbed
