"""The socketserver classes, stdlib's or portico's, serving the ``upper`` handler.

``--module socketserver|portico`` picks the implementation and ``--engine
serial|threads|fork`` the class: ``TCPServer``/``UDPServer``,
``ThreadingTCPServer``/``ThreadingUDPServer`` or
``ForkingTCPServer``/``ForkingUDPServer``, each with its default attributes
(the stdlib's ``request_queue_size`` of 5 included) except
``allow_reuse_address``.  portico's classes serve portico's built-in handler
(the one ``portico serve`` runs); the stdlib's serve the same code written
against the stdlib's handler classes.

This stands in for ``portico serve --engine NAME`` until the CLI has engines.
"""

from __future__ import annotations

import importlib
import socketserver
from collections.abc import Sequence
from typing import Any

from bench.throughput.peers.common import MAX_LINE, parser

ENGINES = {
    "serial": ("TCPServer", "UDPServer"),
    "threads": ("ThreadingTCPServer", "ThreadingUDPServer"),
    "fork": ("ForkingTCPServer", "ForkingUDPServer"),
}


class StdlibUpperStream(socketserver.StreamRequestHandler):
    """portico's built-in ``upper`` stream handler, on the stdlib's base class."""

    def handle(self) -> None:
        readline, write = self.rfile.readline, self.wfile.write
        try:
            while line := readline(MAX_LINE):
                write(line.upper())
        except ConnectionError:
            pass


class StdlibUpperDatagram(socketserver.DatagramRequestHandler):
    """portico's built-in ``upper`` datagram handler, on the stdlib's base class."""

    def handle(self) -> None:
        self.wfile.write(self.packet.upper())


def handler_for(module: str, *, udp: bool) -> type[Any]:
    if module == "portico":
        # Imported here so that the stdlib's servers do not carry portico in their memory.
        from portico.cli.builtin import BUILTINS  # noqa: PLC0415

        return BUILTINS["upper"].variant(datagram=udp)
    return StdlibUpperDatagram if udp else StdlibUpperStream


def server_class(module: str, engine: str, *, udp: bool) -> type[Any]:
    base: type[Any] = getattr(importlib.import_module(module), ENGINES[engine][udp])
    # Reuse the address, as `portico serve` does: a port picked for the run may
    # still have connections of an earlier one in TIME_WAIT.
    return type(base.__name__, (base,), {"allow_reuse_address": not udp})


def main(argv: Sequence[str] | None = None) -> None:
    options = parser(__doc__ or "")
    options.add_argument("--module", choices=("socketserver", "portico"), required=True)
    options.add_argument("--engine", choices=sorted(ENGINES), required=True)
    args = options.parse_args(argv)
    cls = server_class(args.module, args.engine, udp=args.udp)
    with cls((args.host, args.port), handler_for(args.module, udp=args.udp)) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
