"""Results files, medians over runs, and the Markdown report (no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.throughput.report import (
    CEILING,
    FASTEST,
    SLOWER,
    headroom_verdict,
    render_markdown,
    write_report,
)
from bench.throughput.results import CellResult, ResultsWriter, Summary, read_results, summarize
from bench.throughput.targets import target_rows

pytestmark = pytest.mark.timeout(10)


def ran(
    server: str, cell: str, run: int, rps: float, errors: int = 0, **extra: object
) -> CellResult:
    workload = cell.split("-", maxsplit=1)[0]
    kinds = {"timeout": errors} if errors else {}
    return CellResult(server, cell, workload, run, "ok", rps=rps, p50_us=10.0, p99_us=20.0,
                      errors=errors, error_kinds=kinds, loadgen_cpu=0.5, server_cpu=1.0,
                      other_cpu=0.0, **extra)  # type: ignore[arg-type]  # fmt: skip


RESULTS = [
    ran("c-epoll", "pingpong-64x256", 1, 100.0),
    ran("c-epoll", "pingpong-64x256", 2, 300.0),
    ran("c-epoll", "pingpong-64x256", 3, 200.0),
    ran("portico-threads", "pingpong-64x256", 1, 50.0, errors=1),
    ran("portico-threads", "pingpong-64x256", 2, 70.0, errors=2),
    CellResult.failed("portico-threads", "pingpong-64x256", "pingpong", 3, "ServerFailed: boom"),
    ran("stdlib-threads", "pingpong-64x256", 1, 40.0),
    CellResult.skipped("stdlib-serial", "pingpong-64x256", "pingpong", 1, "serves 1 connection"),
]


def test_medians_and_summed_errors() -> None:
    summaries = summarize(RESULTS)
    c = summaries["c-epoll", "pingpong-64x256"]
    assert (c.status, c.runs, c.rps, c.errors) == ("ok", 3, 200.0, 0)
    threads = summaries["portico-threads", "pingpong-64x256"]
    assert (threads.rps, threads.errors, threads.runs) == (60.0, 3, 2)
    assert threads.error_kinds == {"timeout": 3}
    assert "1 of 3 runs failed" in threads.reason
    serial = summaries["stdlib-serial", "pingpong-64x256"]
    assert serial.status == "n/a" and serial.rps is None


def test_results_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with ResultsWriter(path, {"command": "python -m bench.throughput"}) as writer:
        for result in RESULTS:
            writer.write(result)
    meta, results = read_results(path)
    assert meta["command"] == "python -m bench.throughput"
    assert results == RESULTS


def test_markdown_report(tmp_path: Path) -> None:
    text = render_markdown({"command": "python -m bench.throughput --quick"}, summarize(RESULTS))
    assert "`python -m bench.throughput --quick`" in text
    assert "n/a (serves 1 connection)" in text
    assert "| portico threads | 60 | 0.30x |" in text
    assert "**3** (timeout 3)" in text
    assert "The C reference server is the fastest in every cell measured." in text
    assert "1.50x" in text  # portico threads / stdlib threads


def test_report_files(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with ResultsWriter(path, {}) as writer:
        for result in RESULTS:
            writer.write(result)
    written = write_report(path)
    assert written == [tmp_path / "r.md"]
    assert "## Every cell" in written[0].read_text()


def test_targets_of_engines_not_built_are_not_measured() -> None:
    rows = {row.target: row for row in target_rows(summarize(RESULTS))}
    event = rows["pingpong-64x256: event >= 1.3x stdlib ThreadingTCPServer"]
    assert event.verdict == "not measured"
    regression = rows["every workload: no portico engine slower than the stdlib server it replaces"]
    assert regression.verdict == "met" and "1.50x" in regression.figure
    assert rows["every workload: zero errors (portico engines)"].verdict == "not met"


def summary(server: str, rps: float, loadgen_cpu: float) -> Summary:
    return Summary(server, "oneshot-16", "oneshot", "ok", rps=rps, loadgen_cpu=loadgen_cpu)


@pytest.mark.parametrize(
    ("c_rps", "c_cpu", "other_rps", "other_cpu", "verdict"),
    [
        (100.0, 0.50, 90.0, 0.40, FASTEST),
        (100.0, 0.97, 103.0, 0.97, CEILING),  # both saturate the load generator
        (100.0, 0.97, 99.0, 0.97, CEILING),  # ... C ahead by less than the margin: a tie too
        (100.0, 0.97, 90.0, 0.97, FASTEST),  # ... by more: C fastest
        (100.0, 0.50, 103.0, 0.97, SLOWER),  # C did not saturate it: C is slower
        (100.0, 0.97, 120.0, 0.97, SLOWER),  # too far apart to be a tie
    ],
)
def test_headroom_verdict(
    c_rps: float, c_cpu: float, other_rps: float, other_cpu: float, verdict: str
) -> None:
    reference = summary("c-epoll", c_rps, c_cpu)
    assert headroom_verdict(reference, summary("gevent", other_rps, other_cpu)) == verdict


@pytest.mark.parametrize(
    ("opened", "held", "verdict"),
    [(10_000, 10_000, "met"), (10_000, 9_990, "not met"), (9_000, 9_000, "not met")],
)
def test_holding_every_idle_connection_means_to_the_end(
    opened: int, held: int, verdict: str
) -> None:
    idle = ran("portico-event", "idle-10k", 1, 100.0, idle_established=opened, idle_held=held)
    row = next(
        r for r in target_rows(summarize([idle])) if r.target == "idle: event holds all 10,000"
    )
    assert row.verdict == verdict
    assert row.figure == f"{opened:,} opened, {held:,} still held at the end"
