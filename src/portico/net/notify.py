"""Telling systemd how the service is doing: ``sd_notify(3)`` without libsystemd.

When ``NOTIFY_SOCKET`` is set (a ``Type=notify`` unit), each state is one
datagram to that Unix socket: ``READY=1`` once serving, ``STOPPING=1`` when
stopping, ``WATCHDOG=1`` at least every half of ``WATCHDOG_USEC``.  Outside
systemd nothing is sent and nothing fails.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Watchdog", "notify", "watchdog_interval"]

log = logging.getLogger("portico.server")


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``"READY=1"``, ...) to systemd; False when not run by it or it failed."""
    path = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):  # an abstract socket
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # Never wait: a full queue at the other end must not stall the serving loop.
            sock.setblocking(False)
            sock.sendto(state.encode(), path)
    except BlockingIOError:
        log.debug("systemd's notification queue is full; %s dropped", state.partition("\n")[0])
        return False
    except OSError as exc:
        log.warning("could not notify systemd of %s: %s", state.partition("\n")[0], exc)
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds within which systemd wants a ``WATCHDOG=1``, or None when it wants none."""
    environ = os.environ if environ is None else environ
    usec, pid = environ.get("WATCHDOG_USEC"), environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.strip() != str(os.getpid())):
        return None
    try:
        seconds = int(usec) / 1e6
    except ValueError:
        return None
    return seconds if seconds > 0 else None


class Watchdog:
    """Pings systemd's watchdog from a loop that calls :meth:`tick` often enough.

    A ping goes out when half the interval has passed since the last one, as
    ``sd_watchdog_enabled(3)`` advises.
    """

    def __init__(self, interval: float, environ: Mapping[str, str] | None = None) -> None:
        self.interval = interval
        self._environ = environ
        self._next = 0.0

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            notify("WATCHDOG=1", self._environ)
            self._next = now + self.interval / 2
