"""Issue 3's targets, checked against a run's medians: met, not met, or not measured.

A target whose figures the run lacks (an engine portico cannot run yet, a
server or cell left out of the run, an n/a or failed cell) is "not measured",
and its figure says what is missing; it turns into a verdict as soon as a run
has the figures.  Every row prints its figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from bench.throughput.results import FAILED, OK, Summary
from bench.throughput.servers import is_prefork
from bench.throughput.workloads import IDLE_CONNECTIONS

__all__ = ["Figures", "TargetRow", "target_rows"]

UVLOOP_PROTOCOL = "asyncio-protocol-uvloop"
STDLIB_THREADS = "stdlib-threads"
PYTHON_PEER_FAMILIES = ("stdlib-", "asyncio-", "gevent")
# Each portico engine against the stdlib server it replaces.
REPLACES = {
    "serial": "stdlib-serial",
    "threads": "stdlib-threads",
    "fork": "stdlib-fork",
    "pool": "stdlib-threads",
    "event": "stdlib-threads",
    "async": "stdlib-threads",
}
MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"


@dataclass(frozen=True)
class TargetRow:
    target: str
    figure: str
    verdict: str


class Figures:
    """Lookups over the medians of a run."""

    def __init__(self, summaries: Mapping[tuple[str, str], Summary]) -> None:
        self.summaries = summaries
        self.servers = list(dict.fromkeys(server for server, _ in summaries))

    def get(self, server: str, cell: str) -> Summary | None:
        summary = self.summaries.get((server, cell))
        return summary if summary is not None and summary.status == OK else None

    def rps(self, server: str, cell: str) -> float | None:
        summary = self.get(server, cell)
        return summary.rps if summary else None

    def best(self, servers: Iterable[str], cell: str) -> tuple[str, float] | None:
        """The fastest of ``servers`` on ``cell``, with its figure."""
        measured = [(s, r) for s in servers if (r := self.rps(s, cell)) is not None]
        return max(measured, key=lambda pair: pair[1]) if measured else None

    @property
    def portico(self) -> list[str]:
        """portico in one process: issue 3's targets are per process (prefork is issue 4's)."""
        return [s for s in self.servers if s.startswith("portico-") and not is_prefork(s)]

    @property
    def python_peers(self) -> list[str]:
        return [s for s in self.servers if s.startswith(PYTHON_PEER_FAMILIES)]


# A figure (server, req/s), or what is missing to have it ("portico-event on oneshot-16").
Figure = tuple[str, float] | str


def ratio_row(target: str, mine: Figure, theirs: Figure, at_least: float) -> TargetRow:
    """``mine`` against ``theirs``: met when the ratio is at least ``at_least``."""
    if isinstance(mine, str) or isinstance(theirs, str) or theirs[1] <= 0:
        missing = [f for f in (mine, theirs) if isinstance(f, str)] or ["a non-zero figure"]
        return TargetRow(target, _missing("; ".join(missing)), NOT_MEASURED)
    ratio = mine[1] / theirs[1]
    figure = f"{ratio:.2f}x ({mine[0]} {mine[1]:,.0f} / {theirs[0]} {theirs[1]:,.0f})"
    return TargetRow(target, figure, MET if ratio >= at_least else NOT_MET)


def _missing(what: str) -> str:
    return f"no figure: {what}"


def _named(figures: Figures, server: str, cell: str) -> Figure:
    rps = figures.rps(server, cell)
    return f"{server} on {cell}" if rps is None else (server, rps)


def _best(figures: Figures, servers: Iterable[str], cell: str, what: str) -> Figure:
    return figures.best(servers, cell) or f"{what} on {cell}"


def _pingpong_many(figures: Figures) -> Iterator[TargetRow]:
    for cell in ("pingpong-64x256", "pingpong-64x1024"):
        best = _best(figures, figures.portico, cell, "any portico engine")
        uvloop = _named(figures, UVLOOP_PROTOCOL, cell)
        event = _named(figures, "portico-event", cell)
        yield ratio_row(
            f"{cell}: fastest portico >= 1.0x asyncio Protocol on uvloop", best, uvloop, 1.0
        )
        yield ratio_row(
            f"{cell}: event >= 1.3x stdlib ThreadingTCPServer",
            event,
            _named(figures, STDLIB_THREADS, cell),
            1.3,
        )
        yield ratio_row(
            f"{cell}: event >= 1.5x gevent", event, _named(figures, "gevent", cell), 1.5
        )


def _idle(figures: Figures) -> Iterator[TargetRow]:
    for engine, kib in (("event", 10.0), ("async", 4.0)):
        summary = figures.get(f"portico-{engine}", "idle-10k")
        yield _holds_all(engine, summary)
        per = summary.idle_kib_per_conn if summary else None
        yield TargetRow(
            f"idle: {engine} memory per idle connection <= {kib:g} KiB",
            _missing(f"portico-{engine} on idle-10k") if per is None else f"{per:.1f} KiB",
            NOT_MEASURED if per is None else MET if per <= kib else NOT_MET,
        )
        name = f"portico-{engine}"
        yield ratio_row(
            f"idle: {engine} active throughput >= 0.9x without the idle ones",
            _named(figures, name, "idle-10k"),
            _named(figures, name, "pingpong-64x16"),
            0.9,
        )


def _holds_all(engine: str, summary: Summary | None) -> TargetRow:
    """Every idle connection opened, checked, and still open when the measured window ended."""
    target = f"idle: {engine} holds all {IDLE_CONNECTIONS:,}"
    opened = summary.idle_established if summary else None
    held = summary.idle_held if summary else None
    if opened is None or held is None:
        return TargetRow(target, _missing(f"portico-{engine} on idle-10k"), NOT_MEASURED)
    figure = f"{opened:,.0f} opened, {held:,.0f} still held at the end"
    return TargetRow(target, figure, MET if min(opened, held) >= IDLE_CONNECTIONS else NOT_MET)


def _oneshot(figures: Figures) -> Iterator[TargetRow]:
    cell = "oneshot-16"
    threads = _named(figures, STDLIB_THREADS, cell)
    for engine in ("pool", "event", "async"):
        yield ratio_row(
            f"{cell}: {engine} >= 3x stdlib ThreadingTCPServer",
            _named(figures, f"portico-{engine}", cell),
            threads,
            3.0,
        )
    yield ratio_row(
        f"{cell}: fastest portico >= 1.0x asyncio Protocol on uvloop",
        _best(figures, figures.portico, cell, "any portico engine"),
        _named(figures, UVLOOP_PROTOCOL, cell),
        1.0,
    )


def _large(figures: Figures) -> Iterator[TargetRow]:
    for cell in ("pingpong-16kx16", "bulk-256m"):
        yield ratio_row(
            f"{cell}: fastest portico >= 1.0x the fastest Python peer",
            _best(figures, figures.portico, cell, "any portico engine"),
            _best(figures, figures.python_peers, cell, "any Python peer"),
            1.0,
        )


def _udp(figures: Figures) -> Iterator[TargetRow]:
    cell = "udp-64x16"
    yield ratio_row(
        f"{cell}: pool >= 5x stdlib ThreadingUDPServer",
        _named(figures, "portico-pool", cell),
        _named(figures, STDLIB_THREADS, cell),
        5.0,
    )
    yield ratio_row(
        f"{cell}: fastest portico >= 1.0x uvloop's DatagramProtocol",
        _best(figures, figures.portico, cell, "any portico engine"),
        _named(figures, UVLOOP_PROTOCOL, cell),
        1.0,
    )


def _no_regression(figures: Figures) -> Iterator[TargetRow]:
    """Every portico engine at least as fast as the stdlib server it replaces, everywhere."""
    worst: tuple[float, str] | None = None
    compared = 0
    for server in figures.portico:
        stdlib = REPLACES.get(server.removeprefix("portico-"))
        for (name, cell), summary in figures.summaries.items():
            theirs = figures.rps(stdlib, cell) if stdlib else None
            if name != server or summary.rps is None or not theirs:
                continue
            ratio = summary.rps / theirs
            compared += 1
            if worst is None or ratio < worst[0]:
                worst = (ratio, f"{server} / {stdlib} on {cell}")
    target = "every workload: no portico engine slower than the stdlib server it replaces"
    if worst is None:
        missing = "a portico engine and the stdlib server it replaces, on the same cell"
        yield TargetRow(target, _missing(missing), NOT_MEASURED)
    else:
        figure = f"lowest {worst[0]:.2f}x ({worst[1]}) of {compared} engine-cell pairs"
        yield TargetRow(target, figure, MET if worst[0] >= 1.0 else NOT_MET)


def _zero_errors(figures: Figures) -> Iterator[TargetRow]:
    portico = [(name, cell) for name, cell in figures.summaries if name in figures.portico]
    errors = sum(figures.summaries[key].errors for key in portico)
    failed = sum(figures.summaries[key].status == FAILED for key in portico)
    measured = any(figures.get(*key) for key in portico)
    figure = f"{errors:,} errors" + (f", {failed} cell(s) failed" if failed else "")
    yield TargetRow(
        "every workload: zero errors (portico engines)",
        figure if measured or failed else _missing("any portico engine"),
        MET
        if measured and errors == failed == 0
        else NOT_MET
        if measured or failed
        else NOT_MEASURED,
    )


def target_rows(summaries: Mapping[tuple[str, str], Summary]) -> list[TargetRow]:
    figures = Figures(summaries)
    sections = (_pingpong_many, _idle, _oneshot, _large, _udp, _no_regression, _zero_errors)
    return [row for section in sections for row in section(figures)]
