"""One engine's server in a process of its own: the subprocess of the conformance suite.

Usage: ``python engine_server.py ENGINE stream|datagram``.  Serves the
conformance handler on 127.0.0.1, port 0, from its main thread (so that the
``fork`` engine forks a single-threaded process), and writes to stdout:

* ``LISTENING <port>`` once the socket listens;
* after SIGTERM has stopped it and ``server_close()`` has returned, one JSON
  line: the threads and descriptors before and after, and the child
  processes left.

Every ``portico.error`` record goes to stderr as one line
``ERROR-RECORD<TAB>type<TAB>message``; child processes inherit the logger, so
their records arrive there too.  The parent collects them from stderr.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from engine_handlers import handlers_for

import portico
from portico.engines import server_class


class RecordLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        kind = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else "-"
        return f"ERROR-RECORD\t{kind}\t{record.getMessage()}"


def open_fds() -> list[str]:
    """Each open descriptor as ``fd -> what it is``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.append(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:  # the listing's own descriptor, gone already
            pass
    return found


def child_pids() -> list[int]:
    pids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += [int(pid) for pid in (task / "children").read_text().split()]
        except OSError:
            pass
    return sorted(pids)


def main(engine: str, kind: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RecordLine())
    logging.getLogger("portico.error").addHandler(handler)
    threads_before = len(threading.enumerate())
    fds_before = open_fds()
    base = portico.UDPServer if kind == "datagram" else portico.TCPServer
    server: Any = server_class(engine, base)(("127.0.0.1", 0), handlers_for(engine)[kind])
    signal.signal(signal.SIGTERM, lambda signum, frame: server.shutdown())
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    report = {
        "threads_before": threads_before,
        "threads_after": len(threading.enumerate()),
        "fds_before": fds_before,
        "fds_after": open_fds(),
        "children": child_pids(),
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
