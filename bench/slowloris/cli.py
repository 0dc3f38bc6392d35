"""``python -m bench.slowloris``: a normal client's latency without and under a slowloris attack.

    python -m bench.slowloris                    # every server, 3 runs, ~10 minutes on 2 CPUs
    python -m bench.slowloris --runs 1 --servers portico-event stdlib-threads
    python -m bench.slowloris --runs 3 --cut-engine pool --servers portico-pool-w5
    python -m bench.slowloris --list             # the servers by name

The documented run (docs/benchmarks.md, "Slowloris"; about 16 minutes)::

    python -m bench.slowloris --runs 5 --out bench/results/slowloris.jsonl \\
        --plot docs/img/slowloris.png

Results go to ``--out`` (default ``bench/.build/results/slowloris.jsonl``): one
JSON line of metadata, then one per server per run, written as each finishes;
the Markdown report next to it (``.md``) and the plot at ``--plot`` (default:
next to it, ``.png``).  Exit status 1 when a server failed (the reason is in
the results), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from bench.slowloris import report
from bench.slowloris.runner import Settings, run_server, slowloris_servers
from bench.throughput.build import BUILD_DIR
from bench.throughput.machine import describe, wait_for_quiet
from bench.throughput.procs import pinned, raise_nofile_limit
from bench.throughput.servers import ServerSpec

__all__ = ["main"]

DEFAULT_OUT = BUILD_DIR / "results" / "slowloris.jsonl"
SERVER_CPU, CLIENT_CPU = 0, 1
QUIET_BUDGET = 60.0  # seconds of waiting for a quiet machine, over the whole run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m bench.slowloris",
        description="A normal client's latency, without and under a slowloris attack, "
        "per server (portico's engines, the stdlib, a C reference).",
    )
    parser.add_argument("--servers", nargs="+", metavar="NAME", help="default: all (see --list)")
    parser.add_argument("--runs", type=int, default=3, help="runs, servers interleaved (3)")
    parser.add_argument(
        "--connections",
        type=int,
        default=defaults.connections,
        help=f"slowloris connections ({defaults.connections})",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=defaults.requests,
        help=f"requests per mode, without and under attack ({defaults.requests})",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=defaults.interval,
        help=f"seconds between two requests ({defaults.interval:g})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=defaults.timeout,
        help=f"a request unanswered this long has failed ({defaults.timeout:g} s)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=defaults.settle,
        help=f"seconds of trickling before measuring under attack ({defaults.settle:g})",
    )
    parser.add_argument(
        "--sources",
        type=int,
        default=defaults.sources,
        help="attacker source addresses, 127.0.0.2 onwards (1)",
    )
    parser.add_argument(
        "--cut-engine",
        default="threads",
        help="the portico engine also run with a short rate window, so that slowloris "
        "connections are cut during the run (threads; 'none': no such run)",
    )
    parser.add_argument(
        "--cut-window",
        type=float,
        default=5.0,
        help="its --min-receive-rate-window, seconds (5)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=5.0,
        help="before each server, wait at most this long for other processes' load to pass (5)",
    )
    parser.add_argument(
        "--share-cpus",
        action="store_true",
        help="pin nothing (default: the server on CPU 0; the client and attacker on CPU 1)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results file (.jsonl)")
    parser.add_argument("--plot", type=Path, help="the PNG plot (default: next to --out)")
    parser.add_argument("--no-plots", action="store_true", help="skip the plot")
    parser.add_argument(
        "--logs",
        type=Path,
        default=BUILD_DIR / "logs" / "slowloris",
        help="directory for the servers' and the attacker's output",
    )
    parser.add_argument("--list", action="store_true", help="list the servers, and exit")
    args = parser.parse_args(argv)
    positive = ("runs", "connections", "requests", "sources")
    if any(getattr(args, name) < 1 for name in positive):
        parser.error("--runs, --connections, --requests and --sources must be positive")
    if args.interval < 0 or args.timeout <= 0 or args.settle < 0 or args.cut_window <= 0:
        parser.error("--interval and --settle cannot be negative, --timeout must be positive")
    return args


def chosen_servers(args: argparse.Namespace) -> list[ServerSpec]:
    cut_engine = None if args.cut_engine == "none" else args.cut_engine
    servers = slowloris_servers(cut_engine, args.cut_window)
    if not args.servers:
        return servers
    known = {server.name: server for server in servers}
    unknown = [name for name in args.servers if name not in known]
    if unknown:
        raise ValueError(f"unknown server {', '.join(unknown)}: choose from {', '.join(known)}")
    return [known[name] for name in args.servers]


def settings_from(args: argparse.Namespace) -> Settings:
    shared = args.share_cpus or not _two_cpus()
    return Settings(
        connections=args.connections,
        requests=args.requests,
        interval=args.interval,
        timeout=args.timeout,
        settle=args.settle,
        sources=args.sources,
        server_cpu=None if shared else SERVER_CPU,
        client_cpu=None if shared else CLIENT_CPU,
        log_dir=args.logs,
    )


def _two_cpus() -> bool:
    available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    return {SERVER_CPU, CLIENT_CPU} <= available


def meta_record(
    argv: Sequence[str] | None, settings: Settings, servers: list[ServerSpec], runs: int
) -> dict[str, Any]:
    args = sys.argv[1:] if argv is None else list(argv)
    return {
        "type": "meta",
        "benchmark": "slowloris",
        "command": shlex.join(["python", "-m", "bench.slowloris", *args]),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": describe(),
        "runs": runs,
        "settings": {
            "connections": settings.connections,
            "requests": settings.requests,
            "interval_s": settings.interval,
            "timeout_s": settings.timeout,
            "warmup": settings.warmup,
            "settle_s": settings.settle,
            "trickle_s": [settings.trickle_min, settings.trickle_max],
            "sources": settings.sources,
            "server_cpu": settings.server_cpu,
            "client_cpu": settings.client_cpu,
        },
        "servers": [{"name": s.name, "label": s.label} for s in servers],
    }


def progress(index: int, total: int, record: dict[str, Any], seconds: float) -> None:
    where = f"[{index}/{total}] run {record['run']} {record['server']}"
    if record["status"] != "ok":
        text = f"{record['status']}: {record.get('reason', '').splitlines()[0]}"
    else:
        parts = []
        for phase in ("baseline", "attack"):
            for mode, result in record["phases"][phase].items():
                p99 = result["p99_us"]
                p99_text = "-" if p99 is None else f"{p99 / 1000:,.2f} ms"
                parts.append(f"{phase} {mode} p99 {p99_text}, {result['failed']} failed")
        window = record["attacker"]["window"]
        parts.append(
            f"attacker {window['cpu_fraction']:.0%} CPU, {window['min_open']} open at least, "
            f"{window['cuts']} cut"
        )
        text = "; ".join(parts)
    print(f"{where}: {text} ({seconds:.1f} s)", file=sys.stderr, flush=True)


def run_all(
    servers: list[ServerSpec], settings: Settings, runs: int, quiet_wait: float, out: TextIO
) -> int:
    """Every server once per run, runs outermost; the number of failures."""
    total, index, failures = runs * len(servers), 0, 0
    budget = QUIET_BUDGET
    for run in range(1, runs + 1):
        for server in servers:
            index += 1
            started = time.monotonic()
            waited, _ = wait_for_quiet(min(quiet_wait, budget))
            budget = max(0.0, budget - waited)
            record = run_server(server, settings, run)
            record["quiet_wait_s"] = round(waited, 2)
            out.write(json.dumps(record) + "\n")
            out.flush()
            failures += record["status"] == "failed"
            progress(index, total, record, time.monotonic() - started)
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        servers = chosen_servers(args)
    except ValueError as exc:
        print(f"bench.slowloris: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for server in servers:
            why = server.unavailable()
            print(f"{server.name:32} {server.label}" + (f"  [unavailable: {why}]" if why else ""))
        return 0
    settings = settings_from(args)
    raise_nofile_limit()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with pinned(settings.client_cpu), args.out.open("w", encoding="utf-8") as out:
        out.write(json.dumps(meta_record(argv, settings, servers, args.runs)) + "\n")
        out.flush()
        failures = run_all(servers, settings, args.runs, args.quiet_wait, out)
    plot = None if args.no_plots else (args.plot or args.out.with_suffix(".png"))
    for path in report.write_report(args.out, plot=plot):
        print(path)
    if failures:
        print(f"bench.slowloris: {failures} run(s) failed; logs in {args.logs}", file=sys.stderr)
    return 1 if failures else 0
