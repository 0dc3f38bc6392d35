"""What the attack suite does to a real ``portico serve``, and how it checks the server.

``AttackServer`` is one ``python -m portico serve`` subprocess (a
``portico.testing.ServerProcess`` reading its stderr in a thread) with what
every attack test asks of it at the end: still running, a normal client
answered correctly, and a bounded peak memory (``VmHWM``), recorded.

The clients are plain sockets driven by a selector: ``pump()`` sends while it
reads, so that neither side ever waits for the other's buffers;
``checked_conversation()`` is the normal client (random lines, a SHA-256 of
the replies compared with one of the upper-cased lines); ``Trickler`` keeps
many slowloris connections trickling from one thread.  Nothing sleeps to
synchronise: waits are for a log line of the server or a socket event, with a
deadline.  The slow clients' pace is the behaviour under test.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import heapq
import json
import os
import random
import re
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portico.testing import ServerProcess, clean_env

__all__ = [
    "DEADLINE",
    "SHORT_LIMITS",
    "MIB",
    "AttackServer",
    "Exchange",
    "Trickler",
    "checked_conversation",
    "closed_by_server",
    "converse_checked",
    "pump",
    "random_lines",
    "read_until_closed",
    "serve_help",
]

PORTICO = (sys.executable, "-m", "portico")
DEADLINE = 10.0  # seconds for any one thing we wait for: generous on a loaded 2-core machine
MIB = 1024 * 1024
# Every server's: short windows, so that the limits fire within the suite's time budget, and
# a short drain, so that stopping it at the end is bounded.
SHORT_LIMITS = ("--min-receive-rate-window", "2", "--send-timeout", "2", "--drain-timeout", "5")
# Lowers RLIMIT_NOFILE (soft and hard: the server cannot raise it back), then becomes the
# server: exec keeps the pid, so /proc/PID is the server's.
LIMIT_NOFILE_THEN_EXEC = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])"
)
# The normal client's alphabet: lower case to see the upper-casing, never a ':' (the
# trigger lines of attack_handlers have one).
ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;-_/"
CONNECTION_LOST = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


@functools.cache
def serve_help() -> str:
    """``portico serve --help``, to ask which flags this version has."""
    return subprocess.run(
        [*PORTICO, "serve", "--help"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=2 * DEADLINE,
        check=True,
    ).stdout


# -- the server ---------------------------------------------------------------------


def proc_status(pid: int, field_name: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmHWM, VmRSS), in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise LookupError(f"no {field_name} in /proc/{pid}/status")


def children_of(pid: int) -> list[int]:
    """The pids of ``pid``'s children (every thread's), from /proc."""
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            path = f"/proc/{pid}/task/{task}/children"
            with contextlib.suppress(FileNotFoundError), open(path, encoding="ascii") as children:
                found.extend(int(child) for child in children.read().split())
    return found


class ChildMemory(threading.Thread):
    """The largest VmHWM among a forking server's children, sampled every 10 ms.

    The server's own VmHWM says nothing of its children (the fork engine's
    handlers run in them), and a child is gone once it served its
    connection.  VmHWM is a high-water mark, so a sample taken any time
    before the child exits has its peak so far: only growth in its last
    10 ms can be missed, and a child that lives less is not seen at all
    (``children_seen`` says how many were).  A measurement pace, not
    synchronisation.
    """

    INTERVAL = 0.01

    def __init__(self, pid: int) -> None:
        super().__init__(name=f"children of {pid}", daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.children_seen: set[int] = set()
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self.INTERVAL):
            for child in children_of(self.pid):
                with contextlib.suppress(FileNotFoundError, ProcessLookupError, LookupError):
                    self.peak_kib = max(self.peak_kib, proc_status(child, "VmHWM"))
                    self.children_seen.add(child)

    def stop(self) -> None:
        self._stopping.set()
        self.join(DEADLINE)


Recorder = Callable[[dict[str, Any]], None]


class AttackServer(ServerProcess):
    """``portico serve`` in a subprocess, its stderr lines, its address and its memory."""

    def __init__(
        self,
        engine: str,
        flags: Sequence[str],
        *,
        record: Recorder,
        handler: str = "upper",
        nofile: int | None = None,
        pythonpath: Path | None = None,
    ) -> None:
        prefix: list[str] = []
        if nofile is not None:
            prefix = [sys.executable, "-c", LIMIT_NOFILE_THEN_EXEC, str(nofile)]
        command = [*prefix, *PORTICO, "serve", handler, "--engine", engine, "--bind"]
        super().__init__(
            [*command, "127.0.0.1:0", *SHORT_LIMITS, *flags],
            drain=True,
            env=clean_env(pythonpath=pythonpath),
            timeout=DEADLINE,
        )
        self.engine = engine
        self._record = record
        self.children: ChildMemory | None = None
        try:
            [serving] = self.wait_for(r"INFO portico\.cli: serving on 127\.0\.0\.1:(\d+)")
        except BaseException:
            self.close()  # no caller holds it yet to close it
            raise
        self.address = ("127.0.0.1", int(serving[1]))
        if engine == "fork":
            self.children = ChildMemory(self.pid)
            self.children.start()

    def count(self, text: str) -> int:
        """How many of the lines read so far contain ``text``."""
        return sum(text in line for line in self.lines)

    def expect_log(self, pattern: str, problem: str, timeout: float | None = None) -> re.Match[str]:
        """The first log line matching ``pattern``, waited for; AssertionError with
        ``problem`` and the log if none comes within ``timeout`` (the deadline) or before
        the log ends."""
        try:
            [match] = self.wait_for(pattern, timeout=timeout)
        except (TimeoutError, AssertionError):
            raise AssertionError(self.explain(f"{problem}: no line matching {pattern!r}")) from None
        return match

    def assert_running(self) -> None:
        assert self.popen.poll() is None, self.explain("the server is no longer running")

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the whole process (every thread), from /proc."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as file:
            stat = file.read()
        # Fields after "(comm)": state is field 3; utime and stime are fields 14 and 15.
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def finish(self, case: str, *, bound_mib: float, **figures: Any) -> None:
        """The verdict every attack ends with, and the figures it records.

        The server still runs, a normal client is answered correctly, its
        peak memory (VmHWM; for the fork engine also its largest child's) is
        under ``bound_mib``, and it stops cleanly on SIGTERM; ``lines`` then
        holds its whole log.  The figures are recorded whenever the server
        is still there to measure, even if the normal client failed.
        """
        self.assert_running()
        try:
            checked_conversation(self.address)
        except (AssertionError, OSError) as exc:
            raise AssertionError(
                self.explain(f"after the attack ({case}), a normal client failed: {exc!r}")
            ) from None
        finally:
            if self.popen.poll() is None:
                record = self._record_memory(case, bound_mib, figures)
        self.assert_running()
        assert self.stop() == 0, self.explain("the server did not stop cleanly")
        for what, kib in (
            ("the server's", record["server_vmhwm_kib"]),
            ("a child's", record.get("children_vmhwm_kib_max", 0)),
        ):
            assert kib < bound_mib * 1024, self.explain(
                f"{what} peak memory {kib / 1024:.1f} MiB, over {bound_mib} MiB"
            )

    def _record_memory(
        self, case: str, bound_mib: float, figures: dict[str, Any]
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "engine": self.engine,
            "case": case,
            "server_vmhwm_kib": proc_status(self.pid, "VmHWM"),
            "bound_kib": int(bound_mib * 1024),
            **figures,
        }
        if self.children is not None:
            self.children.stop()
            record["children_vmhwm_kib_max"] = self.children.peak_kib
            record["children_sampled"] = len(self.children.children_seen)
        self._record(record)
        return record

    def close(self) -> None:
        try:
            if self.children is not None:
                self.children.stop()
        finally:
            super().close()  # the server is killed whatever happened


# -- clients ------------------------------------------------------------------------


@dataclass
class Exchange:
    """What ``pump()`` did: bytes sent, bytes received (kept or counted) and how it ended."""

    sent: int = 0
    received: bytearray = field(default_factory=bytearray)
    received_count: int = 0
    ended: str = ""  # "expected", "eof" (the server closed), "reset" (or broken pipe)


def pump(
    sock: socket.socket,
    payload: bytes,
    *,
    repeat: int = 1,
    expect: int | None = None,
    keep: bool = True,
    timeout: float = DEADLINE,
) -> Exchange:
    """Send ``payload`` ``repeat`` times while reading what comes back.

    Stops once ``expect`` bytes came back; with ``expect`` None, half-closes
    once everything is sent and reads to the end.  The server closing
    (end of file, reset, broken pipe) ends it too: ``ended`` says which.
    ``keep`` False only counts the bytes received.  TimeoutError after
    ``timeout`` seconds.
    """
    result = Exchange()
    deadline = time.monotonic() + timeout
    outgoing = _Outgoing(payload, repeat)
    previous = sock.gettimeout()
    sock.setblocking(False)
    with selectors.DefaultSelector() as selector, _restored_timeout(sock, previous):
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        try:
            if outgoing.done:
                _sent_all(sock, selector, expect)
            while expect is None or result.received_count < expect:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"pump: no end in {timeout} s: {result.sent} bytes sent, "
                        f"{result.received_count} received"
                    )
                for _, events in selector.select(remaining):
                    if events & selectors.EVENT_READ and not _receive(sock, result, keep):
                        result.ended = "eof"
                        return result
                    if events & selectors.EVENT_WRITE and not outgoing.done:
                        result.sent += outgoing.send(sock)
                        if outgoing.done:
                            _sent_all(sock, selector, expect)
        except CONNECTION_LOST:
            result.ended = "reset"
            return result
    result.ended = "expected"
    return result


@contextlib.contextmanager
def _restored_timeout(sock: socket.socket, timeout: float | None) -> Iterator[None]:
    try:
        yield
    finally:
        if sock.fileno() != -1:
            sock.settimeout(timeout)


class _Outgoing:
    """``payload``, ``repeat`` times, sent without copying it."""

    def __init__(self, payload: bytes, repeat: int) -> None:
        self.payload = payload
        self.left = repeat if payload else 0
        self.view = memoryview(b"")

    @property
    def done(self) -> bool:
        return not self.view and not self.left

    def send(self, sock: socket.socket) -> int:
        if not self.view:
            self.view, self.left = memoryview(self.payload), self.left - 1
        try:
            sent = sock.send(self.view[:MIB])
        except BlockingIOError:
            return 0
        self.view = self.view[sent:]
        return sent


def _sent_all(sock: socket.socket, selector: selectors.BaseSelector, expect: int | None) -> None:
    """Everything is sent: read only, and half-close if reading to the end."""
    selector.modify(sock, selectors.EVENT_READ)
    if expect is None:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:  # reset already: Linux says ENOTCONN
            if exc.errno != errno.ENOTCONN:
                raise
            raise ConnectionResetError(exc.errno, "reset before the half-close") from exc


def _receive(sock: socket.socket, result: Exchange, keep: bool) -> bool:
    """Read what arrived into ``result``; False at end of file."""
    try:
        chunk = sock.recv(MIB)
    except BlockingIOError:
        return True
    if not chunk:
        return False
    result.received_count += len(chunk)
    if keep:
        result.received += chunk
    return True


def random_lines(count: int) -> list[bytes]:
    rng = random.Random(os.urandom(16))
    return [bytes(rng.choices(ALPHABET, k=rng.randint(1, 200))) + b"\n" for _ in range(count)]


def assert_same(replies: bytes, expected: bytes, what: str) -> None:
    """Compare by SHA-256, with lengths and the first difference for the failure message."""
    if hashlib.sha256(replies).digest() == hashlib.sha256(expected).digest():
        return
    where = next(
        (i for i, (a, b) in enumerate(zip(replies, expected)) if a != b),
        min(len(replies), len(expected)),
    )
    raise AssertionError(
        f"{what}: replies differ from the expected ones: {len(replies)} bytes, "
        f"expected {len(expected)}; first difference at byte {where}: "
        f"{bytes(replies[where : where + 40])!r} != {expected[where : where + 40]!r}"
    )


def checked_conversation(
    address: tuple[str, int], *, count: int = 50, half_close: bool = False
) -> None:
    """The normal client: a new connection, ``count`` random lines, every reply checked."""
    with socket.create_connection(address, timeout=DEADLINE) as sock:
        converse_checked(sock, count, half_close=half_close)


def converse_checked(
    sock: socket.socket, count: int, *, half_close: bool = False, what: str = "normal client"
) -> None:
    """``count`` random lines on ``sock``, the replies compared with the lines upper-cased
    by SHA-256.  Replies are read while the lines go out; ``half_close`` shuts the sending
    side after the last line and reads every reply, to the end."""
    payload = b"".join(random_lines(count))
    expected = payload.upper()
    exchange = pump(sock, payload, expect=None if half_close else len(expected))
    assert_same(bytes(exchange.received), expected, f"{what} ({exchange.ended})")


def closed_by_server(sock: socket.socket, timeout: float = DEADLINE) -> str:
    """Read (and drop) to the end: "eof" or "reset" once the server closed; else TimeoutError."""
    return read_until_closed(sock, timeout, keep=False)[1]


def read_until_closed(
    sock: socket.socket, timeout: float = DEADLINE, *, keep: bool = True
) -> tuple[bytes, str]:
    """What arrives until the server closes, and how it closed: "eof" or "reset"."""
    sock.settimeout(timeout)
    received = bytearray()
    try:
        while chunk := sock.recv(MIB):
            if keep:
                received += chunk
    except CONNECTION_LOST:
        return bytes(received), "reset"
    return bytes(received), "eof"


# -- slowloris ----------------------------------------------------------------------


class Trickler(threading.Thread):
    """Slowloris from one thread: each socket sends one byte every 0.5 to 1 s.

    A selector watches every socket for the server closing it (end of file
    or reset, or a broken pipe on the next byte); ``closed`` holds those.
    It ends once the server closed them all, or after ``duration`` seconds.
    The byte is ``x``, never a newline: a reply would start a new rate window.
    """

    def __init__(self, sockets: list[socket.socket], duration: float) -> None:
        super().__init__(name="slowloris", daemon=True)
        self.sockets = sockets
        self.duration = duration
        self.closed: dict[int, str] = {}  # index in sockets -> "eof" or "reset"
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self._rng = random.Random(os.urandom(16))

    @property
    def open_count(self) -> int:
        return len(self.sockets) - len(self.closed)

    def run(self) -> None:
        try:
            self._trickle()
        except BaseException as exc:  # re-raised by join_checked() in the test's thread
            self.error = exc
        finally:
            self.finished.set()

    def join_checked(self, timeout: float) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the slowloris thread did not end in time"
        if self.error is not None:
            raise self.error

    def _trickle(self) -> None:
        end = time.monotonic() + self.duration
        now = time.monotonic()
        due = [(now + self._rng.uniform(0.0, 1.0), index) for index in range(len(self.sockets))]
        heapq.heapify(due)
        with selectors.DefaultSelector() as selector:
            for index, sock in enumerate(self.sockets):
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ, index)
            while due and self.open_count and time.monotonic() < end:
                wait = min(due[0][0], end) - time.monotonic()
                for key, _ in selector.select(max(wait, 0.0)):
                    self._read(selector, key.data)
                now = time.monotonic()
                while due and due[0][0] <= now:
                    _, index = heapq.heappop(due)
                    if index not in self.closed and self._send(selector, index):
                        heapq.heappush(due, (now + self._rng.uniform(0.5, 1.0), index))

    def _read(self, selector: selectors.BaseSelector, index: int) -> None:
        try:
            if self.sockets[index].recv(4096):
                return  # the server answered something: not what a trickle expects, but harmless
            how = "eof"
        except BlockingIOError:
            return
        except CONNECTION_LOST:
            how = "reset"
        self._close(selector, index, how)

    def _send(self, selector: selectors.BaseSelector, index: int) -> bool:
        try:
            self.sockets[index].send(b"x")
        except BlockingIOError:
            pass  # its buffer is full: the server stopped reading it; try again later
        except CONNECTION_LOST:
            self._close(selector, index, "reset")
            return False
        return True

    def _close(self, selector: selectors.BaseSelector, index: int, how: str) -> None:
        self.closed[index] = how
        selector.unregister(self.sockets[index])


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (tests in one process run one at a time)."""
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(record, sort_keys=True) + "\n")
