"""The protections an operator would choose: on by default in portico's own engines and CLI.

A server that may be reached by anyone must not be frozen by a silent
client, starved by a slow trickle or made to buffer a gigabyte.  These are
the defaults of ``portico serve`` and of the server classes portico adds
(``PoolTCPServer``, the event and async engines' classes), through
:class:`Protected`.  The stdlib-named classes keep every limit off until
one is set, because a drop-in must not start closing connections that the
stdlib kept open.  docs/server-behavior.md lists them all.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "FIRST_BYTE_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_LINE_LENGTH",
    "MIN_RECEIVE_RATE",
    "MIN_RECEIVE_RATE_WINDOW",
    "SEND_TIMEOUT",
    "Protected",
]

FIRST_BYTE_TIMEOUT = 30.0  # seconds from connecting to the client's first byte
IDLE_TIMEOUT = 300.0  # seconds of silence between two requests
MIN_RECEIVE_RATE = 100.0  # bytes per second, once a request starts coming...
MIN_RECEIVE_RATE_WINDOW = 20.0  # ...measured over this many seconds
SEND_TIMEOUT = 60.0  # seconds a client may take none of a reply
MAX_LINE_LENGTH = 65536  # bytes in one line, newline included


class Protected:
    """Mix-in: the operator's defaults above as server attributes (before the server class)."""

    first_byte_timeout: float | None = FIRST_BYTE_TIMEOUT
    idle_timeout: float | None = IDLE_TIMEOUT
    min_receive_rate: float | None = MIN_RECEIVE_RATE
    min_receive_rate_window: float = MIN_RECEIVE_RATE_WINDOW
    send_timeout: float | None = SEND_TIMEOUT
    # Stop accepting before the process runs out of descriptors.
    max_connections: int | Literal["auto"] | None = "auto"
    # Count each connection's bytes for statistics(), and make it the current one for logs.
    count_bytes: bool = True
