"""``python -m bench.throughput``: run the matrix of servers and workloads, write the results.

    python -m bench.throughput --quick                      # the whole matrix, a few minutes
    python -m bench.throughput                              # 3 runs per cell, ~20 minutes
    python -m bench.throughput --workloads pingpong udp --servers c-epoll portico stdlib-threads
    python -m bench.throughput --preset prefork             # prefork at 1 and 2 workers, ~4-5 min
    python -m bench.throughput --preset tls                 # TLS handshakes and throughput, ~5 min

Results go to ``bench/throughput/results/{quick,full}.jsonl`` (``--out``; a run of
part of the matrix goes to ``bench/.build/results/``), with a Markdown report and PNG
plots next to them; a preset's go to ``results/PRESET.jsonl``.  Exit status 1 when a
cell failed (its reason is in the results), 2 on bad usage, or when the run has TLS
cells and the load generator cannot be built with TLS (OpenSSL's development files,
``libssl-dev``, are missing) or the certificates cannot be made.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shlex
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.throughput import report
from bench.throughput.build import BUILD_DIR, BuildError, build
from bench.throughput.machine import describe
from bench.throughput.presets import PRESETS, Preset
from bench.throughput.procs import pinned, raise_nofile_limit
from bench.throughput.results import FAILED, OK, CellResult, ResultsWriter
from bench.throughput.runner import RunConfig, run_cell
from bench.throughput.servers import ALL_SERVERS, ServerSpec, cli_has_engines, select_servers
from bench.throughput.tls import CERTIFICATE, tls_files
from bench.throughput.workloads import ALL_CELLS, FULL, QUICK, Cell, Timing, select_cells

__all__ = ["main"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SERVER_CPU, LOADGEN_CPU = 0, 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description="Throughput of servers side by side, under a C load generator.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK.duration:g} s per cell, one run (default: "
        f"{FULL.duration:g} s, {FULL.runs} runs)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named run: its servers, cells, timing and CPU placement (the options "
        "below override them); "
        + "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values()),
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        metavar="NAME",
        help="workloads (oneshot, pingpong, ...) or cells (pingpong-64x256)",
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        metavar="NAME",
        help="servers (portico-threads, ...) or families (portico, stdlib, ...)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="results file (default: results/MODE.jsonl; bench/.build/results/MODE.jsonl "
        "for part of the matrix)",
    )
    parser.add_argument("--duration", type=float, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per cell")
    parser.add_argument("--runs", type=int, help="runs per cell")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        metavar="SECONDS",
        help="before each cell, wait at most this long for other processes' "
        f"load to pass (default {FULL.quiet_wait:g}; 0: never wait)",
    )
    parser.add_argument(
        "--logs",
        type=Path,
        default=BUILD_DIR / "logs",
        help="directory for the servers' output (default: bench/.build/logs)",
    )
    parser.add_argument(
        "--share-cpus",
        action="store_true",
        help="pin nothing: servers (a prefork server's workers too) and the load generator "
        "share every CPU (default: server on CPU 0, load generator on CPU 1)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--list", action="store_true", help="list servers, cells and presets, and exit"
    )
    return parser.parse_args(argv)


def timing_from(args: argparse.Namespace, preset: Preset | None = None) -> Timing:
    timing = QUICK if args.quick else FULL
    if preset is not None:
        timing = preset.timing
        if args.quick:
            timing = dataclasses.replace(
                timing,
                name=f"{preset.timing.name}-quick",
                duration=QUICK.duration,
                warmup=QUICK.warmup,
                runs=QUICK.runs,
            )
    names = ("duration", "warmup", "runs", "quiet_wait")
    overrides = {name: getattr(args, name) for name in names}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    if overrides.get("runs", 1) < 1 or overrides.get("duration", 1) <= 0:
        raise ValueError("--runs and --duration must be positive")
    if overrides.get("warmup", 0) < 0:
        raise ValueError("--warmup cannot be negative")
    return dataclasses.replace(timing, **overrides)


def default_out(timing: Timing, *, whole: bool) -> Path:
    """results/MODE.jsonl for the whole matrix; a part of it goes to bench/.build/."""
    return (RESULTS_DIR if whole else BUILD_DIR / "results") / f"{timing.name}.jsonl"


def cpus(*, share: bool = False) -> tuple[int | None, int | None]:
    """Server and load generator CPUs; None (no pinning) when shared or without two CPUs."""
    if share:
        return None, None
    available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    if {SERVER_CPU, LOADGEN_CPU} <= available:
        return SERVER_CPU, LOADGEN_CPU
    print(
        "bench.throughput: CPUs 0 and 1 are not both available: nothing is pinned", file=sys.stderr
    )
    return None, None


def meta_record(
    argv: Sequence[str] | None,
    timing: Timing,
    servers: list[ServerSpec],
    cells: list[Cell],
    config: RunConfig,
    preset: Preset | None = None,
) -> dict[str, Any]:
    args = sys.argv[1:] if argv is None else list(argv)
    return {
        "command": shlex.join(["python", "-m", "bench.throughput", *args]),
        "preset": preset.name if preset else None,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**describe(), "portico_serve_engines": cli_has_engines()},
        "timing": dataclasses.asdict(timing),
        "server_cpu": config.server_cpu,
        "loadgen_cpu": config.loadgen_cpu,
        "servers": [{"name": s.name, "label": s.label, "family": s.family} for s in servers],
        "cells": [{"name": c.name, "workload": c.workload, "label": c.label} for c in cells],
        **({"tls": tls_meta()} if any(c.transport == "tls" for c in cells) else {}),
    }


def tls_meta() -> dict[str, str]:
    """What the TLS cells serve, and with which OpenSSL the Python servers run."""
    return {"certificate": CERTIFICATE, "python_openssl": ssl.OPENSSL_VERSION}


def tls_loadgen(cells: list[Cell]) -> Path | None:
    """The load generator built with TLS, when a cell needs it (BuildError: cannot)."""
    if not any(cell.transport == "tls" for cell in cells):
        return None
    tls_files()  # made now: a failure is a usage error, not a failure per cell
    return build("loadgen-tls")


def list_matrix() -> None:
    print("servers:")
    for server in ALL_SERVERS:
        why = server.unavailable()
        print(f"  {server.name:26} {server.label}" + (f"  [unavailable: {why}]" if why else ""))
    print("cells:")
    for cell in ALL_CELLS:
        print(f"  {cell.name:26} {cell.workload}: {cell.label}")
    print("presets:")
    for preset in PRESETS.values():
        print(f"  {preset.name:26} {preset.description}")
        print(f"  {'':26} servers: {' '.join(preset.servers)}; cells: {' '.join(preset.cells)}")


def progress(index: int, total: int, result: CellResult, seconds: float) -> None:
    where = f"[{index}/{total}] {result.cell} {result.server}"
    if result.status == OK:
        extra = f", {result.errors:,} errors" if result.errors else ""
        idle = (
            f", {result.idle_kib_per_conn:.2f} KiB/idle conn"
            if result.idle_kib_per_conn is not None
            else ""
        )
        text = f"{result.rps or 0:,.0f} req/s, p99 {result.p99_us or 0:,.0f} µs{extra}{idle}"
    else:
        text = f"{result.status}: {result.reason.splitlines()[0] if result.reason else ''}"
    print(f"{where}: {text} ({seconds:.1f} s)", file=sys.stderr, flush=True)


def run_matrix(
    servers: list[ServerSpec], cells: list[Cell], config: RunConfig, writer: ResultsWriter
) -> int:
    """Every run of every cell on every server, runs outermost; returns the failures."""
    timing = config.timing
    total = timing.runs * len(cells) * len(servers)
    index = failures = 0
    budget = timing.quiet_budget  # the waits for a quiet machine, over the whole run
    for run in range(1, timing.runs + 1):
        for cell in cells:
            for server in servers:
                index += 1
                started = time.monotonic()
                result = run_cell(server, cell, config, run, min(timing.quiet_wait, budget))
                budget = max(0.0, budget - (result.quiet_wait_s or 0.0))
                if result.status == OK or run == 1:  # n/a is said once
                    writer.write(result)
                failures += result.status == FAILED
                progress(index, total, result, time.monotonic() - started)
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        list_matrix()
        return 0
    preset = PRESETS[args.preset] if args.preset else None
    try:
        timing = timing_from(args, preset)
        cells = select_cells(args.workloads or (preset.cells if preset else None))
        if preset and not args.workloads:  # in the preset's order, which the report keeps
            cells.sort(key=lambda cell: preset.cells.index(cell.name))
        servers = select_servers(args.servers or (preset.servers if preset else None))
        if preset and not args.servers:
            servers.sort(key=lambda server: preset.servers.index(server.name))
        loadgen = build("loadgen")
        with_tls = tls_loadgen(cells)
    except (ValueError, BuildError) as exc:
        print(f"bench.throughput: {exc}", file=sys.stderr)
        return 2
    out = args.out or default_out(timing, whole=not (args.workloads or args.servers))
    raise_nofile_limit()
    server_cpu, loadgen_cpu = cpus(share=args.share_cpus or bool(preset and preset.share_cpus))
    config = RunConfig(timing, loadgen, server_cpu, loadgen_cpu, args.logs, with_tls)
    meta = meta_record(argv, timing, servers, cells, config, preset)
    with pinned(loadgen_cpu), ResultsWriter(out, meta) as writer:
        failures = run_matrix(servers, cells, config, writer)
    written = report.write_report(out, plots=None if args.no_plots else out.parent)
    for path in [out, *written]:
        print(path)
    if failures:
        print(
            f"bench.throughput: {failures} cell(s) failed; server logs in {config.log_dir}",
            file=sys.stderr,
        )
    return 1 if failures else 0
