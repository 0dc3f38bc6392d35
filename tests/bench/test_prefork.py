"""portico's prefork supervisor in the harness: its table, readiness, stopping, preset and report.

The end-to-end tests start real ``portico serve --workers N`` masters for a
fraction of a second; nothing is asserted about the figures beyond "some
requests, no errors".
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

import pytest
from bench.throughput import cli, procs
from bench.throughput.presets import PREFORK, PRESETS
from bench.throughput.procs import ServerFailed, running_server, wait_ready
from bench.throughput.report import paired_ratio, render_markdown
from bench.throughput.results import CellResult, summarize
from bench.throughput.runner import RunConfig, run_cell
from bench.throughput.servers import (
    ALL_SERVERS,
    PREFORK_SERVERS,
    SERVERS,
    is_prefork,
    prefork_pid_file,
    prefork_ready,
    select_servers,
)
from bench.throughput.targets import Figures
from bench.throughput.workloads import CELLS, Timing

pytestmark = pytest.mark.timeout(20)

BY_NAME = {server.name: server for server in ALL_SERVERS}
CELL = {cell.name: cell for cell in CELLS}


def needs(server: str) -> None:
    why = BY_NAME[server].unavailable()
    if why:
        pytest.skip(f"{server}: {why}")


# ---------------------------------------------------------------- the table


def test_prefork_entries_are_their_own_family() -> None:
    names = [server.name for server in PREFORK_SERVERS]
    assert {"portico-event-w1", "portico-event-w2", "portico-event-w2-reuseport"} <= set(names)
    assert len(set(s.name for s in ALL_SERVERS)) == len(ALL_SERVERS)
    assert all(is_prefork(name) for name in names)
    assert not any(is_prefork(server.name) for server in SERVERS)
    # The whole matrix pins each server to one CPU: prefork is left out of it and of "portico".
    assert select_servers(None) == list(SERVERS)
    assert not any(is_prefork(s.name) for s in select_servers(["portico"]))
    assert [s.name for s in select_servers(["prefork"])] == names
    assert [s.name for s in select_servers(["portico-event-w2"])] == ["portico-event-w2"]


def test_prefork_command() -> None:
    spec = BY_NAME["portico-event-w2-reuseport"]
    command = spec.command("tcp", 4321)
    serve = command[command.index("serve") :]
    assert serve[:3] == ["serve", "--engine", "event"]
    assert serve[serve.index("--workers") + 1] == "2" and "--reuse-port" in serve
    assert serve[serve.index("--pid-file") + 1] == str(prefork_pid_file(4321))
    assert serve[serve.index("--bind") + 1] == "127.0.0.1:4321"
    assert serve[serve.index("--log-level") + 1] == "WARNING"  # no access log
    assert "--reuse-port" not in BY_NAME["portico-event-w2"].command("tcp", 4321)
    assert spec.stop_leader and spec.forks and spec.ready is not None
    assert spec.not_applicable(CELL["pingpong-64x1024"]) is None


def test_readiness_is_the_pid_file_or_the_log_line(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    with running_server(sleeper, cpu=None, log=log) as process:
        port = 1  # only names the pid file
        prefork_pid_file(port).parent.mkdir(parents=True, exist_ok=True)
        prefork_pid_file(port).unlink(missing_ok=True)
        assert not prefork_ready(2, process, port)
        prefork_pid_file(port).write_text(f"{process.pid + 1}\n")  # another master's
        assert not prefork_ready(2, process, port)
        prefork_pid_file(port).write_text(f"{process.pid}\n")
        assert prefork_ready(2, process, port)
        prefork_pid_file(port).unlink()
        log.write_text(f"... INFO portico.prefork: master pid {process.pid}: 2 workers serving\n")
        assert prefork_ready(2, process, port) and not prefork_ready(3, process, port)


def test_a_server_that_never_says_it_is_ready(tmp_path: Path) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    with (
        running_server(sleeper, cpu=None, log=tmp_path / "log") as process,
        pytest.raises(ServerFailed, match="did not say it was ready"),
    ):
        wait_ready(process, "tcp", 1, timeout=0.3, ready=lambda: False)


LEADER = """
import os, signal, sys, time
child = os.fork()
if child == 0:
    time.sleep(30)  # SIGTERM would end it with -SIGTERM
    os._exit(0)
