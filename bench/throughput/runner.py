"""One cell against one server: start it pinned, wait until it answers, load it, stop it.

Every cell gets a fresh server on a fresh port, so that memory figures start
from a clean process and no cell inherits another's threads or connections.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

from bench.throughput.build import BUILD_DIR, BuildError
from bench.throughput.loadgen import LoadgenFailed, LoadResult, run_loadgen
from bench.throughput.machine import wait_for_quiet
from bench.throughput.procs import (
    ServerFailed,
    ServerProcess,
    free_port,
    running_server,
    wait_ready,
)
from bench.throughput.results import CellResult
from bench.throughput.servers import ServerSpec
from bench.throughput.workloads import Cell, Timing

__all__ = ["RunConfig", "run_cell"]


@dataclass(frozen=True)
class RunConfig:
    """Where things run: the timing, the CPUs, the load generator, the server logs."""

    timing: Timing
    loadgen: Path
    server_cpu: int | None = 0  # None: not pinned (the CPUs the harness may use)
    loadgen_cpu: int | None = 1
    log_dir: Path = BUILD_DIR / "logs"
    tls_loadgen: Path | None = None  # the load generator built with TLS, for TLS cells

    def loadgen_for(self, cell: Cell) -> Path:
        """The load generator that runs ``cell``: TLS cells need the one built with TLS."""
        if cell.transport != "tls":
            return self.loadgen
        if self.tls_loadgen is None:
            raise BuildError("no load generator built with TLS (build('loadgen-tls'))")
        return self.tls_loadgen


class TreePeak:
    """The highest memory of a forking server and its children (summed PSS), sampled."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.peak = 0

    def sample(self) -> None:
        self.peak = max(self.peak, self.server.tree_pss_kib())


def run_cell(
    server: ServerSpec, cell: Cell, config: RunConfig, run: int, quiet_wait: float = 0.0
) -> CellResult:
    """Measure ``cell`` on ``server``; n/a or failed results say why.

    First wait, at most ``quiet_wait`` seconds, for other processes' load to pass.
    """
    names = (server.name, cell.name, cell.workload, run)
    reason = server.not_applicable(cell) or server.unavailable(cell)
    if reason:
        return CellResult.skipped(*names, reason)
    waited, _ = wait_for_quiet(quiet_wait)
    try:
        load, memory = _measure(server, cell, config, run)
    except (ServerFailed, LoadgenFailed, BuildError, OSError) as exc:
        return CellResult.failed(*names, f"{type(exc).__name__}: {exc}")
    return dataclasses.replace(CellResult.measured(*names, load, memory), quiet_wait_s=waited)


def _measure(
    server: ServerSpec, cell: Cell, config: RunConfig, run: int
) -> tuple[LoadResult, dict[str, int | None]]:
    loadgen = config.loadgen_for(cell)
    port = free_port(cell.transport)
    argv = server.command(cell.transport, port)
    log = config.log_dir / f"{server.name}.{cell.name}.{run}.log"
    with running_server(
        argv, cpu=config.server_cpu, log=log, stop_leader=server.stop_leader
    ) as process:
        said = server.ready
        ready = None if said is None else functools.partial(said, process, port)
        wait_ready(process, cell.transport, port, ready=ready)
        start = process.rss_kib()
        tree = TreePeak(process) if server.forks else None
        load = run_loadgen(
            loadgen,
            cell.load(config.timing),
            port,
            server_pid=process.pid,
            server_tree=server.forks,
            cpu=config.loadgen_cpu,
            sample=tree.sample if tree else None,
        )
        peak = process.peak_rss_kib()
        if process.popen.poll() is not None:
            raise ServerFailed(
                f"exited with status {process.popen.returncode} during the run\n"
                + process.log_tail()
            )
    if tree is not None:
        peak = max(peak or 0, tree.peak)
    return load, {"start": start, "peak": peak}
