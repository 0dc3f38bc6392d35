"""The server table and the cells: which server runs which cell, and selecting them by name."""

from __future__ import annotations

import pytest
from bench.throughput import servers as servers_module
from bench.throughput.servers import SERVERS, portico, select_servers
from bench.throughput.workloads import CELLS, FULL, QUICK, select_cells

pytestmark = pytest.mark.timeout(10)

BY_NAME = {server.name: server for server in SERVERS}
CELL = {cell.name: cell for cell in CELLS}


def test_names_are_unique() -> None:
    assert len(BY_NAME) == len(SERVERS)
    assert len(CELL) == len(CELLS)


def test_the_issue_matrix_is_registered() -> None:
    expected = {"c-epoll", "portico-serial", "portico-threads", "portico-fork", "stdlib-serial",
                "stdlib-threads", "stdlib-fork", "asyncio-streams", "asyncio-streams-uvloop",
                "asyncio-protocol", "asyncio-protocol-uvloop", "gevent"}  # fmt: skip
    assert expected <= set(BY_NAME)
    assert {"oneshot", "pingpong", "idle", "udp", "bulk"} == {cell.workload for cell in CELLS}


@pytest.mark.parametrize(
    ("server", "cell", "runs"),
    [
        ("stdlib-serial", "oneshot-64", True),  # the others wait in the backlog
        ("stdlib-serial", "pingpong-64x1", True),
        ("stdlib-serial", "pingpong-64x16", False),
        ("stdlib-serial", "bulk-256m", True),
        ("stdlib-serial", "udp-64x16", True),
        ("portico-fork", "pingpong-64x16", True),
        ("portico-fork", "pingpong-64x256", False),
        ("portico-fork", "idle-10k", False),
        ("portico-threads", "pingpong-64x1024", True),
        ("portico-threads", "idle-10k", True),
        ("asyncio-streams", "udp-64x16", False),
        ("asyncio-protocol", "udp-64x16", True),
        ("c-epoll", "idle-10k", True),
    ],
)
def test_applicability(server: str, cell: str, runs: bool) -> None:
    reason = BY_NAME[server].not_applicable(CELL[cell])
    assert (reason is None) == runs, reason


def test_select_servers_by_name_or_family() -> None:
    names = [s.name for s in select_servers(["c-epoll", "stdlib"])]
    assert names == ["c-epoll", "stdlib-serial", "stdlib-threads", "stdlib-fork"]
    assert select_servers(None) == list(SERVERS)
    with pytest.raises(ValueError, match="unknown server nope"):
        select_servers(["nope"])


def test_select_cells_by_workload_or_cell() -> None:
    names = [c.name for c in select_cells(["udp", "pingpong-64x256"])]
    assert names == ["pingpong-64x256", "udp-64x16"]
    with pytest.raises(ValueError, match="unknown workload"):
        select_cells(["flood"])


def test_a_future_engine_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = portico("pool", options=("--max-workers", "8"))
    monkeypatch.setattr(servers_module, "cli_has_engines", lambda: False)
    assert "has no --engine pool" in (pool.unavailable() or "")
    assert "socketserver_upper" in " ".join(portico("threads").command("tcp", 1234))

    monkeypatch.setattr(servers_module, "cli_has_engines", lambda: True)
    command = pool.command("udp", 1234)
    assert command[command.index("serve") :][:5] == [
        "serve",
        "--engine",
        "pool",
        "--max-workers",
        "8",
    ]
    assert "127.0.0.1:1234" in command and "--udp" in command
    assert "portico has no engine 'warp'" in (portico("warp").unavailable() or "")


def test_quick_is_shorter_than_full() -> None:
    assert QUICK.duration < FULL.duration and QUICK.runs <= FULL.runs
    spec = CELL["bulk-256m"].load(QUICK)
    assert spec.mode == "bulk" and spec.bulk_bytes == 256 << 20 and spec.warmup == 0
    assert CELL["idle-10k"].load(QUICK).idle == 10_000
