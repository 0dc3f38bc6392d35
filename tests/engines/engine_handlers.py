"""The handlers the engine conformance suite serves, importable in-process and by engine_server."""

from __future__ import annotations

import portico

BOOM = b"boom\n"


class UpperLines(portico.StreamRequestHandler):
    """Answers each line upper-cased until EOF; the line ``boom`` raises ZeroDivisionError."""

    def handle(self) -> None:
        for line in self.rfile:
            if line == BOOM:
                raise ZeroDivisionError("handler failure on purpose")
            self.wfile.write(line.upper())


class UpperDatagrams(portico.DatagramRequestHandler):
    """Answers each datagram upper-cased; the datagram ``boom`` raises ZeroDivisionError."""

    def handle(self) -> None:
        if self.packet == BOOM:
            raise ZeroDivisionError("handler failure on purpose")
        self.wfile.write(self.packet.upper())


HANDLERS = {"stream": UpperLines, "datagram": UpperDatagrams}
