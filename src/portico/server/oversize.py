"""Logging datagrams over ``max_packet_size``: the first at once, then a count now and then.

A flood of oversize datagrams must not become a flood of log lines (see
:mod:`portico.server.throttle`).  Shared by the UDP servers and the async
engine's datagram endpoint.
"""

from __future__ import annotations

import logging
from typing import Any

from portico.net.addresses import format_address
from portico.server.throttle import Throttle

__all__ = ["record"]

log = logging.getLogger("portico.server")


def record(server: Any, client_address: Any, limit: int) -> None:
    """One more oversize datagram from ``client_address``; log if it is time to."""
    throttle = server.__dict__.setdefault("_portico_oversize_log", Throttle())
    if not throttle.ready():
        return
    action = "dropped" if server.oversize_datagrams == "drop" else "truncated"
    log.warning(
        "datagram over max_packet_size (%d bytes) from %s %s; %d such in all",
        limit,
        format_address(client_address),
        action,
        server.datagrams_oversize,
    )
