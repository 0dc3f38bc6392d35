"""The ready-made servers: each a concurrency mixin over a socket server."""

from __future__ import annotations

import os
import socket
import sys

from portico.server.inet import TCPServer, UDPServer
from portico.server.mixins import ThreadingMixIn

__all__ = ["ThreadingTCPServer", "ThreadingUDPServer"]


class ThreadingUDPServer(ThreadingMixIn, UDPServer):
    pass


class ThreadingTCPServer(ThreadingMixIn, TCPServer):
    pass


if hasattr(os, "fork"):
    from portico.server.mixins import ForkingMixIn

    __all__ += ["ForkingTCPServer", "ForkingUDPServer"]

    class ForkingUDPServer(ForkingMixIn, UDPServer):
        pass

    class ForkingTCPServer(ForkingMixIn, TCPServer):
        pass


if hasattr(socket, "AF_UNIX"):
    from portico.server.inet import UnixDatagramServer, UnixStreamServer

    __all__ += ["ThreadingUnixDatagramServer", "ThreadingUnixStreamServer"]

    class ThreadingUnixStreamServer(ThreadingMixIn, UnixStreamServer):
        pass

    class ThreadingUnixDatagramServer(ThreadingMixIn, UnixDatagramServer):
        pass

    # The stdlib grew these in 3.12; a drop-in offers exactly what it offers.
    if sys.version_info >= (3, 12) and hasattr(os, "fork"):  # the stdlib grew these in 3.12
        __all__ += ["ForkingUnixDatagramServer", "ForkingUnixStreamServer"]

        class ForkingUnixStreamServer(ForkingMixIn, UnixStreamServer):
            pass

        class ForkingUnixDatagramServer(ForkingMixIn, UnixDatagramServer):
            pass
