"""The slowloris attacker: N connections, each trickling a byte every 1-2 s, from one loop.

Run by the harness as its own process (``python -m bench.slowloris.attacker
--port N``), so that its CPU is its own and it shares no interpreter lock
with the client being measured.  One selector (epoll) drives every
connection: it opens them, at most ``--connect-batch`` connecting at once (a
burst of SYNs would overflow a small listen backlog, the stdlib's 5), sends
each a first byte as soon as it is connected (so a minimum receive rate's
window starts), then one more byte at a random moment 1-2 s after the last,
never a newline: the line never ends.  A connection the server closes
(end of stream or reset) is a **cut**: it is counted, with how long it
lived, and replaced at once, as the slowloris tool does, so that the server
keeps facing ``--connections`` of them.

It talks to the harness in lines: it prints JSON events on stdout
(``ready`` once every connection is open, or when ``--setup-timeout`` has
passed; ``marked``; ``done`` with its statistics), and reads commands on
stdin: ``mark`` starts the measured window (the statistics from then on are
the window's), ``stop`` (or the end of stdin: the harness is gone) closes
every connection, prints ``done`` and exits.  It stops by itself after
``--max-seconds`` whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import heapq
import itertools
import json
import os
import random
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["AttackerFailed", "AttackerProcess", "AttackerStats", "main"]

CONNECT_TIMEOUT = 10.0  # a connect() unanswered this long is a failure, retried
RETRY_PAUSE = 0.2  # after a failed connect, before the next attempt
TRICKLE = b"slowlorisXabcdefghijklmnopqrstuvwxyz"  # never a newline
# Linux: bind() to a source address without picking a port until connect().
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Conn:
    sock: socket.socket
    started: float
    connected: float | None = None
    sent: int = 0
    closed: bool = False


@dataclass
class AttackerStats:
    """Counts over the measured window (from ``mark``), or from the start before it."""

    started: float
    cpu_start: float
    opened: int = 0  # connections that completed their connect()
    connect_failures: int = 0
    cuts: int = 0  # connections the server closed (end of stream or reset)
    lifetimes: list[float] = field(default_factory=list)  # seconds, of those cut
    bytes_sent: int = 0
    bytes_received: int = 0  # the server answered a slowloris connection (a "busy" reply)
    min_open: int | None = None
    max_open: int = 0

    def note_open(self, count: int) -> None:
        self.min_open = count if self.min_open is None else min(self.min_open, count)
        self.max_open = max(self.max_open, count)

    def as_dict(self, now: float, open_now: int) -> dict[str, Any]:
        wall = now - self.started
        cpu = cpu_seconds() - self.cpu_start
        return {
            "seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 4),
            "cpu_fraction": round(cpu / wall, 4) if wall > 0 else None,
            "opened": self.opened,
            "connect_failures": self.connect_failures,
            "cuts": self.cuts,
            "cut_lifetime_median_s": (
                round(statistics.median(self.lifetimes), 3) if self.lifetimes else None
            ),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "open_now": open_now,
            "min_open": self.min_open if self.min_open is not None else open_now,
            "max_open": max(self.max_open, open_now),
        }


class Attack:
    """The loop: open, trickle, notice cuts, replace them; commands from stdin."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.target = (args.host, args.port)
        self.sources = [f"127.0.0.{2 + index}" for index in range(args.sources)]
        self.selector = selectors.DefaultSelector()
        self.random = random.Random(args.seed)
        self.timers: list[tuple[float, int, Conn]] = []  # (when, tie-break, conn): a byte due
        self.deadlines: list[tuple[float, int, Conn]] = []  # connect() timeouts
        self.order = itertools.count()
        self.connecting = 0
        self.open = 0
        self.wanted = args.connections  # connections still to open (initial, and to replace)
        self.retry_at = 0.0
        self.opened_total = 0
        now = time.monotonic()
        self.started = now
        self.stats = AttackerStats(now, cpu_seconds())
        self.ready_said = False
        self.stopping = False
        self.stdin_buffer = b""

    # -- events to the harness --------------------------------------------------------

    def say(self, event: str, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()

    # -- opening ----------------------------------------------------------------------

    def open_more(self, now: float) -> None:
        while (
            self.wanted > 0 and self.connecting < self.args.connect_batch and now >= self.retry_at
        ):
            self.wanted -= 1
            self.connecting += 1
            self.start_connect(now)

    def start_connect(self, now: float) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        source = self.sources[self.opened_total % len(self.sources)]
        self.opened_total += 1
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        conn = Conn(sock, now)
        try:
            sock.bind((source, 0))
            code = sock.connect_ex(self.target)
        except OSError:
            code = errno.EADDRNOTAVAIL
        if code not in (0, errno.EINPROGRESS):
            self.connect_failed(conn, now)
            return
        self.selector.register(sock, selectors.EVENT_WRITE, conn)
        heapq.heappush(self.deadlines, (now + CONNECT_TIMEOUT, next(self.order), conn))

    def connect_failed(self, conn: Conn, now: float) -> None:
        self.close(conn)
        self.connecting -= 1
        self.stats.connect_failures += 1
        self.wanted += 1
        self.retry_at = now + RETRY_PAUSE

    def connected(self, conn: Conn, now: float) -> None:
        error = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self.selector.unregister(conn.sock)
            self.connect_failed(conn, now)
            return
        self.connecting -= 1
        self.open += 1
        self.stats.opened += 1
        conn.connected = now
        self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
        self.trickle(conn, now)  # the first byte at once: a rate window starts
        self.stats.note_open(self.open)

    # -- trickling and cuts -------------------------------------------------------------

    def trickle(self, conn: Conn, now: float) -> None:
        byte = TRICKLE[conn.sent % len(TRICKLE) : conn.sent % len(TRICKLE) + 1]
        try:
            sent = conn.sock.send(byte)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.cut(conn, now)
            return
        conn.sent += sent
        self.stats.bytes_sent += sent
        delay = self.random.uniform(self.args.interval_min, self.args.interval_max)
        heapq.heappush(self.timers, (now + delay, next(self.order), conn))

    def readable(self, conn: Conn, now: float) -> None:
        try:
            data = conn.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.stats.bytes_received += len(data)
            return
        self.cut(conn, now)

    def cut(self, conn: Conn, now: float) -> None:
        """The server closed this connection: count it, replace it."""
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        self.close(conn)
        self.open -= 1
        self.stats.cuts += 1
        self.stats.lifetimes.append(now - (conn.connected or conn.started))
        self.stats.note_open(self.open)
        if not self.stopping:
            self.wanted += 1

    def close(self, conn: Conn) -> None:
        conn.closed = True
        conn.sock.close()

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        with contextlib.suppress(OSError):
            os.set_blocking(0, False)
        self.selector.register(0, selectors.EVENT_READ, None)  # stdin: the harness's commands
        stop_at = self.started + self.args.max_seconds
        while not self.stopping:
            now = time.monotonic()
            if now >= stop_at:
                break
            self.open_more(now)
            self.say_ready(now)
            timeout = self.next_wakeup(now, stop_at)
            for key, _ in self.selector.select(timeout):
                self.dispatch(key, time.monotonic())
            self.due(time.monotonic())
        self.finish()

    def next_wakeup(self, now: float, stop_at: float) -> float:
        soonest = stop_at
        # Entries are dropped lazily: a byte for a closed connection, a connect() deadline
        # for one that has connected (or closed) since.
        while self.timers and self.timers[0][2].closed:
            heapq.heappop(self.timers)
        while self.deadlines and (
            self.deadlines[0][2].closed or self.deadlines[0][2].connected is not None
        ):
            heapq.heappop(self.deadlines)
        for heap in (self.timers, self.deadlines):
            if heap:
                soonest = min(soonest, heap[0][0])
        if self.wanted and self.retry_at > now:
            soonest = min(soonest, self.retry_at)
        if not self.ready_said:
            soonest = min(soonest, self.started + self.args.setup_timeout)
        return max(0.0, soonest - now)

    def dispatch(self, key: selectors.SelectorKey, now: float) -> None:
        conn = key.data
        if conn is None:
            self.command()
        elif conn.closed:
            return
        elif conn.connected is None:
            self.connected(conn, now)
        else:
            self.readable(conn, now)

    def due(self, now: float) -> None:
        while self.timers and self.timers[0][0] <= now:
            _, _, conn = heapq.heappop(self.timers)
            if not conn.closed:
                self.trickle(conn, now)
        while self.deadlines and self.deadlines[0][0] <= now:
            _, _, conn = heapq.heappop(self.deadlines)
            if not conn.closed and conn.connected is None:
                self.selector.unregister(conn.sock)
                self.connect_failed(conn, now)

    def say_ready(self, now: float) -> None:
        if self.ready_said:
            return
        complete = self.open >= self.args.connections
        if complete or now - self.started >= self.args.setup_timeout:
            self.ready_said = True
            self.say(
                "ready", open=self.open, complete=complete, seconds=round(now - self.started, 3)
            )

    def command(self) -> None:
        try:
            chunk = os.read(0, 4096)
        except BlockingIOError:
            return
        if not chunk:  # the harness is gone
            self.stopping = True
            return
        self.stdin_buffer += chunk
        while b"\n" in self.stdin_buffer:
            line, self.stdin_buffer = self.stdin_buffer.split(b"\n", 1)
            word = line.strip().decode(errors="replace")
            if word == "mark":
                now = time.monotonic()
                self.stats = AttackerStats(now, cpu_seconds())
                self.stats.note_open(self.open)
                self.say("marked", open=self.open)
            elif word == "stop":
                self.stopping = True

    def finish(self) -> None:
        self.stopping = True
        now = time.monotonic()
        result = self.stats.as_dict(now, self.open)
        total = {"seconds": round(now - self.started, 3), "cpu_seconds": round(cpu_seconds(), 4)}
        for key in list(self.selector.get_map().values()):
            if key.data is not None:
                self.close(key.data)
        self.selector.close()
        self.say("done", window=result, total=total, connections=self.args.connections)


# -- the harness's side -----------------------------------------------------------------


class AttackerFailed(RuntimeError):
    """The attacker exited, or did not say what it was asked to in time."""


class AttackerProcess:
    """The attacker as the harness sees it: events from its stdout, commands to its stdin."""

    STOP_GRACE = 10.0

    def __init__(self, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.popen = popen
        self.log = log
        self.buffer = b""

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        argv: Sequence[str],
        *,
        log: Path,
        preexec: Callable[[], None] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Iterator[AttackerProcess]:
        """Start it; on the way out stop it (``stop``, then SIGKILL to its PID alone)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as errors:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                cwd=cwd,
                env=env,
                preexec_fn=preexec,  # noqa: PLW1509 (the harness runs no threads)
            )
        attacker = cls(popen, log)
        try:
            yield attacker
        finally:
            attacker.close()

    def event(self, name: str, timeout: float) -> dict[str, Any]:
        """The next event called ``name`` (earlier ones are skipped), within ``timeout`` s."""
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.popen.stdout, selectors.EVENT_READ)
            while True:
                while b"\n" in self.buffer:
                    line, self.buffer = self.buffer.split(b"\n", 1)
                    event = json.loads(line)
                    if event.get("event") == name:
                        return dict(event)
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise AttackerFailed(f"no {name!r} from the attacker within {timeout:g} s")
                chunk = os.read(self.popen.stdout.fileno(), 65536)
                if not chunk:
                    raise AttackerFailed(
                        f"the attacker exited (status {self.popen.wait()}) before {name!r}: "
                        + self.log.read_text(errors="replace")[-500:]
                    )
                self.buffer += chunk

    def command(self, word: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(word.encode() + b"\n")
        self.popen.stdin.flush()

    def stop(self, timeout: float = STOP_GRACE) -> dict[str, Any]:
        """Ask it to stop; its final statistics."""
        self.command("stop")
        done = self.event("done", timeout)
        self.popen.wait(timeout)
        return done

    def close(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(OSError):
                self.command("stop")
            try:
                self.popen.wait(self.STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.popen.kill()  # SIGKILL to its PID: it started nothing of its own
                self.popen.wait()
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


# -- its command line ---------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.slowloris.attacker",
        description="Slowloris connections trickling a byte every 1-2 s, from one loop.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--interval-min", type=float, default=1.0, help="seconds between bytes")
    parser.add_argument("--interval-max", type=float, default=2.0)
    parser.add_argument(
        "--sources",
        type=int,
        default=1,
        help="source addresses 127.0.0.2 onwards (the measured client is 127.0.0.1)",
    )
    parser.add_argument("--connect-batch", type=int, default=64, help="connects in flight")
    parser.add_argument("--setup-timeout", type=float, default=30.0)
    parser.add_argument("--max-seconds", type=float, default=300.0, help="stop by then anyway")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not 0 < args.interval_min <= args.interval_max:
        parser.error("need 0 < --interval-min <= --interval-max")
    if args.connections < 1 or args.sources < 1 or args.connect_batch < 1:
        parser.error("--connections, --sources and --connect-batch must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    Attack(args).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
