"""The engines by name: which mixin realises each, and which can be used here.

The names are those of ``portico serve --engine``.  ``serial``, ``threads``
and ``fork`` are the stdlib's own behaviour (the plain server,
``ThreadingMixIn``, ``ForkingMixIn``), unchanged; ``pool`` is
:class:`~portico.engines.pool.PoolMixIn`.  Choosing an engine that cannot run
here raises :class:`~portico.errors.ConfigurationError` saying why.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar, cast

from portico.engines import aio, pool
from portico.engines.aio import AsyncMixIn
from portico.engines.pool import PoolMixIn
from portico.errors import ConfigurationError
from portico.server import classes, mixins
from portico.server.base import BaseServer
from portico.server.mixins import ThreadingMixIn

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "EngineSpec",
    "available_engines",
    "choose_engine",
    "server_class",
]

_Server = TypeVar("_Server", bound=BaseServer)

EventMixIn: type | None
try:
    from portico.engines import event
    from portico.engines.event import EventMixIn
except ImportError as exc:
    # Only a missing optional dependency makes the engine unavailable; other errors are bugs.
    if exc.name not in ("greenlet", "select"):
        raise
    event, EventMixIn = None, None  # type: ignore[assignment]
    _EVENT_UNAVAILABLE = (
        "not available: it needs greenlet (pip install 'portico[fast]')"
        if exc.name == "greenlet"
        else "not available: it needs epoll (Linux)"
    )
else:
    _EVENT_UNAVAILABLE = ""

DEFAULT_ENGINE = "threads"


@dataclass(frozen=True)
class EngineSpec:
    """One engine: its name, what it does, and the mixin that realises it."""

    name: str
    summary: str
    mixin: type | None = None  # None: the plain server runs each request itself
    prefix: str = ""  # of the composed class names, as in ThreadingTCPServer
    bounded: bool = False  # honours ``max_workers``
    unavailable: str = ""  # why it cannot be used here; empty when it can

    @property
    def available(self) -> bool:
        return not self.unavailable

    def server_class(self, base: type[_Server]) -> type[_Server]:
        """``base`` (a server class) running its requests on this engine.

        The stdlib's ready-made class when there is one (``threads`` over
        ``TCPServer`` is ``ThreadingTCPServer``), else ``mixin`` composed over
        ``base``; the same class each time for the same ``base``.
        """
        _check_available(self)
        if self.mixin is None:
            return base
        return cast("type[_Server]", _compose(self.mixin, self.prefix, base))


ENGINES: Mapping[str, EngineSpec] = {
    spec.name: spec
    for spec in (
        EngineSpec("serial", "one request at a time, in the serving thread"),
        EngineSpec("threads", "a new thread per request", ThreadingMixIn, "Threading"),
        EngineSpec(
            "fork",
            "a new child process per request",
            getattr(mixins, "ForkingMixIn", None),
            "Forking",
            unavailable="" if hasattr(os, "fork") else "not available: this platform has no fork()",
        ),
        EngineSpec(
            "pool",
            "a bounded pool of reused threads; accepting pauses while all are busy",
            PoolMixIn,
            "Pool",
            bounded=True,
        ),
        EngineSpec(
            "event",
            "blocking-style handlers as tasks on one event loop",
            EventMixIn,
            "Event",
            unavailable=_EVENT_UNAVAILABLE,
        ),
        EngineSpec("async", "async def handle() on asyncio", AsyncMixIn, "Async"),
    )
}


def available_engines() -> tuple[str, ...]:
    """The names of the engines that can run here, in registry order."""
    return tuple(name for name, spec in ENGINES.items() if spec.available)


def choose_engine(name: str) -> EngineSpec:
    """The engine called ``name``; ConfigurationError if unknown or unavailable here."""
    spec = ENGINES.get(name)
    if spec is None:
        raise ConfigurationError(
            f"unknown engine {name!r}: use one of {', '.join(available_engines())}"
        )
    _check_available(spec)
    return spec


def server_class(name: str, base: type[_Server]) -> type[_Server]:
    """``base`` running its requests on the engine called ``name``."""
    return choose_engine(name).server_class(base)


def _check_available(spec: EngineSpec) -> None:
    if spec.unavailable:
        error = ConfigurationError(f"engine {spec.name!r} is {spec.unavailable}")
        error.hint = f"choose one of {', '.join(available_engines())}"
        raise error


def _ready_made() -> dict[tuple[type, ...], type]:
    """The ready-made classes by their bases, so that composing finds them, not copies."""
    found = [getattr(classes, name) for name in classes.__all__]
    found += [getattr(pool, name) for name in pool.__all__ if name.endswith("Server")]
    found += [getattr(aio, name) for name in aio.__all__ if name.endswith("Server")]
    if event is not None:
        found += [getattr(event, name) for name in event.__all__ if name.endswith("Server")]
    return {cls.__bases__: cls for cls in found}


_READY_MADE = _ready_made()


_composed: dict[tuple[type, type], type] = {}


def _compose(mixin: type, prefix: str, base: type) -> type:
    key = (mixin, base)
    found = _READY_MADE.get(key) or _composed.get(key)
    if found is None:
        name = f"{prefix}{base.__name__}"
        found = _composed.setdefault(key, type(name, key, {"__module__": base.__module__}))
    return found
