"""TLS in the harness: the load generator's tls-* modes, the TLS servers, the preset, the report.

The end-to-end tests build the load generator and the C reference with OpenSSL
(skipped, saying why, without libssl-dev) and run each load for a fraction of a
second; nothing is asserted about the figures beyond "some requests, no errors",
and what was negotiated.
"""

from __future__ import annotations

import json
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from bench.throughput import build as build_module
from bench.throughput import cli
from bench.throughput.build import BuildError, Program, build
from bench.throughput.loadgen import LoadResult, LoadSpec, parse_result, run_loadgen
from bench.throughput.peers.common import server_context
from bench.throughput.presets import PRESETS, TLS
from bench.throughput.procs import free_port, running_server, wait_ready
from bench.throughput.report import Layout, paired_cell_ratio, render_markdown
from bench.throughput.results import CellResult, summarize
from bench.throughput.servers import ALL_SERVERS, SERVERS, select_servers
from bench.throughput.tls import TLSFiles, tls_files
from bench.throughput.workloads import ALL_CELLS, CELLS, TLS_CELLS, select_cells

pytestmark = pytest.mark.timeout(20)

BY_NAME = {server.name: server for server in ALL_SERVERS}
CELL = {cell.name: cell for cell in ALL_CELLS}
SHORT = {"duration": 0.2, "warmup": 0.05, "timeout": 2.0, "drain": 0.5, "setup_timeout": 5.0}


# ---------------------------------------------------------------- cells and servers


def test_tls_cells_are_named_not_in_the_matrix() -> None:
    assert not set(TLS_CELLS) & set(CELLS)
    assert select_cells(None) == list(CELLS)
    names = [cell.name for cell in select_cells(["tls-oneshot"])]
    assert names == ["tls-oneshot-1", "tls-oneshot-16"]
    assert [c.name for c in select_cells(["oneshot"])] == ["oneshot-1", "oneshot-16", "oneshot-64"]
    spec = CELL["tls-oneshot-16"].load(cli.FULL)
    assert spec.mode == "tls-oneshot" and spec.tls and spec.src_addrs == 8
    pingpong = CELL["tls-pingpong-64x256"]
    assert pingpong.load(cli.FULL).mode == "tls-pingpong"
    assert pingpong.simultaneous_connections == 256


def test_which_servers_serve_tls() -> None:
    cell = CELL["tls-pingpong-64x16"]
    serving = [s.name for s in SERVERS if s.not_applicable(cell) is None]
    assert {"c-epoll", "portico-threads", "portico-event", "portico-async"} <= set(serving)
    assert {"asyncio-protocol", "asyncio-protocol-uvloop", "asyncio-streams"} <= set(serving)
    for name in ("stdlib-threads", "gevent"):
        assert BY_NAME[name].not_applicable(cell) == "no TLS variant"


def test_tls_commands_name_the_certificate() -> None:
    files = tls_files()
    for name in ("c-epoll", "portico-event", "asyncio-protocol-uvloop"):
        command = BY_NAME[name].command("tls", 4321)
        assert command[command.index("--certfile") + 1] == str(files.certfile), name
        assert command[command.index("--keyfile") + 1] == str(files.keyfile), name
        assert "--udp" not in command
        assert "--certfile" not in BY_NAME[name].command("tcp", 4321)
    assert Path(BY_NAME["c-epoll"].command("tls", 4321)[0]).name.startswith("refserver-tls-")
    portico = BY_NAME["portico-async"].command("tls", 4321)
    assert portico[portico.index("--engine") + 1] == "async"


def test_the_certificates(tmp_path: Path) -> None:
    files = tls_files(tmp_path / "tls")
    assert files == TLSFiles.under(tmp_path / "tls") and files.exist()
    context = server_context(str(files.certfile), str(files.keyfile))  # the key fits
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    ssl.create_default_context(cafile=str(files.ca))
    made = files.certfile.stat().st_mtime_ns
    assert tls_files(tmp_path / "tls").certfile.stat().st_mtime_ns == made  # made once


def test_the_certificates_without_trustme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trustme", None)  # import trustme raises ImportError
    files = tls_files(tmp_path / "tls")
    server_context(str(files.certfile), str(files.keyfile))
    assert files.ca.read_bytes() == files.certfile.read_bytes()  # self-signed


# ---------------------------------------------------------------- building


