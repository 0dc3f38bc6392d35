"""What a worker tells its master: one byte per message down a pipe of its own.

A pipe (not a socket, not shared memory) because it needs nothing set up
beyond ``os.pipe()`` before the fork, its end-of-file tells the master the
worker is gone even before ``waitpid()`` does, and a single-byte write is
atomic.  The worker never blocks on it: when the master has not read for so
long that the pipe is full, a heartbeat is simply dropped.
"""

from __future__ import annotations

import os

__all__ = ["BEAT", "READY", "RETIRING", "Reader", "Writer"]

READY = b"R"  # booted: about to serve
BEAT = b"."  # the serving loop is alive
RETIRING = b"Q"  # leaving on its own (--max-requests): start a replacement now


class Writer:
    """The worker's end."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd

    def send(self, message: bytes) -> bool:
        try:
            os.write(self.fd, message)
        except (BlockingIOError, BrokenPipeError):
            return False  # the master is busy or gone: nothing to wait for
        return True


class Reader:
    """The master's end."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def receive(self) -> bytes | None:
        """The bytes waiting (b"" if none yet); None once the worker's end is closed."""
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return b""
        return data or None

    def close(self) -> None:
        os.close(self.fd)
