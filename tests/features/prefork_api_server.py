"""A program written against the Supervisor API, for test_prefork_api.py.

``python prefork_api_server.py udp|unix PATH`` serves an upper-casing
handler on a stdlib-style server class (ThreadingUDPServer, or a
UnixStreamServer subclass on PATH) from two workers, with a worker_init
that each worker runs.  It prints "ready ADDRESS" on stdout once the
master has the socket, and logs to stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import portico
from portico.prefork import Supervisor


class UpperDatagram(portico.DatagramRequestHandler):
    def handle(self) -> None:
        self.wfile.write(b"%d %s" % (os.getpid(), self.rfile.read().upper()))


class UpperStream(portico.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            marker = getattr(self.server, "booted_in", 0)
            self.wfile.write(b"%d %d %s" % (os.getpid(), marker, line.upper()))


class CountingUnixServer(portico.ThreadingUnixStreamServer):
    """A user subclass with an attribute of its own, set per worker."""

    booted_in = 0


def boot(server: Any) -> None:
    server.booted_in = os.getpid()


def main(kind: str, path: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if kind == "udp":
        supervisor = Supervisor(
            lambda: portico.ThreadingUDPServer(("127.0.0.1", 0), UpperDatagram), workers=2
        )
    else:
        supervisor = Supervisor(
            lambda: CountingUnixServer(path, UpperStream), workers=2, worker_init=boot
        )
    server = supervisor.open()
    print("ready", repr(server.server_address), flush=True)
    supervisor.run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")
