"""portico: the standard library's socketserver, rebuilt for production.

``import portico as socketserver`` is a drop-in replacement: every name,
attribute and hook of the stdlib module for the running Python, with the same
meaning.  ``__all__`` lists exactly the stdlib's names, so ``from portico
import *`` brings in what ``from socketserver import *`` would; portico's own
additions live in sub-modules (:mod:`portico.testing`, :mod:`portico.net`, ...)
and as extra methods on the server classes.
"""

from __future__ import annotations

import os
import socket
import sys

from portico.server.base import BaseServer, _ServerSelector
from portico.server.classes import ThreadingTCPServer, ThreadingUDPServer
from portico.server.handlers import (
    BaseRequestHandler,
    DatagramRequestHandler,
    StreamRequestHandler,
    _SocketWriter,
)
from portico.server.inet import TCPServer, UDPServer
from portico.server.mixins import ThreadingMixIn, _NoThreads, _Threads

__version__ = "0.1.0"

__all__ = [
    "BaseServer",
    "TCPServer",
    "UDPServer",
    "ThreadingUDPServer",
    "ThreadingTCPServer",
    "BaseRequestHandler",
    "StreamRequestHandler",
    "DatagramRequestHandler",
    "ThreadingMixIn",
]

if hasattr(os, "fork"):
    from portico.server.classes import ForkingTCPServer, ForkingUDPServer
    from portico.server.mixins import ForkingMixIn

    __all__ += ["ForkingUDPServer", "ForkingTCPServer", "ForkingMixIn"]

if hasattr(socket, "AF_UNIX"):
    from portico.server.classes import ThreadingUnixDatagramServer, ThreadingUnixStreamServer
    from portico.server.inet import UnixDatagramServer, UnixStreamServer

    __all__ += [
        "UnixStreamServer",
        "UnixDatagramServer",
        "ThreadingUnixStreamServer",
        "ThreadingUnixDatagramServer",
    ]
    # The stdlib grew these in 3.12.
    if sys.version_info >= (3, 12):
        if hasattr(os, "fork"):
            from portico.server.classes import ForkingUnixDatagramServer, ForkingUnixStreamServer

            __all__ += ["ForkingUnixStreamServer", "ForkingUnixDatagramServer"]

# The stdlib module's private helpers, for code that reached into them.
_private_aliases = (_ServerSelector, _SocketWriter, _Threads, _NoThreads)

# Public classes present themselves as portico's, whichever sub-module holds them.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
