"""The attack suite: hostile clients against real ``portico serve`` processes, per engine.

Fixtures: ``engine`` (each engine the attacks apply to; skipped when not
installed), ``attack_server`` (starts ``portico serve`` and kills what it
started at teardown), ``enough_descriptors`` (raises this process's soft
RLIMIT_NOFILE for floods).

Each test ends with ``AttackServer.finish()``, which records the server's
peak memory: as a ``record_property`` ("attack_memory", also in JUnit XML),
as one JSON line in ``attack-memory.jsonl`` in pytest's base temporary
directory (one file per xdist worker), and in a one-line-per-test summary at
the end of the run (printed when this directory's conftest is loaded by the
process that reports, as it is with ``pytest tests/attacks``).
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from attack_support import AttackServer, write_record

from portico.engines import available_engines

if not sys.platform.startswith("linux"):
    collect_ignore_glob = ["test_*.py"]  # reads /proc (memory, CPU time, children)

ENGINES = ("threads", "pool", "fork", "event", "async")
MEMORY_PROPERTY = "attack_memory"
StartServer = Callable[..., AttackServer]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name not in available_engines():
        pytest.skip(f"engine {name} is not installed (portico[fast])")
    return name


@pytest.fixture
def attack_server(
    request: pytest.FixtureRequest,
    record_property: Callable[[str, object], None],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StartServer]:
    """Start ``portico serve HANDLER --engine ENGINE --bind 127.0.0.1:0 *flags``.

    Returns once it logs its address; keywords ``handler``, ``nofile`` (its
    RLIMIT_NOFILE) and ``pythonpath`` go to :class:`AttackServer`.
    """
    started: list[AttackServer] = []
    records = tmp_path_factory.getbasetemp() / "attack-memory.jsonl"

    def record(figures: dict[str, Any]) -> None:
        figures = {"test": request.node.nodeid, **figures}
        write_record(records, figures)
        record_property(MEMORY_PROPERTY, {**figures, "jsonl": str(records)})

    def start(engine: str, *flags: str, **options: Any) -> AttackServer:
        server = AttackServer(engine, flags, record=record, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def enough_descriptors() -> Iterator[Callable[[int], None]]:
    """``need(n)`` raises this process's soft RLIMIT_NOFILE to ``n`` (never above the hard
    limit: skips if that is lower); restored at teardown."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def need(count: int) -> None:
        if soft == resource.RLIM_INFINITY or soft >= count:
            return
        if hard != resource.RLIM_INFINITY and hard < count:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {count} this test needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))

    try:
        yield need
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per attack test with its server's peak memory, and where the JSON lines are."""
    records: list[dict[str, Any]] = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            properties = getattr(report, "user_properties", ())
            records.extend(value for name, value in properties if name == MEMORY_PROPERTY)
    if not records:
        return
    terminalreporter.write_sep("-", "attack suite: peak memory (VmHWM) of each server")
    for record in sorted(records, key=lambda r: r["test"]):
        children = record.get("children_vmhwm_kib_max")
        extra = ""
        if children is not None:
            extra = (
                f", largest child {children / 1024:.1f} MiB "
                f"({record['children_sampled']} children sampled)"
            )
        terminalreporter.write_line(
            f"{record['test']}: server {record['server_vmhwm_kib'] / 1024:.1f} MiB{extra} "
            f"(bound {record['bound_kib'] / 1024:.0f} MiB)"
        )
    for path in sorted({record["jsonl"] for record in records}):
        terminalreporter.write_line(f"figures: {Path(path)}")
