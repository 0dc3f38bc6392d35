"""A steady client load for the prefork tests: threads that connect, ask, check, close.

Each round opens a new connection, sends one line and checks the upper-cased
reply.  A refused connection is counted apart (a stopped server refuses);
every other error is a failure, recorded with its type.  The loop is bounded
in rounds and in time, and stops when told.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from typing import Any

TIMEOUT = 5.0


class ClientLoop:
    def __init__(
        self,
        address: Any,
        *,
        threads: int = 4,
        rounds: int = 20_000,
        seconds: float = 30.0,
        stop_when_refused: bool = False,
    ) -> None:
        self.address = address
        self.rounds = rounds
        self.deadline = time.monotonic() + seconds
        self.stop_when_refused = stop_when_refused
        self.ok = 0
        self.refused = 0
        self.failures: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]

    def __enter__(self) -> ClientLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2 * TIMEOUT)

    def wait_for_answers(self, count: int, timeout: float = TIMEOUT) -> None:
        """Wait until ``count`` more rounds have been answered (proof the load runs)."""
        with self._progress:
            target = self.ok + count
            if not self._progress.wait_for(lambda: self.ok >= target, timeout):
                raise AssertionError(f"the load stalled at {self.ok} answers: {self.summary()}")

    def summary(self) -> str:
        return f"{self.ok} answered, {self.refused} refused, failures {dict(self.failures)}"

    def _run(self, number: int) -> None:
        for index in range(self.rounds):
            if self._stop.is_set() or time.monotonic() > self.deadline:
                return
            line = b"round %d of client %d\n" % (index, number)
            outcome = self._round(line)
            with self._progress:
                if outcome == "ok":
                    self.ok += 1
                    self._progress.notify_all()
                elif outcome == "refused":
                    self.refused += 1
                else:
                    self.failures[outcome] += 1
            if outcome == "refused" and self.stop_when_refused:
                return

    def _round(self, line: bytes) -> str:
        try:
            sock = socket.create_connection(self.address, timeout=TIMEOUT)
        except ConnectionRefusedError:
            return "refused"
        except OSError as exc:
            return f"connect: {type(exc).__name__}"
        try:
            with sock, sock.makefile("rb") as replies:
                sock.sendall(line)
                reply = replies.readline()
        except OSError as exc:
            return f"exchange: {type(exc).__name__}"
        # The upper handler answers the line; PidUpper puts its pid first.
        return "ok" if reply.endswith(line.upper()) else f"wrong reply {reply[:40]!r}"
