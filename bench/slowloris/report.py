"""The Markdown tables and the plot of a slowloris results file.

``python -m bench.slowloris.report RESULTS.jsonl [--markdown OUT.md] [--plot OUT.png]``
regenerates them; ``python -m bench.slowloris`` calls this after a run.

Figures over several runs are medians of the runs' figures (each run's p50,
p99 and max); failures and requests are summed; the ratio "under attack ÷
without" is the median of each run's own ratio (the two phases of a run are
seconds apart on the same server process, so a slow spell of the machine
weighs on both).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.throughput.report import percent, table

__all__ = ["ServerSummary", "main", "render_markdown", "summarize", "write_plot", "write_report"]

PHASES = ("baseline", "attack")
MODES = ("persistent", "connection")
MODE_TITLES = {
    "persistent": "one persistent connection",
    "connection": "a new connection per request",
}
REFERENCE = "c-epoll"


def read_results(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    meta: dict[str, Any] = next((r for r in records if r.get("type") == "meta"), {})
    return meta, [r for r in records if r.get("type") == "result"]


def _median(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


@dataclass
class ModeSummary:
    """One mode in one phase, over the runs."""

    p50_us: float | None = None
    p99_us: float | None = None
    max_us: float | None = None
    planned: int = 0
    sent: int = 0
    failed: int = 0
    failure_kinds: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, results: Sequence[Mapping[str, Any]]) -> ModeSummary:
        kinds: Counter[str] = Counter()
        for result in results:
            kinds.update(result["failure_kinds"])
        return cls(
            _median(r["p50_us"] for r in results),
            _median(r["p99_us"] for r in results),
            _median(r["max_us"] for r in results),
            sum(r["planned"] for r in results),
            sum(r["sent"] for r in results),
            sum(r["failed"] for r in results),
            kinds,
        )


@dataclass
class ServerSummary:
    """One server over its runs: its latencies, the attack it faced, the CPU it took."""

    name: str
    label: str
    status: str  # ok (at least one run measured), n/a, failed
    reason: str = ""
    runs: int = 0
    modes: dict[tuple[str, str], ModeSummary] = field(default_factory=dict)
    p99_ratio: dict[str, float | None] = field(default_factory=dict)  # mode -> attack ÷ baseline
    fewest_open: int | None = None  # the attacker's connections open, the fewest at any time
    held: float | None = None  # of them, accepted by the server (median over runs)
    cuts: float | None = None  # per run, median
    cut_after_s: float | None = None
    attacker_cpu: float | None = None  # fraction of a CPU, median over runs
    attacker_cpu_max: float | None = None
    server_cpu: dict[str, float | None] = field(default_factory=dict)  # phase -> CPUs
    client_cpu: float | None = None  # under attack
    other_cpu_max: float | None = None
    kib_per_slowloris: float | None = None
    setup_s: float | None = None


def summarize(records: Sequence[Mapping[str, Any]]) -> list[ServerSummary]:
    """One summary per server, in the order the servers first appear."""
    by_server: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        by_server.setdefault(record["server"], []).append(record)
    return [_summary(group) for group in by_server.values()]


def _summary(group: list[Mapping[str, Any]]) -> ServerSummary:
    first = group[0]
    ok = [record for record in group if record["status"] == "ok"]
    if not ok:
        status = first["status"]
        return ServerSummary(first["server"], first["label"], status, first.get("reason", ""))
    summary = ServerSummary(first["server"], first["label"], "ok", runs=len(ok))
    for phase in PHASES:
        for mode in MODES:
            summary.modes[phase, mode] = ModeSummary.of([r["phases"][phase][mode] for r in ok])
    for mode in MODES:
        summary.p99_ratio[mode] = _median(_ratio(r, mode) for r in ok)
    windows = [r["attacker"]["window"] for r in ok]
    summary.fewest_open = min(w["min_open"] for w in windows)
    summary.held = _median(r.get("server_held") for r in ok)
    summary.cuts = _median(w["cuts"] for w in windows)
    summary.cut_after_s = _median(w["cut_lifetime_median_s"] for w in windows)
    attack_cpu = [r["cpu"]["attack"] for r in ok]
    summary.attacker_cpu = _median(cpu.get("attacker") for cpu in attack_cpu)
    summary.attacker_cpu_max = max((cpu.get("attacker") or 0.0) for cpu in attack_cpu)
    summary.client_cpu = _median(cpu.get("client") for cpu in attack_cpu)
    for phase in PHASES:
        summary.server_cpu[phase] = _median(r["cpu"][phase].get("server") for r in ok)
    others = [r["cpu"][phase].get("other") for r in ok for phase in PHASES]
    summary.other_cpu_max = max((other or 0.0) for other in others)
    summary.kib_per_slowloris = _median(r.get("kib_per_slowloris") for r in ok)
    summary.setup_s = _median(r["attacker"]["setup_seconds"] for r in ok)
    return summary


def _ratio(record: Mapping[str, Any], mode: str) -> float | None:
    before = record["phases"]["baseline"][mode]["p99_us"]
    after = record["phases"]["attack"][mode]["p99_us"]
    return after / before if before and after is not None else None


# ---------------------------------------------------------------- Markdown


def ms(micros: float | None) -> str:
    """Milliseconds: two decimals below 10 ms, none above 1 s."""
    if micros is None:
        return "-"
    value = micros / 1000
    if value < 10:
        return f"{value:.2f}"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def failed_text(mode: ModeSummary) -> str:
    text = f"{mode.failed:,} of {mode.sent:,}"
    if mode.failed:
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(mode.failure_kinds.items()))
        text = f"**{text}** ({kinds})"
    if mode.sent < mode.planned:
        text += f"; {mode.planned - mode.sent:,} not sent"
    return text


def ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def cpus_text(value: float | None) -> str:
    return "" if value is None else percent(value)


def _mode_table(summaries: Sequence[ServerSummary], mode: str) -> list[str]:
    header = (
        "server",
        "without attack: p50 / p99 / max (ms)",
        "failed",
        "under attack: p50 / p99 / max (ms)",
        "failed",
        "p99 under attack ÷ without",
    )
    rows: list[tuple[str, ...]] = []
    for s in summaries:
        if s.status != "ok":
            rows.append((s.label, f"{s.status}: {s.reason.splitlines()[0] if s.reason else ''}"))
            continue
        before, after = s.modes["baseline", mode], s.modes["attack", mode]
        rows.append(
            (
                s.label,
                f"{ms(before.p50_us)} / {ms(before.p99_us)} / {ms(before.max_us)}",
                failed_text(before),
                f"{ms(after.p50_us)} / {ms(after.p99_us)} / {ms(after.max_us)}",
                failed_text(after),
                ratio_text(s.p99_ratio.get(mode)),
            )
        )
    return table(header, rows)


def _attack_table(summaries: Sequence[ServerSummary]) -> list[str]:
    header = (
        "server",
        "slowloris open (fewest)",
        "accepted by the server",
        "cut per run",
        "cut after (s)",
        "attacker CPU (median / max)",
        "client CPU",
        "server CPU without / under attack",
        "KiB per accepted slowloris conn",
        "other CPU (max)",
    )
    rows = []
    for s in summaries:
        if s.status != "ok":
            continue
        rows.append(
            (
                s.label,
                _count(s.fewest_open),
                _count(s.held),
                _count(s.cuts),
                f"{s.cut_after_s:.1f}" if s.cut_after_s is not None else "",
                f"{cpus_text(s.attacker_cpu)} / {cpus_text(s.attacker_cpu_max)}",
                cpus_text(s.client_cpu),
                " / ".join(cpus_text(s.server_cpu.get(phase)) for phase in PHASES),
                f"{s.kib_per_slowloris:.1f}" if s.kib_per_slowloris is not None else "",
                cpus_text(s.other_cpu_max),
            )
        )
    return table(header, rows)


def _count(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def _header(meta: Mapping[str, Any]) -> list[str]:
    machine = meta.get("machine", {})
    settings = meta.get("settings", {})
    lines = ["# Slowloris: a normal client's latency under attack", ""]
    if meta.get("command"):
        lines.append(f"- command: `{meta['command']}`")
    if machine:
        lines.append(
            f"- machine: {machine.get('cpu', '?')}, {machine.get('cpus', '?')} CPUs, "
            f"{machine.get('system', '?')}, Python {machine.get('python', '?')}; "
            f"run {meta.get('started', '?')}"
        )
    needed = ("connections", "requests", "interval_s", "timeout_s", "trickle_s")
    if all(key in settings for key in needed):
        trickle = settings["trickle_s"]
        pinning = (
            f"the server pinned to CPU {settings['server_cpu']}, the client and the attacker "
            f"to CPU {settings['client_cpu']}"
            if settings.get("server_cpu") is not None
            else "nothing pinned"
        )
        lines.append(
            f"- {settings['connections']:,} slowloris connections, each sending a byte "
            f"every {trickle[0]:g}-{trickle[1]:g} s; {settings['requests']:,} requests "
            f"per mode and phase, one due every {settings['interval_s'] * 1000:g} ms, "
            f"failed when not answered within {settings['timeout_s']:g} s; "
            f"{meta.get('runs', '?')} run(s), servers interleaved; {pinning}"
        )
    return [*lines, ""]


def render_markdown(meta: Mapping[str, Any], summaries: Sequence[ServerSummary]) -> str:
    lines = _header(meta)
    for mode in MODES:
        lines += [f"## {MODE_TITLES[mode].capitalize()}", "", *_mode_table(summaries, mode), ""]
    lines += ["## The attack", "", *_attack_table(summaries), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- plot


def write_plot(meta: Mapping[str, Any], summaries: Sequence[ServerSummary], path: Path) -> None:
    """p50 and p99 per server, without and under attack, one panel per mode.  Needs matplotlib."""
    import matplotlib  # noqa: PLC0415 (optional extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    shown = [s for s in summaries if s.status == "ok"]
    height = 0.45 * len(shown) + 1.9
    figure, axes = plt.subplots(
        1, len(MODES), figsize=(5.6 * len(MODES) + 1.6, height), squeeze=False, sharey=True
    )
    for axis, mode in zip(axes[0], MODES, strict=True):
        _latency_panel(axis, shown, mode, meta)
    settings = meta.get("settings", {})
    figure.suptitle(
        f"A normal client's latency, without and under {settings.get('connections', '?'):,} "
        "slowloris connections\n(bars: p99, ticks: p50, log scale; medians of "
        f"{meta.get('runs', '?')} runs; hatched: every request failed)",
        fontsize=10,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


COLOURS = {"baseline": "#4878b0", "attack": "#c44e52"}
PHASE_LABELS = {"baseline": "without attack", "attack": "under attack"}


def _latency_panel(
    axis: Any, summaries: Sequence[ServerSummary], mode: str, meta: Mapping[str, Any]
) -> None:
    timeout_ms = meta.get("settings", {}).get("timeout_s", 2.0) * 1000
    for row, summary in enumerate(summaries):
        for offset, phase in ((-0.2, "baseline"), (0.2, "attack")):
            _latency_bar(axis, row + offset, summary.modes[phase, mode], phase, timeout_ms)
    axis.axvline(timeout_ms, color="grey", linestyle=":", linewidth=1)
    axis.set_yticks(range(len(summaries)), [s.label for s in summaries], fontsize=8)
    axis.set_ylim(len(summaries) - 0.5, -0.5)
    axis.set_xscale("log")
    axis.set_xlabel("latency, ms (dotted: the client's timeout)", fontsize=9)
    axis.set_title(MODE_TITLES[mode], fontsize=10)
    axis.tick_params(axis="x", labelsize=8)
    handles, names = axis.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    axis.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")


def _latency_bar(axis: Any, y: float, result: ModeSummary, phase: str, timeout_ms: float) -> None:
    colour, label = COLOURS[phase], PHASE_LABELS[phase]
    if result.p99_us is None:  # nothing answered: a hatched bar out to the timeout
        axis.barh(y, timeout_ms, height=0.38, color="none", edgecolor=colour, hatch="///")
    else:
        axis.barh(y, result.p99_us / 1000, height=0.38, color=colour, label=label)
    if result.p50_us is not None:
        axis.plot([result.p50_us / 1000] * 2, [y - 0.17, y + 0.17], color="black", lw=1.5)
    if result.failed:
        end = timeout_ms if result.p99_us is None else result.p99_us / 1000
        text = f" {result.failed:,} of {result.sent:,} failed"
        axis.text(end, y, text, va="center", fontsize=7, color=colour)


# ---------------------------------------------------------------- entry point


def write_report(
    results: Path, markdown: Path | None = None, plot: Path | None = None
) -> list[Path]:
    """Write the Markdown (and the plot, if a path is given); returns the files written."""
    meta, records = read_results(results)
    summaries = summarize(records)
    markdown = markdown or results.with_suffix(".md")
    markdown.write_text(render_markdown(meta, summaries), encoding="utf-8")
    written = [markdown]
    if plot is not None:
        try:
            write_plot(meta, summaries, plot)
        except ImportError:
            print("bench.slowloris: no matplotlib (pip install -e '.[bench]'): no plot")
        else:
            written.append(plot)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slowloris.report", description=__doc__)
    parser.add_argument("results", type=Path, help="a results .jsonl file")
    parser.add_argument("--markdown", type=Path, help="default: the results file with .md")
    parser.add_argument("--plot", type=Path, help="the PNG plot (none if unset)")
    args = parser.parse_args(argv)
    for path in write_report(args.results, args.markdown, args.plot):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
