"""The normal client: short request/reply lines, paced, each timed and checked.

Two ways to ask, side by side in one selector loop over the same seconds, each
for a bounded number of requests, one due every ``interval`` seconds:

- ``persistent``: one connection, opened before the attack and kept, one
  64-byte line in flight.  It shows what the attack costs a client the server
  already serves: CPU, scheduling, the interpreter lock, the limits' watchdog.
- ``connection``: a new connection per request (connect, one line, the reply,
  close), sent on schedule whatever the server does (an open loop: several
  are in flight when the server is slow).  It shows whether a *new* client
  still gets in: a server whose workers or children the slowloris connections
  hold stops accepting, and a new client waits in the listen backlog until it
  gives up.

A request is timed from when it is sent, and on the persistent connection,
when the reply before it came back after it was due, from when it was due: a
slow reply counts against the requests queued behind it too (no coordinated
omission).  A request fails when its reply is not back, upper-cased byte for
byte, within ``timeout`` seconds: ``timeout``, ``connect`` (refused),
``reset``, ``eof`` (closed before the reply) or ``mismatch``.  A failed
request closes its connection; on the persistent one, the next request
connects again, inside its own time.
"""

from __future__ import annotations

import errno
import math
import selectors
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["LINE_SIZE", "MODES", "Mode", "PhaseResult", "exchange", "open_connection"]

Mode = Literal["persistent", "connection"]
MODES: tuple[Mode, ...] = ("persistent", "connection")
LINE_SIZE = 64
Address = tuple[str, int]


