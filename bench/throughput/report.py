"""Markdown tables, key ratios and PNG plots from a results file.

``python -m bench.throughput.report RESULTS.jsonl [--markdown OUT.md] [--plots DIR]``
regenerates them; ``python -m bench.throughput`` calls this after a run.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.throughput.results import (
    FAILED,
    NOT_APPLICABLE,
    OK,
    CellResult,
    Summary,
    read_results,
    summarize,
)
from bench.throughput.servers import ALL_SERVERS, PREFORK_NAME, is_prefork
from bench.throughput.targets import Figures, target_rows
from bench.throughput.workloads import ALL_CELLS

__all__ = ["Layout", "main", "render_markdown", "write_plots", "write_report"]

REFERENCE = "c-epoll"
PLOT_COLUMNS = 3

NOTES = (
    "Memory per idle connection is (server RSS with the idle connections - RSS before) / "
    "connections held, read from /proc/PID/status; it leaves out the kernel's socket buffers.",
    "Peak RSS is the server's VmHWM; for forking servers, the highest sum of PSS over the "
    "server and its children, sampled every 0.25 s (short-lived children may be missed). "
    "A forking server's CPU includes its children's.",
    "Serial servers serve one connection at a time and forking ones 40 (ForkingMixIn."
    "max_children): cells needing more simultaneous connections are n/a.",
    '"Unfinished" requests were still in flight when the drain after the measured window '
    "ended (2 s); they are not errors. With 64 one-shot connections in flight they are "
    "connections whose SYN a full listen backlog (the stdlib's is 5) dropped, waiting for "
    "the retransmission (1 s, then 3 s).",
    "The C reference server polls epoll for 200 µs before it sleeps, so its CPU use reads "
    "near 100% whenever it has load.",
    "portico's engines run as `portico serve --engine NAME --log-level WARNING` (the built-in "
    "upper handler, no access log); the pool with --max-workers 32 (its default for 2 CPUs), "
    "so it serves 32 connections at a time. Engines portico cannot run yet are n/a.",
)
PREFORK_NOTES = (
    "portico's prefork servers run as `portico serve --engine NAME --workers N [--reuse-port] "
    "--pid-file FILE --log-level WARNING`. One is ready when its master has written its pid "
    "file, which it does once every worker serves, and a probe is answered; it is stopped with "
    "SIGTERM to the master alone, which drains its workers and waits for them. Its CPU and "
    "peak memory are the master's and the workers' together (summed PSS).",
)
TLS_NOTES = (
    "TLS cells: every server serves the same certificate, {certificate}, made for the run "
    "(bench/.build/tls/), with the same settings as portico's TLSConfig: TLS 1.2 at least, no "
    "compression, the server's cipher order, OpenSSL's default ciphers and session tickets "
    "(the Python servers with their ssl module's OpenSSL, {python_openssl}). portico runs as "
    "`portico serve --engine NAME --certfile CERT --keyfile KEY --log-level WARNING` (no "
    "--tcp-nodelay: its default); the asyncio peers pass ssl= to create_server (asyncio's "
    "TLS, or uvloop's); the C reference is bench/c/refserver.c built with OpenSSL "
    "(refserver-tls: non-blocking handshakes in its epoll loop, TCP_NODELAY).",
    "The TLS load generator is bench/c/loadgen.c built with OpenSSL (loadgen-tls): "
    "tls-oneshot connects, makes a full handshake (no session cache, no session ever "
    "offered: the resumed count must be 0), sends the line, reads the reply, sends "
    "close_notify and closes; tls-pingpong keeps its TLS connections. It sends SNI "
    "(localhost), does not verify the certificate chain (the readiness probe does; TLS 1.3 "
    "still checks the server's signature in every handshake), reads ahead, and sets "
    "TCP_NODELAY, as TLS clients do. It decodes the server's EC key by OpenSSL's 1.1.1 "
    "(legacy) path, which an ENGINE selects: the same decoding and the same ECDSA "
    "verification, without OpenSSL 3.0's decoder set-up, about a quarter less of its CPU "
    "per handshake.",
)
NOISY_CPU = 0.25  # other processes' CPU (in CPUs) above which a cell is flagged
Summaries = Mapping[tuple[str, str], Summary]


@dataclass(frozen=True)
class Layout:
    """Which servers and cells a report shows, in order, with their labels."""

    servers: dict[str, str]  # name -> label
    cells: dict[str, tuple[str, str]]  # name -> (workload, label)

    @classmethod
    def of(cls, meta: Mapping[str, Any], summaries: Summaries) -> Layout:
        """The run's own order (its meta record), then the registry, then what the results hold."""
        servers = {s["name"]: s["label"] for s in meta.get("servers", [])}
        cells = {c["name"]: (c["workload"], c["label"]) for c in meta.get("cells", [])}
        known_servers = {s.name: s.label for s in ALL_SERVERS}
        known_cells = {c.name: (c.workload, c.label) for c in ALL_CELLS}
        for server, cell in summaries:
            servers.setdefault(server, known_servers.get(server, server))
            workload = summaries[server, cell].workload
            cells.setdefault(cell, known_cells.get(cell, (workload, cell)))
        return cls(servers, cells)

    def workloads(self) -> list[str]:
        return list(dict.fromkeys(workload for workload, _ in self.cells.values()))

    def cells_of(self, workload: str) -> list[str]:
        return [name for name, (w, _) in self.cells.items() if w == workload]

    def plot_groups(self) -> dict[str, list[str]]:
        """The cells of each plot: a workload's, with its TLS twin's (``tls-oneshot``)."""
        groups: dict[str, list[str]] = {}
        for name, (workload, _) in self.cells.items():
            groups.setdefault(workload.removeprefix("tls-"), []).append(name)
        return groups