def test_a_missing_header_says_which_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = Program("loadgen", ("-DWITH_TLS",), ("-lssl",), "no/such/header.h", "libno-dev")
    monkeypatch.setitem(build_module.PROGRAMS, "loadgen-none", missing)
    with pytest.raises(BuildError, match=r"<no/such/header\.h> is missing.*install libno-dev"):
        build("loadgen-none", tmp_path)
    assert not list(tmp_path.iterdir())  # nothing compiled


def test_stale_builds_are_removed_by_name_only(tmp_path: Path) -> None:
    (tmp_path / "loadgen-0123456789ab").write_text("old")
    (tmp_path / "loadgen-tls-0123456789ab").write_text("the TLS build")
    keep = tmp_path / "loadgen-ba9876543210"
    build_module._remove_stale(tmp_path, "loadgen", keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loadgen-tls-0123456789ab"]


def test_the_plain_programs_refuse_tls(loadgen: Path, refserver: Path) -> None:
    command = [loadgen, "--port", "1", "--mode", "tls-oneshot"]
    done = subprocess.run(command, capture_output=True, timeout=10, check=False)
    assert done.returncode == 2 and b"built without TLS" in done.stderr
    command = [refserver, "--port", "0", "--certfile", "x.pem"]
    done = subprocess.run(command, capture_output=True, timeout=10, check=False)
    assert done.returncode == 2 and b"no TLS" in done.stderr


# ---------------------------------------------------------------- the load generator


def test_parses_the_tls_fields() -> None:
    base = {"mode": "tls-oneshot", "conns": 1, "size": 64, "requests": 10, "elapsed_s": 1.0,
            "rps": 10.0, "mib_s": 0.0, "p50_us": 1.0, "p90_us": 1.0, "p99_us": 1.0,
            "p999_us": 1.0, "max_us": 1.0, "mean_us": 1.0, "errors": 0}  # fmt: skip
    tls = {"tls_version": "TLSv1.3", "tls_cipher": "TLS_AES_256_GCM_SHA384",
           "tls_group": "X25519", "tls_handshakes": 12, "tls_handshakes_measured": 10,
           "tls_resumed": 0, "tls_other_sessions": 0, "tls_library": "OpenSSL 3"}  # fmt: skip
    result = parse_result(json.dumps({**base, **tls}))
    assert (result.tls_version, result.tls_group, result.tls_handshakes_measured) == (
        "TLSv1.3",
        "X25519",
        10,
    )
    assert parse_result(json.dumps(base)).tls_version == ""  # a plaintext result


class TLSAnswer(socketserver.StreamRequestHandler):
    """Answer each line over TLS with ``answer(line)``."""

    context: ssl.SSLContext

    def answer(self, line: bytes) -> bytes:
        return line.upper()

    def setup(self) -> None:
        self.request = self.context.wrap_socket(self.request, server_side=True)
        super().setup()

    def handle(self) -> None:
        try:
            while line := self.rfile.readline():
                self.wfile.write(self.answer(line))
        except (ConnectionError, ssl.SSLError):
            pass


class TLSEcho(TLSAnswer):
    def answer(self, line: bytes) -> bytes:
        return line


class Garbage(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"THIS IS NOT TLS\n")


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128


@contextmanager
def serving(handler: type[Any]) -> Iterator[int]:
    files = tls_files()
    handler.context = server_context(str(files.certfile), str(files.keyfile))
    with Server(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            thread.join(5)


def load(binary: Path, port: int, mode: str, conns: int = 2, **extra: Any) -> LoadResult:
    return run_loadgen(binary, LoadSpec(mode, conns, **{**SHORT, **extra}), port)


def assert_negotiated(result: LoadResult) -> None:
    assert result.tls_version in ("TLSv1.2", "TLSv1.3"), result
    assert result.tls_cipher and result.tls_group and result.tls_library.startswith("OpenSSL")
    assert result.tls_resumed == 0 and result.tls_other_sessions == 0


@pytest.mark.parametrize("mode", ["tls-oneshot", "tls-pingpong"])
def test_tls_modes_against_the_c_reference(
    loadgen_tls: Path, refserver_tls: Path, tmp_path: Path, mode: str
) -> None:
    port = free_port("tls")
    command = BY_NAME["c-epoll"].command("tls", port)
    assert Path(command[0]).parent == refserver_tls.parent
    with running_server(command, cpu=None, log=tmp_path / "log") as process:
        wait_ready(process, "tls", port)  # the harness's probe, the certificate verified
        result = load(loadgen_tls, port, mode, conns=4, src_addrs=2 if "oneshot" in mode else 1)
    assert result.errors == 0, result.error_kinds
    assert result.requests > 0 and result.mode == mode
    assert_negotiated(result)
    if mode == "tls-oneshot":  # a handshake per request
        assert abs(result.tls_handshakes_measured - result.requests) <= 4
    else:  # one per connection, all before the measured window
        assert result.tls_handshakes == 4 and result.tls_handshakes_measured == 0


def test_tls_replies_are_checked(loadgen_tls: Path) -> None:
    with serving(TLSAnswer) as port:
        good = load(loadgen_tls, port, "tls-oneshot")
    with serving(TLSEcho) as port:
        echo = load(loadgen_tls, port, "tls-pingpong")
    assert good.errors == 0 and good.requests > 0, good.error_kinds
    assert_negotiated(good)
    assert echo.requests == 0 and echo.error_kinds["mismatch"] > 0


def test_a_server_that_speaks_no_tls_is_a_tls_error(loadgen_tls: Path) -> None:
    with Server(("127.0.0.1", 0), Garbage) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            result = load(loadgen_tls, server.server_address[1], "tls-oneshot", conns=1)
        finally:
            server.shutdown()
            thread.join(5)
    assert result.requests == 0
    assert result.error_kinds["tls"] > 0, result.error_kinds


def test_nothing_listening_is_a_connect_error(loadgen_tls: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        result = load(loadgen_tls, sock.getsockname()[1], "tls-oneshot", conns=1)
    assert result.requests == 0 and result.error_kinds["connect"] > 0


# ---------------------------------------------------------------- the preset


def test_the_preset_names_what_exists_and_fits_in_six_minutes() -> None:
    assert PRESETS["tls"] is TLS
    assert sorted(s.name for s in select_servers(TLS.servers)) == sorted(TLS.servers)
    assert {"portico-event", "portico-async", "asyncio-protocol", "asyncio-protocol-uvloop"} <= set(
        TLS.servers
    )
    assert {CELL[name].workload for name in TLS.cells} >= {"tls-oneshot", "tls-pingpong"}
    for name in TLS.cells:  # every server of the preset can serve every cell of it
        assert all(BY_NAME[s].not_applicable(CELL[name]) is None for s in TLS.servers), name
    assert not TLS.share_cpus  # pinned: the load generator's CPU shows whether it kept up
    timing = TLS.timing
    overhead = 0.5  # per cell: start (Python, a certificate), a TLS probe, drain, stop
    cells = timing.runs * len(TLS.cells) * len(TLS.servers)
    seconds = cells * (timing.duration + timing.warmup + overhead) + timing.quiet_budget
    # portico's event and threads engines without TCP_NODELAY answer the first line on a
    # connection about 40 ms late (docs/benchmarks.md): the tls-pingpong-64x256 setup
    # (connections opened and checked 4 at a time) takes about 3 s there.
    seconds += timing.runs * 2 * 256 / 4 * 0.045
    assert seconds < 6 * 60, seconds
    assert cli.default_out(timing, whole=True).name == "tls.jsonl"


def test_the_preset_end_to_end(tmp_path: Path, loadgen_tls: Path, refserver_tls: Path) -> None:
    out = tmp_path / "tls.jsonl"
    status = cli.main([
        "--preset", "tls",
        "--servers", "c-epoll", "portico-async", "asyncio-protocol",
        "--workloads", "tls-oneshot-16", "tls-pingpong-64x16", "pingpong-64x16",
        "--duration", "0.2", "--warmup", "0.05", "--runs", "1", "--quiet-wait", "0",
        "--out", str(out), "--logs", str(tmp_path / "logs"), "--no-plots",
    ])  # fmt: skip
    assert status == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    meta = records[0]
    assert meta["preset"] == "tls" and meta["tls"]["python_openssl"] == ssl.OPENSSL_VERSION
    assert meta["server_cpu"] == 0 or meta["server_cpu"] is None  # pinned where it can be
    assert len(records) == 1 + 3 * 3
    for record in records[1:]:
        assert record["status"] == "ok", record["reason"]
        assert record["errors"] == 0, record["error_kinds"]
        tls = record["cell"].startswith("tls-")
        assert (record["tls_version"] != "") == tls, record
        assert record["tls_resumed"] == 0
    report = out.with_suffix(".md").read_text()
    assert "## TLS" in report and "Negotiated in every TLS cell: **TLSv1.3" in report
    assert "| portico async ÷ asyncio Protocol (default loop) |" in report
    assert "tls-pingpong-64x16 ÷ pingpong-64x16" in report
    assert "### tls-oneshot-16: TLS handshakes, 16 in flight" in report


# ---------------------------------------------------------------- the report


def ran(server: str, cell: str, run: int, rps: float) -> CellResult:
    tls = cell.startswith("tls-")
    return CellResult(
        server, cell, cell.rsplit("-", 1)[0], run, "ok", rps=rps, p50_us=1.0, p99_us=2.0,
        errors=0, server_cpu=1.0, loadgen_cpu=0.5, other_cpu=0.0,
        tls_version="TLSv1.3" if tls else "", tls_cipher="TLS_AES_256_GCM_SHA384" if tls else "",
        tls_group="X25519" if tls else "", tls_handshakes=int(rps) if tls else 0,
        tls_library="OpenSSL 3.0.19" if tls else "",
    )  # fmt: skip


RECORDS = [
    ran(server, cell, run, rps * scale)
    for run, scale in ((1, 1.0), (2, 0.5))
    for server, plain, tls in (
        ("c-epoll", 30_000, 3_000),
        ("portico-async", 20_000, 2_000),
        ("asyncio-protocol", 18_000, 2_500),
        ("asyncio-protocol-uvloop", 32_000, 3_200),
    )
    for cell, rps in (("oneshot-16", plain), ("tls-oneshot-16", tls))
]
META = {
    "preset": "tls",
    "server_cpu": 0,
    "loadgen_cpu": 1,
    "cells": [
        {"name": "tls-oneshot-16", "workload": "tls-oneshot", "label": "TLS handshakes"},
        {"name": "oneshot-16", "workload": "oneshot", "label": "16 in flight"},
    ],
    "tls": {"certificate": "ECDSA P-256", "python_openssl": "OpenSSL 3.0.19"},
}


def test_tls_report_section() -> None:
    text = render_markdown(META, summarize(RECORDS), RECORDS)
    section = text[text.index("## TLS") : text.index("## Every cell")]
    assert "Negotiated in every TLS cell: **TLSv1.3, TLS_AES_256_GCM_SHA384, X25519**" in section
    assert "(load generator: OpenSSL 3.0.19); 16,050 handshakes" in section
    assert "0 resumed sessions" in section
    lines = section.splitlines()
    header = next(line for line in lines if line.startswith("| requests/s |"))
    assert header == "| requests/s | tls-oneshot-16 | oneshot-16 |"
    row = next(line for line in lines if line.startswith("| portico async ÷ asyncio Protocol (uv"))
    assert row.endswith("| 0.62x | 0.62x |")  # 2,000 / 3,200 and 20,000 / 32,000, both runs
    twin = next(line for line in lines if line.startswith("| portico async |"))
    assert twin == "| portico async | 0.10x |"  # TLS ÷ plaintext
    cpu = next(line for line in lines if line.startswith("| C epoll reference |") and "µs" in line)
    assert cpu == "| C epoll reference | 444 / 222 µs (1.00 / 0.50) |"  # 1 CPU / 2,250 req/s
    assert "TLS handshakes/s, 16 in flight" in text  # in the summary
    assert "ECDSA P-256" in text and "--tcp-nodelay" in text  # the notes


def test_tls_ratios_are_paired_by_run() -> None:
    assert paired_cell_ratio(RECORDS, "portico-async", "tls-oneshot-16", "oneshot-16") == 0.1
    assert paired_cell_ratio(RECORDS, "nope", "tls-oneshot-16", "oneshot-16") is None


def test_a_plot_holds_a_workload_and_its_tls_twin() -> None:
    layout = Layout.of(META, summarize(RECORDS))
    assert layout.plot_groups() == {"oneshot": ["tls-oneshot-16", "oneshot-16"]}


def test_tls_stream_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import tls_stream  # noqa: PLC0415

    assert tls_stream.main(["--requests", "50", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "portico TLSStream" in out and "ssl.SSLSocket" in out and "TLS adds" in out
