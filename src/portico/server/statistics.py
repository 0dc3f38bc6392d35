"""What a server counts, and the frozen snapshot ``server.statistics()`` returns.

The counters are plain integers bumped where things happen (the serving
loop, the end of a handler's run, a limit that fired); a snapshot copies
them under a lock, so that its figures agree with each other.  A bump
from a request thread takes the same lock: a few hundred nanoseconds next
to a connection's system calls.

With the ``fork`` engine, a request runs in a child process: what only the
child sees (its bytes, its handler's duration, a limit that fired in it)
is not counted by the server process; ``active`` is its live children.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["BUCKETS", "Histogram", "ServerCounters", "ServerStatistics"]

# Upper bounds, in seconds, of the handler-duration histogram's buckets (the last is +Inf).
BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)


@dataclass(frozen=True)
class Histogram:
    """Durations counted in buckets: ``counts[i]`` fell at or under ``bounds[i]`` (not cumulative).

    ``counts`` has one more entry than ``bounds``: the durations over the last bound.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float  # the sum of every duration, in seconds
    count: int

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, durations at or under it), +Inf last: the Prometheus form."""
        running, pairs = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs


@dataclass(frozen=True)
class ServerStatistics:
    """A snapshot of a server's counters.

    The engine's own snapshot is ``engine`` (pool saturation, loop figures);
    its fields are also readable here directly (``stats.in_flight``).
    """

    accepted: int  # connections (or datagrams) handed to the engine
    active: int  # handed over and not finished yet (waiting, or being handled)
    rejected: Mapping[str, int]  # turned away, by the admission limit that did it
    closed_by_limit: Mapping[str, int]  # timeouts by kind, and the line length
    accept_errors: Mapping[str, int]  # failed accept() calls, by errno name
    bytes_in: int
    bytes_out: int
    handler_seconds: Histogram
    drain_seconds: float | None  # how long the last drain took; None before one
    engine: Any = None  # the engine's EngineStatistics, if the server has an engine
    taken_at: float = field(default_factory=time.time)

    def __getattr__(self, name: str) -> Any:
        engine = self.__dict__.get("engine")
        if engine is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(engine, name)


class ServerCounters:
    """The live counters behind :class:`ServerStatistics`; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.accepted = 0
        self.ended = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.limits: Counter[str] = Counter()
        self.drain_seconds: float | None = None
        self._buckets = [0] * (len(BUCKETS) + 1)
        self._seconds = 0.0

    def handed_over(self) -> None:
        with self._lock:
            self.accepted += 1

    def finished(self, seconds: float, bytes_in: int = 0, bytes_out: int = 0) -> None:
        """A request's handler has run, for ``seconds``, carrying so many bytes."""
        index = _bucket(seconds)
        with self._lock:
            self.ended += 1
            self.bytes_in += bytes_in
            self.bytes_out += bytes_out
            self._buckets[index] += 1
            self._seconds += seconds

    def limit_fired(self, limit: str) -> None:
        with self._lock:
            self.limits[limit] += 1

    def snapshot(
        self,
        *,
        active: int | None,
        rejected: Mapping[str, int],
        accept_errors: Mapping[str, int],
        engine: Any,
    ) -> ServerStatistics:
        with self._lock:
            return ServerStatistics(
                accepted=self.accepted,
                active=self.accepted - self.ended if active is None else active,
                rejected=MappingProxyType(dict(rejected)),
                closed_by_limit=MappingProxyType(dict(self.limits)),
                accept_errors=MappingProxyType(dict(accept_errors)),
                bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
                handler_seconds=Histogram(
                    BUCKETS, tuple(self._buckets), self._seconds, sum(self._buckets)
                ),
                drain_seconds=self.drain_seconds,
                engine=engine,
            )


def _bucket(seconds: float) -> int:
    for index, bound in enumerate(BUCKETS):
        if seconds <= bound:
            return index
    return len(BUCKETS)
