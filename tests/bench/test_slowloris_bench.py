"""The slowloris benchmark's harness: a tiny end-to-end run, and its report from known records.

The run proves the pipeline (server, client, attacker, CPU accounting,
results, report) works and that the short-window variant really has its
slowloris connections cut; the figures are far too few to mean anything,
and nothing is asserted about them beyond their shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bench.slowloris.cli import main
from bench.slowloris.client import LINE_SIZE, percentile, request_line
from bench.slowloris.report import render_markdown, summarize, write_report

pytestmark = pytest.mark.timeout(90)

PHASE_KEYS = {"mode", "planned", "sent", "ok", "failed", "failure_kinds", "p50_us", "p99_us",
              "max_us", "seconds"}  # fmt: skip


def test_a_tiny_run_has_the_expected_shape(tmp_path: Path, refserver: Path) -> None:
    out = tmp_path / "slowloris.jsonl"
    status = main([
        "--servers", "c-epoll", "portico-threads-w0.5",
        "--cut-engine", "threads", "--cut-window", "0.5",
        "--runs", "1", "--connections", "20", "--requests", "15", "--interval", "0.05",
        "--timeout", "1", "--settle", "0.2", "--quiet-wait", "0", "--share-cpus",
        "--out", str(out), "--logs", str(tmp_path / "logs"), "--no-plots",
    ])  # fmt: skip
    assert status == 0, (tmp_path / "logs").glob("*")
    meta, *records = [json.loads(line) for line in out.read_text().splitlines()]
    assert meta["type"] == "meta" and meta["settings"]["connections"] == 20
    assert [r["server"] for r in records] == ["c-epoll", "portico-threads-w0.5"]
    for record in records:
        assert record["status"] == "ok", record.get("reason")
        for phase in ("baseline", "attack"):
            for mode in ("persistent", "connection"):
                result = record["phases"][phase][mode]
                assert set(result) == PHASE_KEYS
                assert result["sent"] == result["planned"] == 15
                assert result["ok"] + result["failed"] == result["sent"]
        assert record["phases"]["baseline"]["persistent"]["failed"] == 0
        window = record["attacker"]["window"]
        assert window["max_open"] == 20
        assert 0 <= window["cpu_fraction"] < 1
        assert set(record["cpu"]["attack"]) == {"seconds", "server", "client", "attacker", "other"}
    reference, cut = records
    assert reference["attacker"]["window"]["cuts"] == 0  # the C server keeps every connection
    assert reference["server_held"] >= 15  # and accepted them
    # Half a second of a rate limit the trickle never meets: the server cut them, and the
    # attacker replaced them.
    assert cut["attacker"]["window"]["cuts"] > 0
    assert cut["attacker"]["window"]["opened"] > 0
    report = out.with_suffix(".md").read_text()
    assert "## One persistent connection" in report and "## The attack" in report
    assert "portico threads, --min-receive-rate-window 0.5" in report


def test_unknown_servers_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--servers", "no-such-server"]) == 2
    assert "unknown server no-such-server" in capsys.readouterr().err


def test_requests_are_64_byte_lines_and_percentiles_are_nearest_rank() -> None:
    line = request_line(7)
    assert len(line) == LINE_SIZE and line.endswith(b"\n") and line.count(b"\n") == 1
    assert line.upper() != line  # the server has something to upper-case
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50 and percentile(values, 0.99) == 99
    assert percentile([], 0.5) is None


def _phase(mode: str, p99: float | None, failed: int = 0) -> dict[str, Any]:
    return {
        "mode": mode, "planned": 3, "sent": 3, "ok": 3 - failed, "failed": failed,
        "failure_kinds": {"timeout": failed} if failed else {},
        "p50_us": None if p99 is None else p99 / 2, "p99_us": p99, "max_us": p99, "seconds": 1.0,
    }  # fmt: skip


def _record(server: str, run: int, attack_p99: float | None, failed: int) -> dict[str, Any]:
    cpu = {"seconds": 1.0, "server": 0.1, "client": 0.05, "attacker": 0.02, "other": 0.0}
    return {
        "type": "result", "server": server, "label": server, "run": run, "status": "ok",
        "phases": {
            "baseline": {m: _phase(m, 200.0) for m in ("persistent", "connection")},
            "attack": {"persistent": _phase("persistent", 300.0),
                       "connection": _phase("connection", attack_p99, failed)},
        },
        "attacker": {"setup_seconds": 0.1, "window": {"min_open": 1000, "cuts": 0,
                                                     "cut_lifetime_median_s": None}},
        "cpu": {"baseline": cpu, "attack": cpu},
        "server_held": 32, "kib_per_slowloris": 1.5,
    }  # fmt: skip


def test_the_report_from_known_records(tmp_path: Path) -> None:
    pool_runs = [_record("pool", run, None, 3) for run in (1, 2)]
    records = [*pool_runs, _record("event", 1, 400, 0)]
    summaries = summarize(records)
    pool, event = summaries
    assert pool.runs == 2 and pool.modes["attack", "connection"].failed == 6
    assert pool.p99_ratio["persistent"] == pytest.approx(1.5)
    assert pool.p99_ratio["connection"] is None
    assert event.p99_ratio["connection"] == pytest.approx(2.0)
    text = render_markdown({"runs": 2}, summaries)
    assert "**6 of 6** (timeout 6)" in text
    assert "| pool | 1,000 | 32 |" in text
    results = tmp_path / "known.jsonl"
    lines = [{"type": "meta", "runs": 2, "settings": {"connections": 1000, "timeout_s": 2.0}}]
    results.write_text("\n".join(json.dumps(r) for r in lines + records) + "\n")
    pytest.importorskip("matplotlib")
    written = write_report(results, plot=tmp_path / "known.png")
    assert [path.name for path in written] == ["known.md", "known.png"]
    assert (tmp_path / "known.png").stat().st_size > 0
