"""One server through the whole sequence: without attack, then under 1,000 slowloris connections.

For each server: start it (pinned to the server CPU, as ``bench.throughput``
does, with ``procs.running_server``), wait until it answers, warm it up, open
the client's persistent connection, then measure the two modes without an
attack; start the attacker and wait until its connections are open, let them
trickle for ``settle`` seconds, then measure the same two modes again under
attack; stop the attacker, stop the server.  The server's, the client's and
the attacker's CPU are measured over each window, and so is the CPU the rest
of the machine used (noise).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.slowloris.attacker import AttackerFailed, AttackerProcess
from bench.slowloris.client import Address, exchange, open_connection
from bench.throughput.build import BUILD_DIR, REPO_ROOT, BuildError
from bench.throughput.machine import _busy_and_total
from bench.throughput.procs import (
    ServerFailed,
    ServerProcess,
    child_environment,
    descendants,
    free_port,
    pin_current_process,
    running_server,
    wait_ready,
)
from bench.throughput.servers import ALL_SERVERS, ServerSpec, portico

__all__ = ["Settings", "run_server", "slowloris_servers"]

# The servers, in the order of the report's rows; the window variant is added by name.
SERVER_NAMES = (
    "c-epoll",
    "portico-threads",
    "portico-pool",
    "portico-event",
    "portico-async",
    "portico-fork",
    "stdlib-threads",
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc/PID/stat counts CPU time in these


def window_variant(engine: str, window: float) -> ServerSpec:
    """``portico serve --engine ENGINE --min-receive-rate-window WINDOW``: the rate limit short."""
    return portico(
        engine, options=("--min-receive-rate-window", f"{window:g}"), variant=f"w{window:g}"
    )


def slowloris_servers(cut_engine: str | None, cut_window: float) -> list[ServerSpec]:
    """The default servers: the table's, with the short-window variant after portico's engines."""
    known = {server.name: server for server in ALL_SERVERS}
    servers = [known[name] for name in SERVER_NAMES]
    # Over TCP only here: the stdlib's label names its UDP twin too.
    at = SERVER_NAMES.index("stdlib-threads")
    servers[at] = dataclasses.replace(servers[at], label="stdlib ThreadingTCPServer")
    if cut_engine:
        servers.insert(at, window_variant(cut_engine, cut_window))
    return servers


@dataclass(frozen=True)
class Settings:
    """What the run does; the defaults are those of the documented run."""

    connections: int = 1000  # slowloris connections
    requests: int = 400  # of each mode, in each phase
    interval: float = 0.02  # seconds between two requests of one mode (their due times)
    timeout: float = 2.0  # a request not answered this long after it was sent has failed
    warmup: int = 20  # requests per mode before measuring, not counted
    settle: float = 2.0  # seconds of trickling once every attacker connection is open
    trickle_min: float = 1.0  # seconds between two bytes of one slowloris connection
    trickle_max: float = 2.0
    sources: int = 1  # attacker source addresses (127.0.0.2 onwards)
    setup_timeout: float = 30.0  # for the attacker to open its connections
    server_cpu: int | None = 0  # None: not pinned
    client_cpu: int | None = 1  # the harness (the client) and the attacker
    log_dir: Path = BUILD_DIR / "logs" / "slowloris"

    def attacker_argv(self, port: int) -> list[str]:
        lifetime = self.setup_timeout + self.settle + 2 * self.phase_bound + 60
        return [
            sys.executable, "-m", "bench.slowloris.attacker", "--port", str(port),
            "--connections", str(self.connections),
            "--interval-min", f"{self.trickle_min:g}", "--interval-max", f"{self.trickle_max:g}",
            "--sources", str(self.sources), "--setup-timeout", f"{self.setup_timeout:g}",
            "--max-seconds", f"{lifetime:g}",
        ]  # fmt: skip

    @property
    def phase_bound(self) -> float:
        """The longest one phase's requests may take."""
        return self.requests * self.interval + self.timeout + 1.0


# ---------------------------------------------------------------- CPU accounting


def process_cpu_seconds(pid: int, tree: bool) -> float:
    """User + system CPU of ``pid`` (with ``tree``: its reaped and live children too)."""
    total = _stat_seconds(pid, children=tree)
    if tree:
        total += sum(_stat_seconds(child, children=False) for child in descendants(pid))
    return total