def request_line(index: int) -> bytes:
    """The ``index``-th request: 64 bytes, lower-case letters and digits, a newline."""
    text = f"slowloris bench request {index:09d} "
    return (text + "x" * (LINE_SIZE - 1 - len(text))).encode() + b"\n"


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Nearest rank on an already sorted list; None if it is empty."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class PhaseResult:
    """One mode's requests in one phase (without or under attack)."""

    mode: Mode
    planned: int
    sent: int = 0
    latencies_us: list[float] = field(default_factory=list)  # of the answered requests
    failures: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def answered(self, latency_s: float) -> None:
        self.latencies_us.append(latency_s * 1e6)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_us)
        return {
            "mode": self.mode,
            "planned": self.planned,
            "sent": self.sent,
            "ok": len(ordered),
            "failed": sum(self.failures.values()),
            "failure_kinds": dict(sorted(self.failures.items())),
            "p50_us": _round(percentile(ordered, 0.50)),
            "p99_us": _round(percentile(ordered, 0.99)),
            "max_us": _round(ordered[-1] if ordered else None),
            "seconds": round(self.seconds, 3),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def failure_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connect"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    return "error"


def open_connection(address: Address, timeout: float) -> socket.socket:
    """The persistent connection, opened now (before the attack), non-blocking."""
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


@dataclass(eq=False)  # hashed by identity: a set holds those in flight
class _Exchange:
    """One request in flight: its socket, its line, when it started, the reply so far."""

    mode: Mode
    sock: socket.socket
    line: bytes
    started: float
    connected: bool
    reply: bytes = b""


class _Loop:
    """Both modes' requests, paced, on one selector."""

    def __init__(self, address: Address, count: int, interval: float, timeout: float) -> None:
        self.address, self.count, self.interval, self.timeout = address, count, interval, timeout
        self.selector = selectors.DefaultSelector()
        self.results = {mode: PhaseResult(mode, count) for mode in MODES}
        self.in_flight: set[_Exchange] = set()
        self.start = time.perf_counter()
        self.launched = 0  # new-connection requests started
        self.kept: socket.socket | None = None
        self.kept_next = 0  # the persistent connection's next request
        self.kept_busy: _Exchange | None = None
        self.kept_done_at = 0.0  # when its last request ended

    def due(self, index: float) -> float:
        return self.start + index * self.interval

    def run(self, kept: socket.socket | None) -> socket.socket | None:
        self.kept = kept
        try:
            while not self.finished():
                now = time.perf_counter()
                self.launch(now)
                self.expire(now)
                for key, _ in self.selector.select(max(0.0, self.wake(now) - now)):
                    if key.data in self.in_flight:
                        self.progress(key.data)
        finally:
            for request in list(self.in_flight):
                self.finish(request, "timeout")
            self.selector.close()
        for result in self.results.values():
            result.seconds = time.perf_counter() - self.start
        return self.kept

    def finished(self) -> bool:
        return self.launched >= self.count and self.kept_next >= self.count and not self.in_flight

    def launch(self, now: float) -> None:
        # New connections are due half an interval after the persistent connection's
        # requests, so that the two modes never ask at the same moment.
        while self.launched < self.count and self.due(self.launched + 0.5) <= now:
            self.begin("connection", None, request_line(self.launched), now)
            self.launched += 1
        due = self.due(self.kept_next)
        if self.kept_busy is None and self.kept_next < self.count and due <= now:
            # Behind schedule (the reply before came after this one was due): from then.
            started = due if self.kept_done_at > due else now
            line = request_line(self.kept_next)
            request = self.begin("persistent", self.kept, line, started)
            self.kept_busy = request if request in self.in_flight else None
            self.kept_next += 1

    def begin(
        self, mode: Mode, sock: socket.socket | None, line: bytes, started: float
    ) -> _Exchange:
        self.results[mode].sent += 1
        connected = sock is not None
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = _Exchange(mode, sock, line, started, connected)
        self.in_flight.add(request)
        if mode == "persistent":
            self.kept = sock
        if not connected:
            code = sock.connect_ex(self.address)
            if code not in (0, errno.EINPROGRESS):
                self.finish(request, "connect", registered=False)
                return request
            self.selector.register(sock, selectors.EVENT_WRITE, request)
            return request
        self.selector.register(sock, selectors.EVENT_READ, request)
        self.send(request)
        return request

    def send(self, request: _Exchange) -> None:
        try:
            sent = request.sock.send(request.line)  # 64 bytes into an idle socket: all of them
        except OSError as exc:
            self.finish(request, failure_kind(exc))
            return
        if sent != len(request.line):
            self.finish(request, "error")

    def progress(self, request: _Exchange) -> None:
        sock = request.sock
        if not request.connected:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.finish(request, "connect")
                return
            request.connected = True
            self.selector.modify(sock, selectors.EVENT_READ, request)
            self.send(request)
            return
        try:
            chunk = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self.finish(request, failure_kind(exc))
            return
        if not chunk:
            self.finish(request, "eof")
            return
        request.reply += chunk
        if request.reply.endswith(b"\n"):
            self.finish(request, None if request.reply == request.line.upper() else "mismatch")

    def expire(self, now: float) -> None:
        for request in [r for r in self.in_flight if now - r.started >= self.timeout]:
            self.finish(request, "timeout")

    def wake(self, now: float) -> float:
        wakes = [request.started + self.timeout for request in self.in_flight]
        if self.launched < self.count:
            wakes.append(self.due(self.launched + 0.5))
        if self.kept_busy is None and self.kept_next < self.count:
            wakes.append(self.due(self.kept_next))
        return min(wakes, default=now)

    def finish(self, request: _Exchange, failure: str | None, *, registered: bool = True) -> None:
        """Count it; close its connection unless it is the persistent one and it went well."""
        now = time.perf_counter()
        result = self.results[request.mode]
        if failure is None:
            result.answered(now - request.started)
        else:
            result.failures[failure] += 1
        self.in_flight.discard(request)
        if registered:
            self.selector.unregister(request.sock)
        if request.mode == "persistent":
            self.kept_busy, self.kept_done_at = None, now
            if failure is not None:
                self.kept = None
        if request.mode == "connection" or failure is not None:
            request.sock.close()


def exchange(
    address: Address, kept: socket.socket | None, count: int, interval: float, timeout: float
) -> tuple[dict[Mode, PhaseResult], socket.socket | None]:
    """``count`` requests of each mode, one of each due every ``interval`` s.

    ``kept`` is the persistent connection (None: the first request opens one);
    returns the results by mode, and the persistent connection as it is after.
    """
    loop = _Loop(address, count, interval, timeout)
    kept = loop.run(kept)
    return loop.results, kept
