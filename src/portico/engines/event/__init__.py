"""The ``event`` engine: blocking-style handlers as tasks on one event loop.

A handler written for the stdlib (``self.rfile.readline()``,
``self.wfile.write()``, ``self.request.recv()``/``sendall()``) runs
unchanged as a greenlet on an ``epoll`` loop in the serving thread; one
thread holds tens of thousands of connections.  Only the request's socket
cooperates with the loop: nothing global is patched, so other code in the
process is untouched, and blocking calls of other kinds go through
:func:`run_in_thread`.  A handler that holds the loop anyway is logged.

Needs ``greenlet`` (``pip install 'portico[fast]'``) and ``epoll`` (Linux).
"""

from __future__ import annotations

from portico.engines.event.engine import EventEngine, EventStatistics
from portico.engines.event.helpers import run_in_thread, sleep
from portico.engines.event.mixin import EventMixIn, EventTCPServer, EventUDPServer

__all__ = [
    "EventEngine",
    "EventMixIn",
    "EventStatistics",
    "EventTCPServer",
    "EventUDPServer",
    "run_in_thread",
    "sleep",
]

try:
    from portico.engines.event.mixin import EventUnixDatagramServer, EventUnixStreamServer
except ImportError:  # no AF_UNIX on this platform
    pass
else:
    __all__ += ["EventUnixDatagramServer", "EventUnixStreamServer"]
