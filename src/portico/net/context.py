"""The connection being served, for every log call made while it is: no need to pass it around.

While a handler runs, :data:`current` holds its :class:`Connection`: a
number, the peer, and what the layers below learn as they go (the original
client behind a PROXY header, the TLS version).  A
:class:`ConnectionFilter` on a logging handler adds ``connection_id`` and
``peer`` to every record made meanwhile, by the handler's own loggers too.
The variable is a :mod:`contextvars` one, so it follows each handler
whether it runs in a thread, a forked child, a greenlet or an asyncio task.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from portico.errors import ConnectionLimitError
from portico.net.addresses import format_address

__all__ = ["Connection", "ConnectionFilter", "current", "how_it_ended", "note"]

_numbers = itertools.count(1)


@dataclass
class Connection:
    """One connection (or datagram) as the logs see it."""

    peer: Any  # the address that connected (the proxy's, behind one)
    id: int = field(default_factory=lambda: next(_numbers))
    started: float = field(default_factory=time.monotonic)
    proxied_peer: Any = None  # the original client, from a PROXY header
    tls_version: str | None = None
    failure: BaseException | None = None  # what the handler raised, if it did
    bytes_in: int = 0  # counted by portico.net.counting, where the access log wants them
    bytes_out: int = 0

    @property
    def traffic(self) -> tuple[int, int]:
        """(bytes in, bytes out) so far."""
        return self.bytes_in, self.bytes_out

    @property
    def client(self) -> str:
        """The client as a log line names it: the original one behind a proxy."""
        return format_address(self.proxied_peer if self.proxied_peer is not None else self.peer)


current: contextvars.ContextVar[Connection | None] = contextvars.ContextVar(
    "portico_connection", default=None
)


def note(**learned: Any) -> None:
    """Record what a layer learned about the connection being served (if one is logged)."""
    connection = current.get()
    if connection is not None:
        for name, value in learned.items():
            setattr(connection, name, value)


def how_it_ended(exc: BaseException | None) -> str:
    """A word or two for the access line: how the handler's run ended."""
    if exc is None:
        return "completed"
    if isinstance(exc, ConnectionLimitError):
        return str(exc.limit)
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "reset by the client"
    return f"error: {type(exc).__name__}"


class ConnectionFilter(logging.Filter):
    """Adds ``connection_id`` and ``peer`` (None outside a connection) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        connection = current.get()
        if not hasattr(record, "connection_id"):
            record.connection_id = None if connection is None else connection.id
            record.peer = None if connection is None else connection.client
        return True
