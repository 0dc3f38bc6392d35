"""gevent's ``StreamServer`` (one greenlet per connection) and ``DatagramServer``.

No monkey-patching: the servers hand their handlers gevent's own sockets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gevent.server import DatagramServer, StreamServer  # type: ignore[import-untyped]

from bench.throughput.peers.common import MAX_LINE, parser


def upper_stream(sock: Any, address: Any) -> None:
    rfile = sock.makefile("rb")
    try:
        while line := rfile.readline(MAX_LINE):
            sock.sendall(line.upper())
    except ConnectionError:
        pass
    finally:
        rfile.close()


class UpperDatagramServer(DatagramServer):  # type: ignore[misc]
    def handle(self, data: bytes, address: Any) -> None:
        self.socket.sendto(data.upper(), address)


def main(argv: Sequence[str] | None = None) -> None:
    args = parser(__doc__ or "").parse_args(argv)
    address = (args.host, args.port)
    server = UpperDatagramServer(address) if args.udp else StreamServer(address, upper_stream)
    server.serve_forever()


if __name__ == "__main__":
    main()
