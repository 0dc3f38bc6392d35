"""Engines: how a server runs the requests it accepts, chosen by name.

===========  ==========================================================
``serial``   one request at a time, in the serving thread (``TCPServer``)
``threads``  a new thread per request (``ThreadingMixIn``)
``fork``     a new child process per request (``ForkingMixIn``)
``pool``     a bounded pool of reused threads (:class:`PoolMixIn`);
             accepting pauses while every worker is busy
``event``    blocking-style handlers as greenlet tasks on an epoll loop in the
             serving thread (:mod:`portico.engines.event`; needs ``greenlet``)
``async``    ``async def handle()`` handlers on an asyncio (uvloop) event
             loop (:class:`AsyncMixIn`, :class:`AsyncStreamRequestHandler`)
===========  ==========================================================

``server_class("pool", portico.TCPServer)`` is ``PoolTCPServer``; any server
class may serve as the base.  Each engine behind a mixin follows the
:class:`Engine` protocol (submit, back-pressure, drain, close, statistics);
the stdlib's ``ThreadingMixIn`` and ``ForkingMixIn`` keep their exact stdlib
behaviour.  None of these names is in ``portico.__all__``, which stays the
stdlib's.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from portico.engines.base import Engine, EngineStatistics
from portico.engines.pool import (
    PoolMixIn,
    PoolStatistics,
    PoolTCPServer,
    PoolUDPServer,
    WorkerPool,
    default_max_workers,
)
from portico.engines.registry import (
    DEFAULT_ENGINE,
    ENGINES,
    EngineSpec,
    available_engines,
    choose_engine,
    server_class,
)

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "Engine",
    "EngineSpec",
    "EngineStatistics",
    "PoolMixIn",
    "PoolStatistics",
    "PoolTCPServer",
    "PoolUDPServer",
    "WorkerPool",
    "available_engines",
    "choose_engine",
    "default_max_workers",
    "server_class",
]

try:
    from portico.engines.pool import PoolUnixDatagramServer, PoolUnixStreamServer
except ImportError:  # no AF_UNIX on this platform
    pass
else:
    __all__ += ["PoolUnixDatagramServer", "PoolUnixStreamServer"]

# The async engine's names come from portico.engines.aio on first use: importing
# asyncio costs ~10 MiB and some milliseconds that no other engine should pay.
_ASYNC_NAMES = (
    "AsyncBaseRequestHandler",
    "AsyncDatagramRequestHandler",
    "AsyncMixIn",
    "AsyncStatistics",
    "AsyncStreamRequestHandler",
    "AsyncTCPServer",
    "AsyncUDPServer",
    "AsyncUnixDatagramServer",
    "AsyncUnixStreamServer",
)
__all__ += [name for name in _ASYNC_NAMES if "Unix" not in name or hasattr(socket, "AF_UNIX")]


def __getattr__(name: str) -> Any:
    if name in _ASYNC_NAMES:
        from portico.engines import aio  # noqa: PLC0415 (lazy on purpose)

        return getattr(aio, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:  # what __getattr__ returns, for type checkers
    from portico.engines.aio import (  # noqa: F401
        AsyncBaseRequestHandler,
        AsyncDatagramRequestHandler,
        AsyncMixIn,
        AsyncStatistics,
        AsyncStreamRequestHandler,
        AsyncTCPServer,
        AsyncUDPServer,
    )
