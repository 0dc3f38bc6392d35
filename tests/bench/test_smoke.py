"""One tiny end-to-end run of the harness: the C reference server and one portico server.

It proves the pipeline (build, start, readiness, load, results, report) works;
the durations are far too short for the figures to mean anything, and nothing
is asserted about them beyond "some requests, no errors".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench.throughput.cli import main

pytestmark = pytest.mark.timeout(60)


def test_end_to_end(tmp_path: Path, loadgen: Path, refserver: Path) -> None:
    out = tmp_path / "smoke.jsonl"
    status = main([
        "--workloads", "pingpong-64x16", "udp",
        "--servers", "c-epoll", "portico-threads",
        "--duration", "0.2", "--warmup", "0.05", "--runs", "1", "--quiet-wait", "0",
        "--out", str(out), "--logs", str(tmp_path / "logs"), "--no-plots",
    ])  # fmt: skip
    assert status == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["type"] == "meta"
    cells = {(r["server"], r["cell"]): r for r in records[1:]}
    assert set(cells) == {(s, c) for s in ("c-epoll", "portico-threads")
                          for c in ("pingpong-64x16", "udp-64x16")}  # fmt: skip
    for record in cells.values():
        assert record["status"] == "ok", record["reason"]
        assert record["errors"] == 0, record["error_kinds"]
        assert record["requests"] > 0
        assert record["rss_peak_kib"] > 0
    report = out.with_suffix(".md").read_text()
    assert "C epoll reference" in report and "portico threads" in report
