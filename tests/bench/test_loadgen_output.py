"""The load generator's command line, the parsing of its result, and /proc helpers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from bench.throughput.loadgen import LoadgenFailed, LoadSpec, parse_result
from bench.throughput.procs import descendants
from bench.throughput.results import idle_kib_per_conn, other_cpu

pytestmark = pytest.mark.timeout(10)

RESULT = {
    "mode": "pingpong", "conns": 16, "size": 64, "idle": 0, "requests": 1000,
    "elapsed_s": 0.5, "rps": 2000.0, "mib_s": 0.12, "p50_us": 40.5, "p90_us": 60.0,
    "p99_us": 90.1, "p999_us": 120.0, "max_us": 300.0, "mean_us": 45.0, "errors": 2,
    "error_kinds": {"connect": 0, "reset": 0, "eof": 0, "mismatch": 2, "timeout": 0,
                    "other": 0},
    "late": 0, "abandoned": 1, "completed_total": 1500, "capped": False, "bulk_done": False,
    "idle_established": 0, "rss_before_idle_kib": -1, "rss_idle_kib": -1,
    "loadgen_cpu": 0.5, "server_cpu": 0.9, "machine_cpu": 1.6, "steal_cpu": 0.0,
}  # fmt: skip


def test_parses_the_last_json_line_among_diagnostics() -> None:
    text = "loadgen: mismatch error: reply differs\n" + json.dumps(RESULT) + "\n"
    result = parse_result(text)
    assert result.rps == 2000.0
    assert result.errors == 2
    assert result.error_kinds["mismatch"] == 2
    assert result.abandoned == 1


def test_integers_are_accepted_where_floats_are_expected() -> None:
    assert parse_result(json.dumps({**RESULT, "rps": 2000})).rps == 2000.0


def test_unknown_fields_are_ignored() -> None:
    assert parse_result(json.dumps({**RESULT, "future_field": 1})).requests == 1000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no result"),
        ("segmentation fault\n", "no result"),
        ("{not json\n", "unreadable"),
        (json.dumps({k: v for k, v in RESULT.items() if k != "p99_us"}), "lacks p99_us"),
        (json.dumps({**RESULT, "errors": "2"}), "errors"),
        (json.dumps({**RESULT, "requests": True}), "requests"),
        (json.dumps({**RESULT, "capped": 0}), "capped"),
    ],
)
def test_bad_output_is_an_error(text: str, message: str) -> None:
    with pytest.raises(LoadgenFailed, match=message):
        parse_result(text)


def test_command_line() -> None:
    spec = LoadSpec("pingpong", 16, size=128, duration=1.5, idle=10, bulk_bytes=0)
    argv = spec.argv(Path("/x/loadgen"), 4321, server_pid=99)
    assert argv[0] == "/x/loadgen"
    pairs = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert pairs["--port"] == "4321"
    assert pairs["--mode"] == "pingpong"
    assert pairs["--conns"] == "16"
    assert pairs["--size"] == "128"
    assert pairs["--duration"] == "1.5"
    assert pairs["--idle"] == "10"
    assert pairs["--server-pid"] == "99"
    assert "--bulk-bytes" not in pairs


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        LoadSpec("flood", 1)


def test_memory_per_idle_connection() -> None:
    idle = {"idle": 10, "idle_established": 8, "rss_before_idle_kib": 1000, "rss_idle_kib": 1080}
    held = parse_result(json.dumps({**RESULT, **idle}))
    assert idle_kib_per_conn(held) == 10.0
    assert idle_kib_per_conn(parse_result(json.dumps(RESULT))) is None


def test_other_processes_cpu() -> None:
    assert other_cpu(parse_result(json.dumps(RESULT))) == pytest.approx(0.2)
    assert other_cpu(parse_result(json.dumps({**RESULT, "machine_cpu": -1.0}))) is None


def test_descendants_of_a_vanished_process_are_none() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert descendants(gone.pid) == []
