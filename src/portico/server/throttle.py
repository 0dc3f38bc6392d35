"""Log lines about floods: the first at once, then at most one per interval.

A flood of bad datagrams or turned-away connections must not become a flood
of log lines; the line that does get through carries the count so far.
"""

from __future__ import annotations

import time

__all__ = ["INTERVAL", "Throttle"]

INTERVAL = 10.0


class Throttle:
    """Says whether it is time for another line (at most one per ``interval`` seconds)."""

    __slots__ = ("_last", "interval")

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._last: float | None = None

    def ready(self) -> bool:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True
