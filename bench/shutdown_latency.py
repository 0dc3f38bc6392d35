"""Shutdown latency: how long ``shutdown()`` takes while ``serve_forever()`` idles.

Each server runs ``serve_forever()`` with its default poll interval (0.5 s) in
a thread; after a random delay, uniform in [0, poll interval), the main thread
times ``shutdown()`` with ``time.perf_counter()``.  The stdlib's loop notices
the request only when its ``select()`` times out, so it takes whatever is left
of the current poll; portico's loop is woken at once.  Every run uses the same
delay for every server (one seeded sequence), and runs interleave the servers
in a shuffled order, so that machine noise falls on all of them alike.

Run from the repository root (matplotlib, for ``--plot``, is the optional
extra ``portico[bench]``)::

    python -m bench.shutdown_latency --runs 30 --json /tmp/shutdown_latency.jsonl \\
        --plot docs/img/shutdown_latency.png

``python bench/shutdown_latency.py ...`` works too.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import platform
import random
import socketserver
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import portico

KINDS = ("TCPServer", "ThreadingTCPServer", "UDPServer", "ThreadingUDPServer")
IMPLEMENTATIONS = {"portico": portico, "stdlib": socketserver}
TARGET_MEDIAN_MS = 5.0
READY_TIMEOUT = 10.0  # for portico's "the loop is running" signal
JOIN_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Subject:
    """One server class under test: ``portico.TCPServer``, ``socketserver.TCPServer``, ..."""

    impl: str
    kind: str

    @property
    def module(self) -> Any:
        return IMPLEMENTATIONS[self.impl]

    @property
    def server_class(self) -> type[Any]:
        return getattr(self.module, self.kind)  # type: ignore[no-any-return]

    @property
    def name(self) -> str:
        return f"{self.module.__name__}.{self.kind}"

    def default_poll_interval(self) -> float:
        parameter = inspect.signature(self.server_class.serve_forever).parameters["poll_interval"]
        return float(parameter.default)


@dataclasses.dataclass(frozen=True)
class Summary:
    subject: Subject
    samples_ms: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p90(self) -> float:
        if len(self.samples_ms) < 2:
            return self.samples_ms[0]
        return statistics.quantiles(self.samples_ms, n=10, method="inclusive")[-1]

    @property
    def max(self) -> float:
        return max(self.samples_ms)


# -- measuring ---------------------------------------------------------------


def measure_once(subject: Subject, phase: float) -> float:
    """Serve in a thread, wait ``phase`` seconds, return how long shutdown() took (seconds)."""
    server = subject.server_class(("127.0.0.1", 0), subject.module.BaseRequestHandler)
    # serve_forever() with no argument: the default poll interval is the point.
    thread = threading.Thread(target=server.serve_forever, name="bench-serve", daemon=True)
    shut_down = False
    try:
        thread.start()
        # portico says when its loop runs; the stdlib cannot, so only the delay applies.
        serving = getattr(server, "_portico_serving", None)
        if serving is not None and not serving.wait(READY_TIMEOUT):
            raise RuntimeError(f"{subject.name} did not start serving")
        time.sleep(phase)
        start = time.perf_counter()
        server.shutdown()
        elapsed = time.perf_counter() - start
        shut_down = True
    finally:
        if not shut_down and thread.is_alive():
            server.shutdown()
        thread.join(JOIN_TIMEOUT)
        server.server_close()
    if thread.is_alive():
        raise RuntimeError(f"{subject.name}: serve_forever() still runs after shutdown()")
    return elapsed


def run(
    subjects: Sequence[Subject],
    runs: int,
    seed: int,
    on_sample: Callable[[dict[str, Any]], None],
) -> list[Summary]:
    rng = random.Random(seed)
    poll = max(subject.default_poll_interval() for subject in subjects)
    samples: dict[Subject, list[float]] = {subject: [] for subject in subjects}
    for index in range(runs):
        phase = rng.random() * poll  # uniform in [0, poll)
        order = list(subjects)
        rng.shuffle(order)
        for subject in order:
            elapsed_ms = measure_once(subject, phase) * 1000.0
            samples[subject].append(elapsed_ms)
            on_sample(
                {
                    "type": "sample",
                    "server": subject.name,
                    "run": index,
                    "phase_s": round(phase, 6),
                    "shutdown_ms": round(elapsed_ms, 4),
                }
            )
        print(f"\r  run {index + 1}/{runs}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return [Summary(subject, tuple(samples[subject])) for subject in subjects]


# -- reporting ---------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        nproc = os.cpu_count() or 0
    return {
        "nproc": nproc,
        "cpu_model": model,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "portico": portico.__version__,
    }


def ratios(summaries: Sequence[Summary]) -> Iterator[tuple[str, Summary, Summary]]:
    by_name = {(s.subject.impl, s.subject.kind): s for s in summaries}
    for kind in KINDS:
        fast, slow = by_name.get(("portico", kind)), by_name.get(("stdlib", kind))
        if fast is not None and slow is not None:
            yield kind, fast, slow


def _ratio(slow: float, fast: float) -> str:
    return f"{slow / fast:,.0f}x" if fast > 0 else "inf"


def table(summaries: Sequence[Summary]) -> str:
    lines = [
        "| server | runs | median ms | p90 ms | max ms |",
        "|---|--:|--:|--:|--:|",
    ]
    for s in summaries:
        lines.append(
            f"| `{s.subject.name}` | {len(s.samples_ms)} "
            f"| {s.median:.3f} | {s.p90:.3f} | {s.max:.3f} |"
        )
    lines += [
        "",
        "| server class | stdlib/portico median | p90 | max |",
        "|---|--:|--:|--:|",
    ]
    for kind, fast, slow in ratios(summaries):
        lines.append(
            f"| `{kind}` | {_ratio(slow.median, fast.median)} "
            f"| {_ratio(slow.p90, fast.p90)} | {_ratio(slow.max, fast.max)} |"
        )
    return "\n".join(lines)


def verdict(summaries: Sequence[Summary]) -> tuple[bool, str]:
    ours = [s for s in summaries if s.subject.impl == "portico"]
    worst = max(ours, key=lambda s: s.median)
    met = worst.median <= TARGET_MEDIAN_MS
    return met, (
        f"target (portico median <= {TARGET_MEDIAN_MS:g} ms): {'MET' if met else 'NOT MET'}; "
        f"worst portico median {worst.median:.3f} ms ({worst.subject.name})"
    )


def plot(summaries: Sequence[Summary], poll: float, info: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib  # noqa: PLC0415 - optional extra, only for --plot

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        sys.exit("--plot needs matplotlib: pip install 'portico[bench]'")
    colours = {"portico": "tab:blue", "stdlib": "tab:orange"}
    jitter = random.Random(0)
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(summaries) + 1.8))
    for row, s in enumerate(reversed(summaries)):
        ys = [row + jitter.uniform(-0.18, 0.18) for _ in s.samples_ms]
        ax.scatter(s.samples_ms, ys, s=12, alpha=0.6, color=colours[s.subject.impl])
        ax.plot([s.median, s.median], [row - 0.3, row + 0.3], color="black", linewidth=2)
    ax.set_yticks(range(len(summaries)))
    ax.set_yticklabels([s.subject.name for s in reversed(summaries)])
    ax.set_xscale("log")
    ax.axvline(TARGET_MEDIAN_MS, color="tab:green", linestyle="--", linewidth=1)
    ax.axvline(poll * 1000.0, color="tab:red", linestyle=":", linewidth=1)
    ax.text(TARGET_MEDIAN_MS, len(summaries) - 0.45, " 5 ms target", color="tab:green")
    ax.text(poll * 1000.0, len(summaries) - 0.45, " poll interval", color="tab:red", ha="right")
    ax.set_xlabel("shutdown() latency, ms (log scale; black bar = median)")
    ax.set_title(
        f"shutdown() with serve_forever(poll_interval={poll:g}) idle, "
        f"{len(summaries[0].samples_ms)} runs each\n"
        f"{info['python']}, {info['nproc']} CPUs, {info['cpu_model']}",
        fontsize=9,
    )
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- command line ------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.shutdown_latency",
        description="Time shutdown() of idle portico and stdlib socketserver servers.",
    )
    parser.add_argument("--runs", type=int, default=30, help="runs per server (default 30)")
    parser.add_argument(
        "--servers",
        default=",".join(KINDS),
        help=f"comma-separated server classes (default {','.join(KINDS)})",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the random phases")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write JSON lines here")
    parser.add_argument("--plot", type=Path, metavar="PATH", help="write a PNG plot here")
    args = parser.parse_args(argv)
    args.kinds = [kind.strip() for kind in args.servers.split(",") if kind.strip()]
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown server class(es): {', '.join(sorted(unknown))}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    subjects = [Subject(impl, kind) for kind in args.kinds for impl in IMPLEMENTATIONS]
    poll = max(subject.default_poll_interval() for subject in subjects)
    info = machine()
    records: list[dict[str, Any]] = [
        {
            "type": "meta",
            "benchmark": "shutdown_latency",
            "runs": args.runs,
            "seed": args.seed,
            "poll_interval_s": poll,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **info,
        }
    ]
    print(
        f"shutdown latency: {len(subjects)} servers x {args.runs} runs, "
        f"serve_forever(poll_interval={poll:g}), phase uniform in [0, {poll:g}) s",
        file=sys.stderr,
    )
    summaries = run(subjects, args.runs, args.seed, records.append)
    met, target_line = verdict(summaries)
    for s in summaries:
        records.append(
            {
                "type": "summary",
                "server": s.subject.name,
                "runs": len(s.samples_ms),
                "median_ms": round(s.median, 4),
                "p90_ms": round(s.p90, 4),
                "max_ms": round(s.max, 4),
            }
        )
    for kind, fast, slow in ratios(summaries):
        records.append(
            {
                "type": "ratio",
                "server_class": kind,
                "stdlib_over_portico_median": round(slow.median / fast.median, 1),
            }
        )
    records.append({"type": "target", "median_ms": TARGET_MEDIAN_MS, "met": met})

    print(
        f"Python: {info['python']}  nproc: {info['nproc']}  CPU: {info['cpu_model']}\n"
        f"serve_forever() poll interval: {poll:g} s; runs per server: {args.runs}\n"
    )
    print(table(summaries))
    print()
    print(target_line)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with args.json.open("w", encoding="utf-8") as out:
            out.writelines(json.dumps(record) + "\n" for record in records)
        print(f"JSON lines: {args.json}", file=sys.stderr)
    if args.plot is not None:
        plot(summaries, poll, info, args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