# ---------------------------------------------------------------- formatting


def number(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def micros(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def mib(kib: float | None) -> str:
    return "" if kib is None else f"{kib / 1024:,.1f}"


def kib_text(kib: float) -> str:
    return f"{kib:.2f}" if abs(kib) < 1 else f"{kib:.1f}"


def percent(fraction: float | None) -> str:
    return "" if fraction is None else f"{100 * fraction:.0f}%"


def ratio(mine: float | None, theirs: float | None) -> str:
    return "" if mine is None or not theirs else f"{mine / theirs:.2f}x"


def errors_text(summary: Summary) -> str:
    """Errors by kind; and requests still unanswered when the drain ended (not errors)."""
    text = "0"
    if summary.errors:
        kinds = sorted(summary.error_kinds.items())
        text = f"**{summary.errors:,}** ({', '.join(f'{kind} {n:,}' for kind, n in kinds)})"
    if summary.abandoned:
        text += f"; {summary.abandoned:,} unfinished"
    return text


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return lines


def status_text(summary: Summary | None) -> str:
    """What stands in for a figure: n/a or failed, with the reason's first line."""
    if summary is None:
        return ""
    reason = summary.reason.splitlines()[0] if summary.reason else ""
    if summary.status == NOT_APPLICABLE:
        return f"n/a ({reason})" if reason else "n/a"
    if summary.status == FAILED:
        return f"failed: {reason}"
    return ""


# ---------------------------------------------------------------- sections


def _header(meta: Mapping[str, Any]) -> list[str]:
    machine = meta.get("machine", {})
    timing = meta.get("timing", {})
    lines = ["# Throughput: servers side by side", ""]
    if meta.get("command"):
        lines.append(f"- command: `{meta['command']}`")
    if machine:
        lines.append(
            f"- machine: {machine.get('cpu', '?')}, {machine.get('cpus', '?')} CPUs, "
            f"{machine.get('system', '?')}, Python {machine.get('python', '?')}, "
            f"{machine.get('compiler', '?')}; run {meta.get('started', '?')}"
        )
    if timing:
        lines.append(
            f"- timing ({timing.get('name')}): {timing.get('duration')} s measured after "
            f"{timing.get('warmup')} s of warm-up per cell, {timing.get('runs')} run(s) per "
            f"cell (figures are medians; errors are summed); bulk bounded at "
            f"{timing.get('bulk_cap')} s"
        )
    shared = "server_cpu" in meta and meta["server_cpu"] is None and meta.get("loadgen_cpu") is None
    if shared:
        placement = (
            f"- each cell: a fresh server and the C load generator, pinned to no CPU: they share "
            f"all {machine.get('cpus', '?')} CPUs and the scheduler places them"
        )
    else:
        placement = (
            f"- each cell: a fresh server pinned to CPU {meta.get('server_cpu', '?')}, the C "
            f"load generator pinned to CPU {meta.get('loadgen_cpu', '?')}"
        )
    lines.append(
        f"{placement}; 64-byte lines answered upper-cased, every reply checked byte for byte"
    )
    return [*lines, ""]


SUMMARY_COLUMNS: tuple[
    tuple[str, str, Callable[[Summary], float | None], Callable[..., str]], ...
] = (
    ("oneshot, 16 in flight (conn/s)", "oneshot-16", lambda s: s.rps, number),
    ("pingpong 64 B, 256 conns (req/s)", "pingpong-64x256", lambda s: s.rps, number),
    ("1,024 conns (req/s)", "pingpong-64x1024", lambda s: s.rps, number),
    (
        "memory per idle conn (10k idle)",
        "idle-10k",
        lambda s: s.idle_kib_per_conn,
        lambda v: "" if v is None else f"{kib_text(v)} KiB",
    ),
    ("UDP datagrams/s", "udp-64x16", lambda s: s.rps, number),
    ("16 KiB pingpong, 16 conns (req/s)", "pingpong-16kx16", lambda s: s.rps, number),
    ("bulk (MiB/s)", "bulk-256m", lambda s: s.mib_s, number),
    ("TLS handshakes/s, 16 in flight", "tls-oneshot-16", lambda s: s.rps, number),
    ("TLS pingpong 64 B, 16 conns (req/s)", "tls-pingpong-64x16", lambda s: s.rps, number),
    ("TLS pingpong 64 B, 256 conns (req/s)", "tls-pingpong-64x256", lambda s: s.rps, number),
)


def _summary_section(layout: Layout, summaries: Summaries) -> list[str]:
    columns = [c for c in SUMMARY_COLUMNS if c[1] in layout.cells]
    rows = []
    for server, label in layout.servers.items():
        row = [label]
        for _, cell, pick, fmt in columns:
            summary = summaries.get((server, cell))
            measured = summary is not None and summary.status == OK
            row.append(fmt(pick(summary)) if measured else ("n/a" if summary else ""))  # type: ignore[arg-type]
        rows.append(row)
    return ["## Summary", "", *table(["server", *(c[0] for c in columns)], rows), ""]


def _targets_section(summaries: Summaries) -> list[str]:
    rows = [(row.target, row.figure, row.verdict) for row in target_rows(summaries)]
    intro = (
        "Issue 3's targets on this run's medians; a target whose figures the run lacks "
        "(a server or cell left out, n/a or failed) is not measured, and says what is missing."
    )
    return ["## Targets", "", intro, "", *table(["target", "figure", "verdict"], rows), ""]


FASTEST, CEILING, SLOWER = "C fastest", "tie at the load generator's ceiling", "**C slower**"
SATURATED = 0.9  # load generator CPU from which it, not the server, may set the pace
TIE = 0.95  # C within this fraction of the fastest counts as a tie at the ceiling


def headroom_verdict(reference: Summary, best: Summary) -> str:
    """C fastest; or a tie where the load generator was saturated by both; or C slower.

    Within the tie margin of each other, either way, with the load generator saturated in
    both cells, neither figure says more than where the load generator's ceiling is.
    """
    if best.server == reference.server:
        return FASTEST
    c_rps, its_rps = reference.rps or 0, best.rps or 0
    saturated = min(reference.loadgen_cpu or 0, best.loadgen_cpu or 0) >= SATURATED
    if saturated and min(c_rps, its_rps) >= TIE * max(c_rps, its_rps):
        return CEILING
    return FASTEST if c_rps >= its_rps else SLOWER


def _headroom_section(layout: Layout, summaries: Summaries) -> list[str]:
    """Is the load generator the bottleneck?  The C server must come out fastest."""
    figures = Figures(summaries)
    rows, verdicts = [], []
    for cell, (_, label) in layout.cells.items():
        reference = figures.get(REFERENCE, cell)
        others = [s for s in layout.servers if s != REFERENCE and figures.get(s, cell)]
        runner_up = figures.best(others, cell)
        if reference is None or runner_up is None:
            continue
        best = figures.get(runner_up[0], cell)
        assert best is not None
        verdict = headroom_verdict(reference, best)
        verdicts.append((cell, verdict))
        rows.append(
            [
                f"{cell} ({label})",
                number(reference.rps),
                f"{layout.servers[best.server]} {number(best.rps)}",
                ratio(reference.rps, best.rps),
                percent(reference.loadgen_cpu),
                percent(best.loadgen_cpu),
                verdict,
            ]
        )
    header = [
        "cell",
        "C req/s",
        "fastest other",
        "C ÷ it",
        "loadgen CPU with C",
        "loadgen CPU with it",
        "verdict",
    ]
    intro = (
        "The load generator is one epoll thread on its own CPU. If it were the bottleneck, a "
        "faster server could not show it: the C reference server coming out fastest shows "
        "that the figures measure the servers. Load generator CPU is its CPU time over the "
        "measured window; under 100% it was waiting for the server. On loopback the "
        "connecting CPU also runs the server's half of each TCP handshake, so short "
        "connections (`oneshot`) cost the load generator more than the server: there the "
        f"fastest servers meet its ceiling, and a server within {100 * (1 - TIE):.0f}% of "
        f"C, either way, with the load generator at {100 * SATURATED:.0f}% CPU or more in "
        "both cells is a tie at that ceiling: neither a faster nor a slower server."
    )
    return [
        "## Load generator headroom",
        "",
        intro,
        "",
        _headroom_summary(verdicts),
        "",
        *table(header, rows),
        "",
    ]


def _headroom_summary(verdicts: list[tuple[str, str]]) -> str:
    slower = [cell for cell, verdict in verdicts if verdict == SLOWER]
    ties = [cell for cell, verdict in verdicts if verdict == CEILING]
    if slower:
        return f"**The C reference server is slower than another server in: {', '.join(slower)}.**"
    text = "The C reference server is the fastest in every cell measured"
    if ties:
        text += f", or ties at the load generator's ceiling ({', '.join(ties)})"
    return text + "."


def _ratio_section(layout: Layout, summaries: Summaries) -> list[str]:
    figures = Figures(summaries)
    pairs = [
        ("portico-serial", "stdlib-serial"),
        ("portico-threads", "stdlib-threads"),
        ("portico-fork", "stdlib-fork"),
    ]
    pairs = [p for p in pairs if p[0] in layout.servers and p[1] in layout.servers]
    header = [
        "cell",
        *(f"{a} ÷ {b}" for a, b in pairs),
        "best portico ÷ best Python peer",
        "best Python peer ÷ C",
    ]
    rows = []
    for cell in layout.cells:
        best_portico = figures.best(figures.portico, cell)
        best_peer = figures.best(figures.python_peers, cell)
        row = [cell, *(ratio(figures.rps(a, cell), figures.rps(b, cell)) for a, b in pairs)]
        row.append(
            ratio(best_portico[1] if best_portico else None, best_peer[1] if best_peer else None)
        )
        row.append(ratio(best_peer[1] if best_peer else None, figures.rps(REFERENCE, cell)))
        rows.append(row)
    if not any(any(row[1:]) for row in rows):  # no stdlib pair, no Python peer (a preset)
        return []
    return ["## Key ratios (requests/s)", "", *table(header, rows), ""]


PREFORK_INTRO = (
    "`portico-ENGINE-wN` is `portico serve --engine ENGINE --workers N`: a master and N "
    "worker processes serving one listening socket (`-reuseport`: with `--reuse-port`, a "
    "SO_REUSEPORT socket of each worker's own), against `portico-ENGINE`, the same engine in "
    "one process, in the same run. w1 ÷ one process is what the master costs (it does nothing "
    "per request: 1.0x); wN ÷ w1 is what more workers add, bounded by the CPU left to them: "
    "the load generator runs on the same CPUs. Ratios are the medians of the ratios within "
    "each run, where the servers of a cell run one after the other, seconds apart (a slow "
    "spell of the host then slows both sides). In the second table, CPU is the server's "
    "(master and workers) and the load generator's, in CPUs, over the measured window; "
    "µs/req is the server's CPU time per request, which stays flat as workers are added when "
    "they do not contend with each other; busy is all the CPU used, of the machine's: near "
    "100%, the machine is full, and more workers cannot add more."
)


def _prefork_groups(layout: Layout) -> dict[str, list[tuple[str, int, bool]]]:
    """The prefork servers of the run by engine: (name, workers, SO_REUSEPORT), in order."""
    groups: dict[str, list[tuple[str, int, bool]]] = {}
    for server in layout.servers:
        match = PREFORK_NAME.match(server)
        if match:
            entry = (server, int(match["workers"]), bool(match["reuse"]))
            groups.setdefault(match["engine"], []).append(entry)
    return {
        engine: sorted(entries, key=lambda e: (e[1], e[2])) for engine, entries in groups.items()
    }


def _short(workers: int, reuse: bool) -> str:
    return f"w{workers}" + (" reuseport" if reuse else "")


def per_request_us(summary: Summary | None) -> float | None:
    """The server's CPU time per request, in µs."""
    if summary is None or summary.server_cpu is None or not summary.rps:
        return None
    return 1e6 * summary.server_cpu / summary.rps


def paired_ratio(records: Sequence[CellResult], mine: str, theirs: str, cell: str) -> float | None:
    """The median over runs of ``mine`` ÷ ``theirs`` on ``cell``, each run with itself."""
    by_run: dict[tuple[str, int], float] = {
        (r.server, r.run): r.rps
        for r in records
        if r.cell == cell and r.status == OK and r.rps and r.server in (mine, theirs)
    }
    ratios = [
        rps / by_run[theirs, run]
        for (server, run), rps in by_run.items()
        if server == mine and (theirs, run) in by_run
    ]
    return statistics.median(ratios) if ratios else None


class _Ratios:
    """Ratios of two servers on a cell: paired by run when the records are there."""

    def __init__(self, figures: Figures, records: Sequence[CellResult]) -> None:
        self.figures = figures
        self.records = records

    def __call__(self, mine: str, theirs: str, cell: str) -> str:
        if self.records:
            value = paired_ratio(self.records, mine, theirs, cell)
            return "" if value is None else f"{value:.2f}x"
        return ratio(self.figures.rps(mine, cell), self.figures.rps(theirs, cell))


def _prefork_section(
    layout: Layout, summaries: Summaries, cpus: int | None, records: Sequence[CellResult] = ()
) -> list[str]:
    figures = Figures(summaries)
    of = _Ratios(figures, records)
    lines: list[str] = []
    for engine, variants in _prefork_groups(layout).items():
        single = f"portico-{engine}"
        w1 = f"portico-{engine}-w1"
        columns = [(single, "one process")] if single in layout.servers else []
        columns += [(name, _short(workers, reuse)) for name, workers, reuse in variants]
        multi = [(name, _short(w, r)) for name, w, r in variants if w > 1]
        reference = [(REFERENCE, "C")] if REFERENCE in layout.servers else []
        header = ["cell", *(label for _, label in columns + reference)]
        header += ["w1 ÷ one process", *(f"{label} ÷ w1" for _, label in multi)]
        header += [f"{label} ÷ one process" for _, label in multi] + ["fastest ÷ C"]
        rows, cpu_rows = [], []
        for cell in layout.cells:
            if not any(figures.get(name, cell) for name, _ in columns):
                continue
            row = [cell, *(number(figures.rps(name, cell)) for name, _ in columns + reference)]
            row.append(of(w1, single, cell))
            row += [of(name, w1, cell) for name, _ in multi]
            row += [of(name, single, cell) for name, _ in multi]
            best = figures.best([name for name, _ in columns], cell)
            row.append(of(best[0], REFERENCE, cell) if best else "")
            rows.append(row)
            cpu_rows.append(
                [cell, *(_cpu_text(figures.get(name, cell), cpus) for name, _ in columns)]
            )
        cpu_header = [
            "cell",
            *(f"{label}: server / load gen CPU, µs/req, busy" for _, label in columns),
        ]
        lines += [f"### {engine}", "", *table(header, rows), "", *table(cpu_header, cpu_rows), ""]
    if not lines:
        return []
    return ["## Prefork: workers against one process", "", PREFORK_INTRO, "", *lines]


# ---------------------------------------------------------------- TLS

TLS_PEERS = ("asyncio-protocol", "asyncio-protocol-uvloop")  # asyncio with ssl=
TLS_INTRO = (
    "`tls-oneshot` is a fresh connection per request: connect, a full TLS handshake, one "
    "64-byte line, the reply, close_notify, close, so its requests/s are handshakes/s. "
    "`tls-pingpong` is persistent TLS connections, one 64-byte line in flight on each. "
    "Ratios are the medians of the ratios within each run (the servers of a cell run "
    "seconds apart in each run), `A ÷ B` above 1.00x meaning A is faster."
)


def paired_cell_ratio(
    records: Sequence[CellResult], server: str, mine: str, theirs: str
) -> float | None:
    """The median over runs of ``server`` on cell ``mine`` ÷ on cell ``theirs``."""
    by_run: dict[tuple[str, int], float] = {
        (r.cell, r.run): r.rps
        for r in records
        if r.server == server and r.status == OK and r.rps and r.cell in (mine, theirs)
    }
    ratios = [
        rps / by_run[theirs, run]
        for (cell, run), rps in by_run.items()
        if cell == mine and (theirs, run) in by_run
    ]
    return statistics.median(ratios) if ratios else None


def _tls_cells(layout: Layout) -> list[str]:
    return [cell for cell, (workload, _) in layout.cells.items() if workload.startswith("tls-")]


def _tls_sessions(layout: Layout, summaries: Summaries, tls_cells: list[str]) -> list[str]:
    """What was negotiated: one sentence if every TLS cell agrees, else a table."""
    measured = [
        summary
        for (server, cell), summary in summaries.items()
        if cell in tls_cells and summary.status == OK and server in layout.servers
    ]
    sessions = list(dict.fromkeys(s.tls_session for s in measured if s.tls_session))
    handshakes = sum(s.tls_handshakes for s in measured)
    resumed = sum(s.tls_resumed for s in measured)
    other = sum(s.tls_other_sessions for s in measured)
    libraries = "; ".join(dict.fromkeys(s.tls_library for s in measured if s.tls_library))
    counts = (
        f"{handshakes:,} handshakes in the measured windows, {resumed:,} resumed sessions, "
        f"{other:,} handshakes with another version or cipher than their cell's first"
    )
    where = f" (load generator: {libraries})" if libraries else ""
    if len(sessions) == 1:
        return [f"Negotiated in every TLS cell: **{sessions[0]}**{where}; {counts}.", ""]
    rows = [
        [layout.servers[s.server], s.cell, s.tls_session or "?"]
        for s in measured
        if s.server in layout.servers
    ]
    return [
        f"Negotiated{where}; {counts}:",
        "",
        *table(["server", "cell", "version, cipher, group"], rows),
        "",
    ]


def _tls_section(
    layout: Layout, summaries: Summaries, records: Sequence[CellResult] = ()
) -> list[str]:
    tls_cells = _tls_cells(layout)
    if not tls_cells:
        return []
    figures = Figures(summaries)
    of = _Ratios(figures, records)
    cells = list(layout.cells)
    lines = ["## TLS", "", TLS_INTRO, "", *_tls_sessions(layout, summaries, tls_cells)]
    portico = [s for s in layout.servers if s.startswith("portico-") and not is_prefork(s)]
    peers = [p for p in TLS_PEERS if p in layout.servers]
    rows = [
        [f"{layout.servers[mine]} ÷ {layout.servers[theirs]}"]
        + [of(mine, theirs, cell) for cell in cells]
        for mine in portico
        for theirs in peers
    ]
    if rows:
        lines += ["### portico ÷ asyncio", "", *table(["requests/s", *cells], rows), ""]
    twins = [(cell, cell.removeprefix("tls-")) for cell in tls_cells]
    twins = [(tls, plain) for tls, plain in twins if plain in layout.cells]
    if twins:
        header = ["server", *(f"{tls} ÷ {plain}" for tls, plain in twins)]
        twin_rows = [
            [label, *(_cell_ratio(figures, records, server, tls, plain) for tls, plain in twins)]
            for server, label in layout.servers.items()
        ]
        lines += [
            "### What TLS costs: TLS ÷ plaintext, each server",
            "",
            *table(header, twin_rows),
            "",
        ]
    cpu_rows = [
        [label, *(_per_request_text(figures.get(server, cell)) for cell in tls_cells)]
        for server, label in layout.servers.items()
    ]
    lines += [
        "### CPU per request (TLS cells)",
        "",
        "Server and load generator CPU time per request (per handshake in `tls-oneshot`), "
        "in µs, then their CPU use over the measured window (1.00: a whole CPU). The load "
        "generator kept up with a server when its CPU use stayed below 1.00 while the "
        "server's reached it.",
        "",
        *table(["server", *tls_cells], cpu_rows),
        "",
    ]
    return lines


def _cell_ratio(
    figures: Figures, records: Sequence[CellResult], server: str, mine: str, theirs: str
) -> str:
    if records:
        value = paired_cell_ratio(records, server, mine, theirs)
        return "" if value is None else f"{value:.2f}x"
    return ratio(figures.rps(server, mine), figures.rps(server, theirs))


def _per_request_text(summary: Summary | None) -> str:
    if summary is None or not summary.rps:
        return ""
    server, loadgen = summary.server_cpu, summary.loadgen_cpu
    per_server = "?" if server is None else f"{1e6 * server / summary.rps:,.0f}"
    per_loadgen = "?" if loadgen is None else f"{1e6 * loadgen / summary.rps:,.0f}"
    return f"{per_server} / {per_loadgen} µs ({_cpus(server)} / {_cpus(loadgen)})"


def _cpu_text(summary: Summary | None, cpus: int | None) -> str:
    if summary is None:
        return ""
    server, loadgen, other = summary.server_cpu, summary.loadgen_cpu, summary.other_cpu
    text = f"{_cpus(server)} / {_cpus(loadgen)}"
    per = per_request_us(summary)
    if per is not None:
        text += f", {per:.1f} µs"
    if cpus and None not in (server, loadgen, other):
        text += f", {percent(((server or 0) + (loadgen or 0) + (other or 0)) / cpus)}"
    return text


def _cpus(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def _noise_section(layout: Layout, summaries: Summaries) -> list[str]:
    """The cells during which other processes kept the machine busy: their figures are low."""
    noisy = [
        f"{summary.cell} on {layout.servers.get(summary.server, summary.server)} "
        f"({percent(summary.other_cpu)})"
        for summary in summaries.values()
        if summary.other_cpu is not None and summary.other_cpu > NOISY_CPU
    ]
    if not noisy:
        return []
    intro = (
        f"Other processes used more than {percent(NOISY_CPU)} of a CPU during these cells "
        "(median over runs), so their figures are likely low:"
    )
    return ["## Noise", "", intro, "", *(f"- {line}" for line in noisy), ""]


def _cell_section(cell: str, label: str, layout: Layout, summaries: Summaries) -> list[str]:
    reference = summaries.get((REFERENCE, cell))
    reference_rps = reference.rps if reference and reference.status == OK else None
    idle = cell.startswith("idle")
    header = [
        "server",
        "req/s",
        "÷ C",
        "p50 µs",
        "p99 µs",
        "errors",
        "peak RSS MiB",
        "CPU server / loadgen / other",
    ]
    if idle:
        header += ["idle held (start / end)", "KiB per idle conn"]
    if cell.startswith("bulk"):
        header.insert(2, "MiB/s")
    rows = []
    for server, server_label in layout.servers.items():
        summary = summaries.get((server, cell))
        if summary is None:
            continue
        if summary.status != OK:
            rows.append([server_label, status_text(summary)] + [""] * (len(header) - 2))
            continue
        row = [
            server_label,
            number(summary.rps),
            ratio(summary.rps, reference_rps),
            micros(summary.p50_us),
            micros(summary.p99_us),
            errors_text(summary),
            mib(summary.rss_peak_kib),
            " / ".join(map(percent, (summary.server_cpu, summary.loadgen_cpu, summary.other_cpu))),
        ]
        if idle:
            row += [
                f"{number(summary.idle_established)} / {number(summary.idle_held)}",
                "" if summary.idle_kib_per_conn is None else kib_text(summary.idle_kib_per_conn),
            ]
        if cell.startswith("bulk"):
            row.insert(2, number(summary.mib_s))
        rows.append(row)
    return [f"### {cell}: {label}", "", *table(header, rows), ""]


def render_markdown(
    meta: Mapping[str, Any], summaries: Summaries, records: Sequence[CellResult] = ()
) -> str:
    """The report; with the run's ``records``, the prefork ratios are paired by run."""
    layout = Layout.of(meta, summaries)
    lines = _header(meta)
    lines += _summary_section(layout, summaries)
    lines += _headroom_section(layout, summaries)
    lines += _ratio_section(layout, summaries)
    cpus = meta.get("machine", {}).get("cpus")
    lines += _prefork_section(layout, summaries, cpus if isinstance(cpus, int) else None, records)
    lines += _tls_section(layout, summaries, records)
    if not meta.get("preset"):  # a preset's run is not issue 3's matrix
        lines += _targets_section(summaries)
    lines += _noise_section(layout, summaries)
    lines += ["## Every cell", ""]
    for cell, (_, label) in layout.cells.items():
        lines += _cell_section(cell, label, layout, summaries)
    notes = [*NOTES, *(PREFORK_NOTES if _prefork_groups(layout) else ())]
    if _tls_cells(layout):
        tls = {"certificate": "?", "python_openssl": "?", **meta.get("tls", {})}
        notes += [note.format(**tls) for note in TLS_NOTES]
    lines += ["## Notes", "", *(f"- {note}" for note in notes), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- plots


def write_plots(
    meta: Mapping[str, Any], summaries: Summaries, directory: Path, stem: str
) -> list[Path]:
    """One PNG per workload: a bar per server in each of its cells.  Needs matplotlib."""
    import matplotlib  # noqa: PLC0415 (optional extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    layout = Layout.of(meta, summaries)
    written = []
    for workload, cells in layout.plot_groups().items():
        panels = _panels(cells, layout, summaries)
        if not panels:
            continue
        columns = min(PLOT_COLUMNS, len(panels))
        rows = -(-len(panels) // columns)
        height = 0.28 * len(layout.servers) + 1.2
        figure, axes = plt.subplots(
            rows, columns, figsize=(5.0 * columns, height * rows), squeeze=False
        )
        flat = [axis for row in axes for axis in row]
        for axis, (title, unit, bars) in zip(flat, panels, strict=False):
            _bar_panel(axis, title, unit, bars)
        for axis in flat[len(panels) :]:
            axis.set_visible(False)
        kinds = {layout.cells[cell][0].startswith("tls-") for cell in cells}
        title = f"{workload}, TLS and plaintext" if len(kinds) > 1 else layout.cells[cells[0]][0]
        figure.suptitle(f"{title} (higher is better, except memory; C reference in grey)")
        figure.tight_layout()
        path = directory / f"{stem}-{workload}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


Bars = list[tuple[str, float, bool]]  # server name, value, is the reference


def _panels(cells: list[str], layout: Layout, summaries: Summaries) -> list[tuple[str, str, Bars]]:
    mixed = len({layout.cells[cell][0].startswith("tls-") for cell in cells}) > 1
    panels = []
    for cell in cells:
        workload, label = layout.cells[cell]
        if mixed and not workload.startswith("tls-"):
            label += " (plaintext)"
        panels.append(
            (
                label,
                "MiB/s" if workload == "bulk" else "requests/s",
                _bars(cell, layout, summaries, "mib_s" if workload == "bulk" else "rps"),
            )
        )
        if workload == "idle":
            panels.append(
                (
                    "memory per idle connection",
                    "KiB",
                    _bars(cell, layout, summaries, "idle_kib_per_conn"),
                )
            )
    return [panel for panel in panels if panel[2]]


def _bars(cell: str, layout: Layout, summaries: Summaries, field: str) -> Bars:
    bars = []
    for server in layout.servers:
        summary = summaries.get((server, cell))
        value = getattr(summary, field) if summary and summary.status == OK else None
        if value is not None:
            bars.append((server, float(value), server == REFERENCE))
    return bars


def _thousands(value: float, _position: object) -> str:
    return f"{value / 1000:g}k" if value >= 1000 else f"{value:g}"


def _bar_panel(axis: Any, title: str, unit: str, bars: Bars) -> None:
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 (optional extra)

    labels = [label for label, _, _ in bars]
    values = [value for _, value, _ in bars]
    colors = ["#555555" if ref else "#4878b0" for _, _, ref in bars]
    positions = range(len(bars))
    axis.barh(positions, values, color=colors)
    axis.set_yticks(list(positions), labels, fontsize=8)
    axis.invert_yaxis()
    axis.set_title(title, fontsize=10)
    axis.set_xlabel(unit, fontsize=9)
    axis.tick_params(axis="x", labelsize=8)
    axis.xaxis.set_major_formatter(_thousands)
    axis.xaxis.set_major_locator(MaxNLocator(4))
    for position, value in zip(positions, values, strict=True):
        axis.text(
            value,
            position,
            f" {value:,.0f}" if value >= 100 else f" {kib_text(value)}",
            va="center",
            fontsize=7,
        )
    axis.margins(x=0.25)


# ---------------------------------------------------------------- entry point


def write_report(
    results: Path, markdown: Path | None = None, plots: Path | None = None
) -> list[Path]:
    """Write the Markdown (and the plots, if a directory is given); returns the files written."""
    meta, records = read_results(results)
    summaries = summarize(records)
    markdown = markdown or results.with_suffix(".md")
    markdown.write_text(render_markdown(meta, summaries, records), encoding="utf-8")
    written = [markdown]
    if plots is not None:
        try:
            written += write_plots(meta, summaries, plots, results.stem)
        except ImportError:
            print("bench.throughput: no matplotlib (pip install -e '.[bench]'): no plots")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput.report", description=__doc__)
    parser.add_argument("results", type=Path, help="a results .jsonl file")
    parser.add_argument("--markdown", type=Path, help="default: the results file with .md")
    parser.add_argument("--plots", type=Path, help="directory for the PNG plots (none if unset)")
    args = parser.parse_args(argv)
    for path in write_report(args.results, args.markdown, args.plots):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
