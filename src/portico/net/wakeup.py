"""A wake-up descriptor that lets another thread (or a signal handler) end a select().

This is what makes ``shutdown()`` immediate: the serving loop selects on the
wake-up reader beside its listeners, so a byte written here ends the wait at
once instead of after the next poll interval.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator

__all__ = ["Wakeup", "signals_wake"]


class Wakeup:
    """A socket pair: ``set()`` from anywhere, the loop selects on ``fileno()``."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def fileno(self) -> int:
        return self._reader.fileno()

    def writer_fileno(self) -> int:
        return self._writer.fileno()

    def set(self) -> None:
        """Wake the loop; safe from any thread, a signal handler, or after close."""
        try:
            self._writer.send(b"\0")
        except OSError:
            # Full (a wake-up is already pending) or closed (the loop is gone):
            # either way there is nothing left to wake.
            pass

    def drain(self) -> None:
        try:
            while self._reader.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


@contextlib.contextmanager
def signals_wake(wakeup: Wakeup) -> Iterator[None]:
    """While the main thread waits in select(), let any signal wake it.

    Python runs signal handlers in the main thread, but the kernel may deliver
    the signal to any thread; the main thread then sleeps on in select() until
    its timeout.  Pointing ``signal.set_wakeup_fd`` at the wake-up socket ends
    the wait at once.  Only the main thread may do this, and only when nobody
    else (an asyncio loop, say) already owns the wake-up fd.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    ours = wakeup.writer_fileno()
    previous = signal.set_wakeup_fd(ours, warn_on_full_buffer=False)
    if previous != -1:
        signal.set_wakeup_fd(previous)  # theirs: leave it alone
        yield
        return
    try:
        yield
    finally:
        current = signal.set_wakeup_fd(-1)
        if current != ours:
            signal.set_wakeup_fd(current)  # replaced while we served: keep the new owner
