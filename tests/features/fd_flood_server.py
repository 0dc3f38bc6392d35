"""A portico server that runs out of descriptors: the subprocess of test_fd_exhaustion.

Usage: ``python fd_flood_server.py NOFILE``.  Lowers its own RLIMIT_NOFILE soft
limit to ``NOFILE``, then serves a ``ThreadingTCPServer`` (daemon threads) on
127.0.0.1, port 0, whose handler answers each line upper-cased until EOF.
Logs to stderr at INFO, one line per record, ``LEVEL logger message``; the
first line is ``LISTENING <port> NOFILE <soft limit>``, written once the
socket listens (connections queue in the backlog from then on).
"""

from __future__ import annotations

import logging
import resource
import sys

import portico


class UpperHandler(portico.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


class Server(portico.ThreadingTCPServer):
    daemon_threads = True


def main(nofile: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s %(message)s"
    )
    with Server(("127.0.0.1", 0), UpperHandler) as server:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        print(f"LISTENING {server.server_address[1]} NOFILE {soft}", file=sys.stderr, flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
