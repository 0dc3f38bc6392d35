"""A network log receiver in the style of the logging cookbook, on portico.

    python as_socketserver.py log_receiver.py

Receives the records that ``logging.handlers.SocketHandler`` sends (each a
4-byte big-endian length, then a pickled dict of the record's attributes) on
127.0.0.1 (port 0), prints ``port N``, then prints each record as one line of
JSON.  Serves until interrupted (SIGINT), then prints ``stopped``.

Unpickling data from the network runs whatever the sender wants: only ever
do it, as here, with senders you trust.
"""

from __future__ import annotations

import json
import logging
import pickle
import select
import socketserver
import struct
import sys

import portico

FIELDS = ("name", "levelname", "process", "threadName", "exc_text")


class LogRecordStreamHandler(socketserver.StreamRequestHandler):
    """Turns each length-prefixed pickle into a LogRecord, and handles it here."""

    def handle(self) -> None:
        while True:
            header = self.rfile.read(4)
            if len(header) < 4:
                break  # the sender closed the connection
            (length,) = struct.unpack(">L", header)
            record = logging.makeLogRecord(pickle.loads(self.rfile.read(length)))
            logging.getLogger(record.name).handle(record)


class LogRecordSocketReceiver(socketserver.ThreadingTCPServer):
    """The cookbook's receiver: select() with a timeout, then handle_request()."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), LogRecordStreamHandler)
        self.abort = False
        self.timeout = 1

    def serve_until_stopped(self) -> None:
        while not self.abort:
            readable, _, _ = select.select([self.socket.fileno()], [], [], self.timeout)
            if readable:
                self.handle_request()


class JSONLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record received as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {field: getattr(record, field, None) for field in FIELDS}
        return json.dumps({**fields, "message": record.getMessage()}, sort_keys=True)


def main() -> None:
    assert socketserver is portico, "run me through as_socketserver.py"
    logging.basicConfig(level=logging.DEBUG, handlers=[JSONLinesHandler(sys.stdout)])
    with LogRecordSocketReceiver() as receiver:
        print(f"port {receiver.server_address[1]}", flush=True)
        try:
            receiver.serve_until_stopped()
        except KeyboardInterrupt:
            print("stopped", flush=True)


if __name__ == "__main__":
    main()
