"""A wake-up descriptor that lets another thread (or a signal handler) end a select().

This is what makes ``shutdown()`` immediate: the serving loop selects on the
wake-up reader beside its listeners, so a byte written here ends the wait at
once instead of after the next poll interval.
"""

from __future__ import annotations

import socket

__all__ = ["Wakeup"]


class Wakeup:
    """A socket pair: ``set()`` from anywhere, the loop selects on ``fileno()``."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def fileno(self) -> int:
        return self._reader.fileno()

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
