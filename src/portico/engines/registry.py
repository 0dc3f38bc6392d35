"""The engines by name: which mixin realises each, and which can be used here.

The names are those of ``portico serve --engine``.  ``serial``, ``threads``
and ``fork`` are the stdlib's own behaviour (the plain server,
``ThreadingMixIn``, ``ForkingMixIn``), unchanged; ``pool`` is
:class:`~portico.engines.pool.PoolMixIn`.  Choosing an engine that cannot run
here raises :class:`~portico.errors.ConfigurationError` saying why.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import select
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar, cast

from portico.errors import ConfigurationError
from portico.server import classes
from portico.server.base import BaseServer

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "EngineSpec",
    "available_engines",
    "choose_engine",
    "server_class",
]

_Server = TypeVar("_Server", bound=BaseServer)


def _event_unavailable() -> str:
    """Why the event engine cannot run here (without importing it), or ""."""
    if importlib.util.find_spec("greenlet") is None:
        return "not available: it needs greenlet (pip install 'portico[fast]')"
    if not hasattr(select, "epoll"):
        return "not available: it needs epoll (Linux)"
    return ""


DEFAULT_ENGINE = "threads"


@dataclass(frozen=True)
class EngineSpec:
    """One engine: its name, what it does, and the mixin that realises it."""

    name: str
    summary: str
    # "module:MixIn", imported on first use, so that an engine costs nothing (asyncio,
    # greenlet) until it is chosen; empty: the plain server runs each request itself.
    mixin_path: str = ""
    prefix: str = ""  # of the composed class names, as in ThreadingTCPServer
    bounded: bool = False  # honours ``max_workers``
    unavailable: str = ""  # why it cannot be used here; empty when it can

    @property
    def available(self) -> bool:
        return not self.unavailable

    @property
    def mixin(self) -> type | None:
        """The mixin class (its module is imported now if it was not yet)."""
        if not self.mixin_path:
            return None
        module, _, name = self.mixin_path.partition(":")
        mixin: type = getattr(importlib.import_module(module), name)
        return mixin

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
        EngineSpec(
            "threads",
            "a new thread per request",
            "portico.server.mixins:ThreadingMixIn",
            "Threading",
        ),
        EngineSpec(
            "fork",
            "a new child process per request",
            "portico.server.mixins:ForkingMixIn",
            "Forking",
            unavailable="" if hasattr(os, "fork") else "not available: this platform has no fork()",
        ),
        EngineSpec(
            "pool",
            "a bounded pool of reused threads; accepting pauses while all are busy",
            "portico.engines.pool:PoolMixIn",
            "Pool",
            bounded=True,
        ),
        EngineSpec(
            "event",
            "blocking-style handlers as tasks on one event loop",
            "portico.engines.event:EventMixIn",
            "Event",
            unavailable=_event_unavailable(),
        ),
        EngineSpec(
            "async", "async def handle() on asyncio", "portico.engines.aio:AsyncMixIn", "Async"
        ),
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


def _ready_made(mixin: type) -> dict[tuple[type, ...], type]:
    """The ready-made classes by their bases, so that composing finds them, not copies.

    The stdlib's, and those defined next to ``mixin`` (in its module or package).
    """
    modules = [classes, sys.modules[mixin.__module__]]
    package = sys.modules.get(mixin.__module__.rpartition(".")[0])
    if package is not None and package.__name__ != "portico.engines":
        modules.append(package)
    found = [
        getattr(module, name)
        for module in modules
        for name in getattr(module, "__all__", ())
        if name.endswith("Server")
    ]
    return {cls.__bases__: cls for cls in found if isinstance(cls, type)}


_composed: dict[tuple[type, type], type] = {}


def _compose(mixin: type, prefix: str, base: type) -> type:
    key = (mixin, base)
    found = _composed.get(key)
    if found is None:
        found = _ready_made(mixin).get(key)
        if found is None:
            found = type(f"{prefix}{base.__name__}", key, {"__module__": base.__module__})
        found = _composed.setdefault(key, found)
    return found
