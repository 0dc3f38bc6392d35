"""Handlers and worker hooks that the CLI tests serve (imported by the served processes)."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from portico import StreamRequestHandler
from portico.engines import AsyncStreamRequestHandler


class PidUpper(StreamRequestHandler):
    """Each line back upper-cased, after the pid of the worker that serves it."""

    def handle(self) -> None:
        for line in self.rfile:
            if line.strip() == b"hang":
                threading.Event().wait()  # blocks the serving loop of a serial worker
            self.wfile.write(b"%d %s" % (os.getpid(), line.upper()))


def refuse_to_boot(server: Any) -> None:
    """A --worker-init whose resource is missing: the worker fails to boot."""
    raise RuntimeError("the database is unreachable")


def note_boot(server: Any) -> None:
    """A --worker-init that succeeds: each worker says so."""
    server.worker_init_ran = True
    print(f"worker-init ran in {os.getpid()}", flush=True)  # stdout, which the tests discard


class WhoAmI(StreamRequestHandler):
    """Each line back upper-cased, after the client address the handler was given."""

    def handle(self) -> None:
        host = self.client_address[0]
        for line in self.rfile:
            self.wfile.write(host.encode() + b" " + line.upper())


class LogsEachLine(StreamRequestHandler):
    """Logs each line on its own logger (no connection passed), then answers it upper-cased."""

    def handle(self) -> None:
        log = logging.getLogger("app")
        for line in self.rfile:
            log.warning("handling %r", line.strip().decode())
            self.wfile.write(line.upper())


class AsyncLogsEachLine(AsyncStreamRequestHandler):
    """LogsEachLine for the async engine."""

    async def handle(self) -> None:
        log = logging.getLogger("app")
        async for line in self.reader:
            log.warning("handling %r", line.strip().decode())
            self.writer.write(line.upper())