def _stat_seconds(pid: int, *, children: bool) -> float:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone: a child that exited (its parent's cutime has it once reaped)
        return 0.0
    fields = text.rpartition(")")[2].split()
    # After the name: state is field 3; utime, stime, cutime, cstime are fields 14-17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Window:
    """CPU over a stretch of wall time: the server's, the client's, the whole machine's."""

    server: ServerProcess
    tree: bool
    wall: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    busy_jiffies: int = 0
    total_jiffies: int = 0

    def __enter__(self) -> Window:
        self.wall = time.monotonic()
        self.server_cpu = process_cpu_seconds(self.server.pid, self.tree)
        self.client_cpu = own_cpu_seconds()
        self.busy_jiffies, self.total_jiffies = _busy_and_total()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall = time.monotonic() - self.wall
        self.server_cpu = process_cpu_seconds(self.server.pid, self.tree) - self.server_cpu
        self.client_cpu = own_cpu_seconds() - self.client_cpu
        busy, total = _busy_and_total()
        self.busy_jiffies, self.total_jiffies = busy - self.busy_jiffies, total - self.total_jiffies

    def record(self, attacker_cpu: float = 0.0) -> dict[str, float | None]:
        """CPUs used (1.0: one whole CPU) over the window; ``other``: the rest of the machine."""
        if self.wall <= 0:
            return {}
        cpus = len(_cpus())
        busy = cpus * self.busy_jiffies / max(1, self.total_jiffies)
        ours = (self.server_cpu + self.client_cpu + attacker_cpu) / self.wall
        return {
            "seconds": round(self.wall, 3),
            "server": round(self.server_cpu / self.wall, 3),
            "client": round(self.client_cpu / self.wall, 3),
            "attacker": round(attacker_cpu / self.wall, 3),
            "other": round(max(0.0, busy - ours), 3),
        }


def _cpus() -> list[str]:
    lines = Path("/proc/stat").read_text().splitlines()
    return [line for line in lines if line.startswith("cpu") and line[3:4].isdigit()]


# ---------------------------------------------------------------- one server


def run_server(spec: ServerSpec, settings: Settings, run: int) -> dict[str, Any]:
    """Everything for one server in one run, as one result record (status ok, n/a, failed)."""
    record: dict[str, Any] = {"type": "result", "server": spec.name, "label": spec.label}
    record["run"] = run
    why = spec.unavailable()
    if why:
        return {**record, "status": "n/a", "reason": why}
    try:
        measured = _measure(spec, settings, run)
    except (ServerFailed, AttackerFailed, BuildError, OSError) as exc:
        return {**record, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    return {**record, "status": "ok", **measured}


def _measure(spec: ServerSpec, settings: Settings, run: int) -> dict[str, Any]:
    port = free_port("tcp")
    address: Address = ("127.0.0.1", port)
    log = settings.log_dir / f"{spec.name}.{run}.log"
    with running_server(
        spec.command("tcp", port), cpu=settings.server_cpu, log=log, stop_leader=spec.stop_leader
    ) as server:
        wait_ready(server, "tcp", port)
        _warm_up(address, settings)
        sock = open_connection(address, settings.timeout)
        try:
            with Window(server, spec.forks) as quiet:
                baseline, sock = _phases(address, sock, settings)
            memory_before = _memory_kib(server, spec.forks)
            sockets_before = socket_count(server.pid, spec.forks)
            attack, sock, attacker, window = _under_attack(server, spec, address, sock, settings)
        finally:
            if sock is not None:
                sock.close()
        if server.popen.poll() is not None:
            raise ServerFailed(
                f"exited with status {server.popen.returncode} during the run\n" + server.log_tail()
            )
        log_lines = len(server.log_tail(100_000).splitlines())
    memory_after = attacker.pop("memory_kib")
    sockets_after = attacker.pop("sockets")
    held = sockets_after - sockets_before
    return {
        "phases": {"baseline": baseline, "attack": attack},
        "attacker": attacker,
        "cpu": {
            "baseline": quiet.record(),
            "attack": window.record(attacker["window"]["cpu_seconds"]),
        },
        "memory_kib": {"before": memory_before, "under_attack": memory_after},
        # The slowloris connections the server had accepted (its sockets, and its children's,
        # less those before the attack); the rest waited in its listen backlog.
        "server_held": held,
        "kib_per_slowloris": (
            round((memory_after - memory_before) / held, 2)
            if memory_after and memory_before and held > 0
            else None
        ),
        "server_log_lines": log_lines,
    }


def _warm_up(address: Address, settings: Settings) -> None:
    """A few requests of each mode first: the first thread, the first fork, the caches."""
    _, sock = exchange(address, None, settings.warmup, 0.005, settings.timeout)
    if sock is not None:
        sock.close()


def _phases(
    address: Address, sock: Any, settings: Settings
) -> tuple[dict[str, dict[str, Any]], Any]:
    """Both modes over the same seconds: the persistent connection, and new ones."""
    results, sock = exchange(address, sock, settings.requests, settings.interval, settings.timeout)
    return {mode: result.summary() for mode, result in results.items()}, sock


def _under_attack(
    server: ServerProcess, spec: ServerSpec, address: Address, sock: Any, settings: Settings
) -> tuple[dict[str, dict[str, Any]], Any, dict[str, Any], Window]:
    client_cpu = settings.client_cpu
    with AttackerProcess.running(
        settings.attacker_argv(address[1]),
        log=settings.log_dir / f"attacker.{spec.name}.log",
        preexec=None if client_cpu is None else (lambda: pin_current_process(client_cpu)),
        env=child_environment(),
        cwd=REPO_ROOT,
    ) as attacker:
        ready = attacker.event("ready", settings.setup_timeout + 10)
        time.sleep(settings.settle)
        attacker.command("mark")
        marked = attacker.event("marked", 10)
        with Window(server, spec.forks) as window:
            phases, sock = _phases(address, sock, settings)
        memory = _memory_kib(server, spec.forks)
        sockets = socket_count(server.pid, spec.forks)
        done = attacker.stop()
    stats = {
        "setup_seconds": ready["seconds"],
        "opened_at_setup": ready["open"],
        "complete": ready["complete"],
        "open_at_mark": marked["open"],
        "window": done["window"],
        "total_cpu_seconds": done["total"]["cpu_seconds"],
        "total_seconds": done["total"]["seconds"],
        "memory_kib": memory,
        "sockets": sockets,
    }
    return phases, sock, stats, window


def socket_count(pid: int, tree: bool) -> int:
    """The sockets ``pid`` holds open (with ``tree``: its children's too), from /proc/PID/fd.

    Counted by inode, so that the listener and the descriptors a forked child
    inherits count once.
    """
    inodes = set()
    for process in (pid, *(descendants(pid) if tree else ())):
        with contextlib.suppress(OSError):  # a child may exit as we read
            for fd in Path(f"/proc/{process}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:"):
                        inodes.add(target)
    return len(inodes)


def _memory_kib(server: ServerProcess, tree: bool) -> int | None:
    """Resident memory now: RSS, or for a forking server the PSS of it and its children."""
    return server.tree_pss_kib() if tree else server.rss_kib()
