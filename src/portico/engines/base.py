"""The engine protocol: how a server hands a request over to be run.

An engine runs the requests that the serving loop accepts.  It is small on
purpose; a mixin adapts the server's hooks to it (``process_request`` calls
:meth:`Engine.submit`, ``server_close`` calls :meth:`Engine.close`, the
serving loop's accept gate calls :meth:`Engine.can_accept`), so the stdlib
hooks keep their meaning whatever runs underneath.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from portico.errors import stops_the_process

__all__ = ["Engine", "EngineStatistics", "created_once", "run_request"]

_Created = TypeVar("_Created")
_creation = threading.Lock()


@dataclass(frozen=True)
class EngineStatistics:
    """A snapshot of an engine's counters; engines extend it with their own."""

    engine: str  # the engine's name in the registry
    in_flight: int  # submitted and not finished: running or waiting to run
    completed: int  # finished, whether the handler succeeded or failed


class Engine(Protocol):
    """What every engine offers to the mixin that drives it."""

    name: str

    def submit(self, request: Any, client_address: Any) -> None:
        """Run one request (at once, later, elsewhere); never blocks on the handler."""

    def can_accept(self) -> bool:
        """Back-pressure: may the server take another request now?

        An engine that answers False promises to call the wake-up it was
        given once the answer turns True, so the serving loop can sleep
        until then instead of polling.
        """

    def drain(self, deadline: float | None = None) -> bool:
        """Wait until every submitted request has finished, or ``deadline`` passes.

        ``deadline`` is a ``time.monotonic()`` value (None: no limit).
        Returns True if nothing is left in flight.  New requests may still be
        submitted meanwhile; stop accepting first for a real drain.
        """

    def close(self, *, wait: bool = True) -> None:
        """Refuse new requests and release the engine's resources.

        Requests already submitted still run.  With ``wait`` (the servers
        pass ``block_on_close``) return only once they have finished and
        every thread or process the engine started is gone.  Idempotent.
        """

    def statistics(self) -> EngineStatistics:
        """A consistent, immutable snapshot of the engine's counters."""


def created_once(owner: Any, attribute: str, create: Callable[[], _Created]) -> _Created:
    """``owner.attribute``, set to ``create()`` the first time, once whatever the threads.

    The mixins create their engine on first use rather than in ``__init__``,
    so that attributes set on the instance after construction (``max_workers``,
    ``block_on_close``, as the stdlib allows for its mixins) still count.
    """
    found: _Created | None = getattr(owner, attribute)
    if found is None:
        with _creation:
            found = getattr(owner, attribute)
            if found is None:
                found = create()
                setattr(owner, attribute, found)
    return found


def run_request(server: Any, request: Any, client_address: Any) -> None:
    """What an engine's worker does with a request, as ``ThreadingMixIn`` does in its thread.

    ``finish_request()``; an exception goes to ``handle_error()`` (a
    BaseException too, unless it must stop the process: see
    :func:`portico.errors.stops_the_process`); then ``shutdown_request()``
    whatever happened.
    """
    try:
        server.finish_request(request, client_address)
    except BaseException as exc:
        if stops_the_process(exc):
            raise
        server.handle_error(request, client_address)  # any other BaseException too
    finally:
        server.shutdown_request(request)