def stop(signum, frame):
    os.kill(child, signal.SIGKILL)
    _, status = os.waitpid(child, 0)
    sys.exit(0 if os.waitstatus_to_exitcode(status) == -signal.SIGKILL else 1)
signal.signal(signal.SIGTERM, stop)
print(child, flush=True)
time.sleep(30)
"""


def test_stop_leader_signals_the_leader_alone(tmp_path: Path) -> None:
    """SIGTERM reaches the leader only, which stops its child itself (here: with SIGKILL)."""
    log = tmp_path / "log"
    with running_server(
        [sys.executable, "-c", LEADER], cpu=None, log=log, stop_leader=True
    ) as process:
        deadline = time.monotonic() + 10
        while not log.read_text().strip():
            assert process.popen.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        child = int(log.read_text())
    # Exit 0: the leader stopped on SIGTERM (not on the fallback SIGKILL), and its child
    # died of the leader's SIGKILL, not of a SIGTERM sent to the whole session.
    assert process.popen.returncode == 0, log.read_text()
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


# ---------------------------------------------------------------- end to end


def test_a_prefork_server_runs_and_stops_with_its_workers(tmp_path: Path, loadgen: Path) -> None:
    needs("portico-event-w2")
    spec = BY_NAME["portico-event-w2"]
    port = procs.free_port("tcp")
    with running_server(
        spec.command("tcp", port), cpu=None, log=tmp_path / "w2.log", stop_leader=True
    ) as process:
        assert spec.ready is not None
        wait_ready(process, "tcp", port, ready=functools.partial(spec.ready, process, port))
        workers = procs.descendants(process.pid)
        assert len(workers) == 2
    assert process.popen.returncode == 0, process.log_tail()  # drained on SIGTERM, not killed
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not prefork_pid_file(port).exists()  # the master removed it


def test_run_cell_on_prefork(tmp_path: Path, loadgen: Path) -> None:
    needs("portico-event-w2-reuseport")
    timing = Timing("t", duration=0.2, warmup=0.05, runs=1, quiet_wait=0.0)
    config = RunConfig(timing, loadgen, None, None, tmp_path)
    spec = BY_NAME["portico-event-w2-reuseport"]
    result = run_cell(spec, CELL["pingpong-64x16"], config, 1)
    assert result.status == "ok", result.reason
    assert result.errors == 0 and (result.requests or 0) > 0
    assert (result.server_cpu or 0) > 0 and (result.rss_peak_kib or 0) > 0


def test_the_preset_end_to_end(tmp_path: Path, loadgen: Path) -> None:
    needs("portico-event-w1")
    out = tmp_path / "prefork.jsonl"
    status = cli.main([
        "--preset", "prefork",
        "--servers", "portico-event", "portico-event-w1", "portico-event-w2",
        "--workloads", "oneshot-16",
        "--duration", "0.2", "--warmup", "0.05", "--runs", "1", "--quiet-wait", "0",
        "--out", str(out), "--logs", str(tmp_path / "logs"), "--no-plots",
    ])  # fmt: skip
    assert status == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    meta = records[0]
    assert meta["preset"] == "prefork" and meta["timing"]["name"] == "prefork"
    assert meta["server_cpu"] is None and meta["loadgen_cpu"] is None  # nothing pinned
    for record in records[1:]:
        assert record["status"] == "ok", record["reason"]
        assert record["errors"] == 0, record["error_kinds"]
    report = out.with_suffix(".md").read_text()
    assert "## Prefork: workers against one process" in report
    assert "| oneshot-16 |" in report and "w2 ÷ w1" in report
    assert "## Targets" not in report
    assert "pinned to no CPU" in report


# ---------------------------------------------------------------- the preset


def test_the_preset_names_what_exists_and_fits_in_six_minutes() -> None:
    assert PRESETS["prefork"] is PREFORK
    servers = select_servers(PREFORK.servers)
    assert [s.name for s in servers] == list(PREFORK.servers)
    assert {"c-epoll", "portico-event", "portico-event-w1", "portico-event-w2"} <= set(
        PREFORK.servers
    )
    workloads = {CELL[name].workload for name in PREFORK.cells}
    assert workloads == {"oneshot", "pingpong"}
    assert PREFORK.share_cpus
    timing = PREFORK.timing
    overhead = 0.75  # per cell: start, readiness, setup, drain, stop (~0.4 s measured)
    cells = timing.runs * len(PREFORK.cells) * len(PREFORK.servers)
    seconds = cells * (timing.duration + timing.warmup + overhead) + timing.quiet_budget
    assert seconds < 6 * 60, seconds


def test_preset_options() -> None:
    args = cli.parse_args(["--preset", "prefork"])
    assert cli.timing_from(args, PREFORK) == PREFORK.timing
    quick = cli.timing_from(cli.parse_args(["--preset", "prefork", "--quick"]), PREFORK)
    assert quick.name == "prefork-quick" and quick.runs == 1
    assert cli.timing_from(cli.parse_args(["--runs", "2"]), PREFORK).runs == 2
    assert cli.default_out(PREFORK.timing, whole=True).name == "prefork.jsonl"
    assert cli.cpus(share=True) == (None, None)
    with pytest.raises(SystemExit):
        cli.parse_args(["--preset", "nope"])


def test_list_shows_prefork_and_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--list"]) == 0
    listing = capsys.readouterr().out
    assert "portico-event-w2-reuseport" in listing and "presets:" in listing
    assert "prefork " in listing


# ---------------------------------------------------------------- the report


def ran(server: str, run: int, rps: float, cell: str = "pingpong-64x16") -> CellResult:
    return CellResult(server, cell, cell.split("-", maxsplit=1)[0], run, "ok", rps=rps, p50_us=1.0,
                      p99_us=2.0, errors=0, server_cpu=1.0, loadgen_cpu=0.5,
                      other_cpu=0.0)  # fmt: skip


RECORDS = [
    ran("c-epoll", 1, 300_000),
    ran("portico-event", 1, 100_000),
    ran("portico-event-w1", 1, 100_000),
    ran("portico-event-w2", 1, 150_000),
    ran("c-epoll", 2, 200_000),
    ran("portico-event", 2, 50_000),
    ran("portico-event-w1", 2, 50_000),
    ran("portico-event-w2", 2, 60_000),
]


def test_ratios_are_paired_by_run() -> None:
    # Per run, 1.5x and 1.2x: the median is 1.35x; the medians' ratio would be 105/75 = 1.4x.
    assert paired_ratio(RECORDS, "portico-event-w2", "portico-event", "pingpong-64x16") == 1.35
    assert paired_ratio(RECORDS, "portico-event-w2", "nope", "pingpong-64x16") is None


def test_prefork_report_section() -> None:
    meta = {"preset": "prefork", "server_cpu": None, "loadgen_cpu": None, "machine": {"cpus": 2}}
    text = render_markdown(meta, summarize(RECORDS), RECORDS)
    section = text[text.index("## Prefork") : text.index("## Every cell")]
    header = next(line for line in section.splitlines() if line.startswith("| cell | one"))
    assert header.startswith("| cell | one process | w1 | w2 | C | w1 ÷ one process | w2 ÷ w1 |")
    row = next(line for line in section.splitlines() if line.startswith("| pingpong-64x16 | 75"))
    # one, w1, w2, C (medians), w1/one, w2/w1, w2/one, fastest/C (paired, medians of runs)
    figures = ["75,000", "75,000", "105,000", "250,000", "1.00x", "1.35x", "1.35x", "0.40x |"]
    assert row.split(" | ")[1:] == figures
    assert "1.00 / 0.50, 13.3 µs, 75%" in section  # server / load gen CPU, µs/req, busy
    assert "## Targets" not in text and "pinned to no CPU" in text
    assert "## Key ratios" not in text  # no stdlib pair, no Python peer: nothing to show
    # Without the records, the ratios are those of the medians.
    assert "1.40x" in render_markdown(meta, summarize(RECORDS))


def test_a_whole_matrix_report_keeps_its_targets() -> None:
    records = [r for r in RECORDS if r.server in ("c-epoll", "portico-event")]
    text = render_markdown({"server_cpu": 0, "loadgen_cpu": 1}, summarize(records), records)
    assert "## Targets" in text and "## Prefork" not in text
    assert "pinned to CPU 0" in text


def test_prefork_servers_are_not_portico_for_issue_3s_targets() -> None:
    figures = Figures(summarize(RECORDS))
    assert figures.portico == ["portico-event"]
