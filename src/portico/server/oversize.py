"""Logging datagrams over ``max_packet_size``: the first at once, then a count now and then.

A flood of oversize datagrams must not become a flood of log lines: after
the first, one line at most every ``INTERVAL`` seconds, with the count so
far.  Shared by the UDP servers and the async engine's datagram endpoint.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from portico.net.addresses import format_address

__all__ = ["INTERVAL", "record"]

log = logging.getLogger("portico.server")

INTERVAL = 10.0


def record(server: Any, client_address: Any, limit: int) -> None:
    """One more oversize datagram from ``client_address``; log if it is time to."""
    now = time.monotonic()
    last = server.__dict__.get("_portico_oversize_logged")
    if last is not None and now - last < INTERVAL:
        return
    server.__dict__["_portico_oversize_logged"] = now
    action = "dropped" if server.oversize_datagrams == "drop" else "truncated"
    log.warning(
        "datagram over max_packet_size (%d bytes) from %s %s; %d such in all",
        limit,
        format_address(client_address),
        action,
        server.datagrams_oversize,
    )
