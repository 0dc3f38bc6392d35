"""Serving the conformance handlers on an engine, and checking that nothing leaks.

``start_served(engine, kind)`` (kind: ``"stream"`` or ``"datagram"``) starts the engine's
server on 127.0.0.1, port 0, and returns a :class:`Served`.  ``serial``,
``threads`` and ``pool`` are served in this process, from a background
thread.  ``fork`` is served by ``engine_server.py`` in a subprocess of its
own, from its main thread: forking a multi-threaded process (this one runs
the test's client threads) may deadlock the children.

``Served.stop()`` shuts the server down, closes it and returns a
:class:`Report`: the threads, descriptors and child processes left behind
(counted before the server was built and after it was closed) and the
handler errors logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine_handlers import ASYNC_ENGINES, handlers_for

import portico
from portico.engines import server_class
from portico.testing import serving

DEADLINE = 10.0
SERVER_SCRIPT = Path(__file__).with_name("engine_server.py")
SUBPROCESS_ENGINES = frozenset({"fork"})
# Threads started once per process and kept: the time limits' watchdog (portico.net.guard).
PROCESS_WIDE_THREADS = frozenset({"portico-connection-limits"})


def open_fds() -> set[str]:
    """Each open descriptor as ``fd -> what it is``: a number may be reused for something else."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone already
            found.add(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
    return found


def child_pids() -> set[int]:
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            pids.update(int(pid) for pid in (task / "children").read_text().split())
    return pids


@dataclass
class Report:
    """What a stopped server left behind, and the handler errors it logged."""

    leaked_threads: list[str]
    leaked_fds: list[str]  # opened since the server was built and still open
    children: list[int]
    errors: list[tuple[str, str]] = field(default_factory=list)  # (exception type, message)

    def assert_clean(self) -> None:
        assert self.leaked_threads == [], "threads left running"
        assert self.leaked_fds == [], "descriptors leaked"
        assert self.children == [], "child processes left"

    def error_types(self) -> list[str]:
        return sorted(kind for kind, _ in self.errors)


class Served:
    """A server under test; ``address`` is where to reach it."""

    address: tuple[str, int]
    stopping = False  # finish_stop() was called (it may have failed)
    report: Report | None = None  # once stopped

    def begin_stop(self) -> None:
        """Ask the server to stop, without waiting: requests in flight go on."""
        raise NotImplementedError

    def finish_stop(self) -> Report:
        """Wait until the server has stopped and is closed; report what is left."""
        self.stopping = True
        self.report = self._finish()
        return self.report

    def stop(self) -> Report:
        self.begin_stop()
        return self.finish_stop()

    def _finish(self) -> Report:
        raise NotImplementedError


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        kind = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else "-"
        self.errors.append((kind, record.getMessage()))


def open_process_wide_descriptors(engine: str) -> None:
    """Open what an engine's first use opens once per process and keeps: no server's leak.

    libuv (under uvloop) opens a pipe for its signal handling with the first
    loop and keeps it for the life of the process.
    """
    if engine in ASYNC_ENGINES:
        from portico.engines.aio import new_event_loop  # noqa: PLC0415

        new_event_loop().close()


class InProcess(Served):
    """Served by ``portico.testing.serving()`` in a thread of this process."""

    def __init__(self, engine: str, kind: str) -> None:
        open_process_wide_descriptors(engine)
        self.threads_before = set(threading.enumerate())
        # Compared as sets: an earlier test's socket that the garbage collector
        # closes meanwhile is no leak of ours.
        self.fds_before = open_fds()
        self.children_before = child_pids()
        self.records = _ErrorRecords()
        logging.getLogger("portico.error").addHandler(self.records)
        base = portico.UDPServer if kind == "datagram" else portico.TCPServer
        self.server = server_class(engine, base)(("127.0.0.1", 0), handlers_for(engine)[kind])
        self._stack = contextlib.ExitStack()
        self.address = self._stack.enter_context(serving(self.server)).address
        self._stopper: threading.Thread | None = None

    def begin_stop(self) -> None:
        # shutdown() waits for the loop, which a serial server's handler holds: not here.
        self._stopper = threading.Thread(target=self.server.shutdown, name="test-stopper")
        self._stopper.start()

    def _finish(self) -> Report:
        try:
            self._stack.close()  # shutdown(), server_close(), join the serving thread
        finally:
            logging.getLogger("portico.error").removeHandler(self.records)
            if self._stopper is not None:
                self._stopper.join(DEADLINE)
        left = set(threading.enumerate()) - self.threads_before
        return Report(
            leaked_threads=sorted(
                thread.name
                for thread in left
                if thread.is_alive() and thread.name not in PROCESS_WIDE_THREADS
            ),
            leaked_fds=sorted(open_fds() - self.fds_before),
            children=sorted(child_pids() - self.children_before),
            errors=self.records.errors,
        )


def start_served(engine: str, kind: str = "stream") -> Served:
    """Serve the conformance handler for ``kind`` (stream or datagram) on ``engine``."""
    if engine in SUBPROCESS_ENGINES:
        return InSubprocess(engine, kind)
    return InProcess(engine, kind)


class InSubprocess(Served):
    """Served by ``engine_server.py`` from the main thread of a subprocess."""

    def __init__(self, engine: str, kind: str) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), engine, kind],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            encoding="utf-8",
        )
        try:
            line = self._read_line()
            assert line.startswith("LISTENING "), line
        except BaseException:
            self.kill()
            raise
        self.address = ("127.0.0.1", int(line.split()[1]))

    def _read_line(self) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], DEADLINE)
        if not ready:
            raise AssertionError(f"engine_server wrote nothing in time:\n{self.stderr()}")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(DEADLINE)
            raise AssertionError(f"engine_server exited {self.proc.returncode}:\n{self.stderr()}")
        return line

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()

    def begin_stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def _finish(self) -> Report:
        try:
            report = json.loads(self._read_line())
            assert self.proc.wait(DEADLINE) == 0, self.stderr()
            stderr = self.stderr()
        finally:
            self.kill()
        errors = []
        for line in stderr.splitlines():
            if line.startswith("ERROR-RECORD\t"):
                _, kind, message = line.split("\t", 2)
                errors.append((kind, message))
        return Report(
            leaked_threads=["?"] * (report["threads_after"] - report["threads_before"]),
            leaked_fds=sorted(set(report["fds_after"]) - set(report["fds_before"])),
            children=report["children"],
            errors=errors,
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(DEADLINE)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


def client_threads(target: Callable[[int], Any], count: int) -> list[Any]:
    """Run ``target(i)`` for i in range(count), each in its own thread, all at once.

    Returns the results in order; re-raises the first exception a client raised.
    """
    results: list[Any] = [None] * count
    failures: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        try:
            barrier.wait(DEADLINE)
            results[index] = target(index)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,), name=f"client-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(2 * DEADLINE)
    assert not any(thread.is_alive() for thread in threads), "a client hung"
    if failures:
        raise failures[0]
    return results
