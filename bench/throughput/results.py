"""Result records, one JSON object per line, and their medians over runs.

A results file starts with one ``{"type": "meta", ...}`` line (command,
machine, timing) followed by one ``{"type": "cell", ...}`` line per cell per
run, written as each cell finishes so an interrupted run keeps what it did.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any

from bench.throughput.loadgen import LoadResult

__all__ = ["CellResult", "ResultsWriter", "Summary", "read_results", "summarize"]

OK, NOT_APPLICABLE, FAILED = "ok", "n/a", "failed"


@dataclass(frozen=True)
class CellResult:
    """One cell, one server, one run."""

    server: str
    cell: str
    workload: str
    run: int
    status: str  # ok, n/a, failed
    reason: str = ""  # why n/a or failed
    rps: float | None = None  # requests (lines, datagrams) per second
    mib_s: float | None = None  # reply bytes per second, in MiB
    p50_us: float | None = None
    p99_us: float | None = None
    p999_us: float | None = None
    errors: int | None = None  # every kind; zero is the only good figure
    error_kinds: Mapping[str, int] = field(default_factory=dict)
    requests: int | None = None  # measured (after warm-up)
    elapsed_s: float | None = None
    rss_start_kib: int | None = None  # once ready, before the load
    rss_peak_kib: int | None = None  # VmHWM; forking servers: max sampled tree PSS if higher
    idle_established: int | None = None
    idle_held: int | None = None  # still open at the end of the measured window
    idle_kib_per_conn: float | None = None  # (RSS with idle - RSS before) / idle held
    loadgen_cpu: float | None = None  # CPU seconds per second over the window
    server_cpu: float | None = None  # same, the server's main process (all threads)
    other_cpu: float | None = None  # same, everything else on the machine (noise)
    steal_cpu: float | None = None  # same, taken by the hypervisor
    quiet_wait_s: float | None = None  # how long the harness waited for a quiet machine
    capped: bool = False  # the hard request cap ended the window early
    late: int = 0  # UDP answers that came after their timeout (not errors)
    abandoned: int = 0  # requests still in flight when the drain ended (not errors)
    # TLS cells: what the load generator negotiated (its first handshake), and counts
    tls_version: str = ""
    tls_cipher: str = ""
    tls_group: str = ""
    tls_handshakes: int = 0  # in the measured window
    tls_resumed: int = 0  # of every handshake of the run (0: all were full handshakes)
    tls_other_sessions: int = 0  # handshakes whose version or cipher differed from the first's
    tls_library: str = ""  # the load generator's OpenSSL

    @property
    def tls_session(self) -> str:
        """``TLSv1.3, TLS_AES_256_GCM_SHA384, X25519``; empty without TLS."""
        return ", ".join(p for p in (self.tls_version, self.tls_cipher, self.tls_group) if p)

    @classmethod
    def skipped(cls, server: str, cell: str, workload: str, run: int, reason: str) -> CellResult:
        return cls(server, cell, workload, run, NOT_APPLICABLE, reason)

    @classmethod
    def failed(cls, server: str, cell: str, workload: str, run: int, reason: str) -> CellResult:
        return cls(server, cell, workload, run, FAILED, reason)

    @classmethod
    def measured(
        cls,
        server: str,
        cell: str,
        workload: str,
        run: int,
        load: LoadResult,
        memory: Mapping[str, int | None],
    ) -> CellResult:
        """A cell that ran: the load generator's figures and the server's memory."""
        return cls(
            server,
            cell,
            workload,
            run,
            OK,
            rps=load.rps,
            mib_s=load.mib_s,
            p50_us=load.p50_us,
            p99_us=load.p99_us,
            p999_us=load.p999_us,
            errors=load.errors,
            error_kinds=dict(load.error_kinds),
            requests=load.requests,
            elapsed_s=load.elapsed_s,
            rss_start_kib=memory.get("start"),
            rss_peak_kib=memory.get("peak"),
            idle_established=load.idle_established if load.idle else None,
            idle_held=load.idle_held if load.idle else None,
            idle_kib_per_conn=idle_kib_per_conn(load),
            loadgen_cpu=load.loadgen_cpu,
            server_cpu=load.server_cpu if load.server_cpu >= 0 else None,
            other_cpu=other_cpu(load),
            steal_cpu=load.steal_cpu if load.steal_cpu >= 0 else None,
            capped=load.capped,
            late=load.late,
            abandoned=load.abandoned,
            tls_version=load.tls_version,
            tls_cipher=load.tls_cipher,
            tls_group=load.tls_group,
            tls_handshakes=load.tls_handshakes_measured,
            tls_resumed=load.tls_resumed,
            tls_other_sessions=load.tls_other_sessions,
            tls_library=load.tls_library,
        )

    def to_json(self) -> str:
        return json.dumps({"type": "cell", **asdict(self)})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellResult:
        known = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})


def other_cpu(load: LoadResult) -> float | None:
    """The CPU that neither the server nor the load generator used, over the window."""
    if load.machine_cpu < 0:
        return None
    return max(0.0, load.machine_cpu - load.loadgen_cpu - max(0.0, load.server_cpu))


def idle_kib_per_conn(load: LoadResult) -> float | None:
    """Server memory per idle connection: the RSS it grew by, over the connections held."""
    if load.idle_established <= 0 or load.rss_before_idle_kib < 0 or load.rss_idle_kib < 0:
        return None
    return (load.rss_idle_kib - load.rss_before_idle_kib) / load.idle_established


class ResultsWriter:
    """Write a results file: the meta line now, then each result as it comes."""

    def __init__(self, path: Path, meta: Mapping[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[str] = path.open("w", encoding="utf-8")
        self._write(json.dumps({"type": "meta", **meta}))

    def write(self, result: CellResult) -> None:
        self._write(result.to_json())

    def _write(self, line: str) -> None:
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_results(path: Path) -> tuple[dict[str, Any], list[CellResult]]:
    """The meta record (empty if none) and the cell records of a results file."""
    meta: dict[str, Any] = {}
    results: list[CellResult] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
        if record.get("type") == "meta":
            meta = record
        elif record.get("type") == "cell":
            results.append(CellResult.from_dict(record))
    return meta, results


@dataclass(frozen=True)
class Summary:
    """One cell and server over every run: medians of the runs that ran, errors summed."""

    server: str
    cell: str
    workload: str
    status: str
    reason: str = ""
    runs: int = 0
    rps: float | None = None
    mib_s: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    errors: int = 0
    error_kinds: Mapping[str, int] = field(default_factory=dict)
    abandoned: int = 0  # summed: requests unfinished when the drains ended
    rss_peak_kib: float | None = None
    idle_established: float | None = None
    idle_held: float | None = None
    idle_kib_per_conn: float | None = None
    loadgen_cpu: float | None = None
    server_cpu: float | None = None
    other_cpu: float | None = None
    # TLS cells: the sessions negotiated (distinct ones, "; "-separated), counts summed
    tls_session: str = ""
    tls_handshakes: int = 0
    tls_resumed: int = 0
    tls_other_sessions: int = 0
    tls_library: str = ""


_MEDIANS = (
    "rps",
    "mib_s",
    "p50_us",
    "p99_us",
    "rss_peak_kib",
    "idle_established",
    "idle_held",
    "idle_kib_per_conn",
    "loadgen_cpu",
    "server_cpu",
    "other_cpu",
)


def summarize(results: Iterable[CellResult]) -> dict[tuple[str, str], Summary]:
    """The summary of each (server, cell) pair, in order of first appearance."""
    groups: dict[tuple[str, str], list[CellResult]] = {}
    for result in results:
        groups.setdefault((result.server, result.cell), []).append(result)
    return {key: _summary(group) for key, group in groups.items()}


def _summary(group: list[CellResult]) -> Summary:
    first = group[0]
    ran = [r for r in group if r.status == OK]
    if not ran:
        return Summary(first.server, first.cell, first.workload, first.status, first.reason)
    failed = [r for r in group if r.status == FAILED]
    reason = f"{len(failed)} of {len(group)} runs failed: {failed[0].reason}" if failed else ""
    medians = {name: _median(getattr(r, name) for r in ran) for name in _MEDIANS}
    errors = sum(r.errors or 0 for r in ran)
    kinds = _sum_kinds(r.error_kinds for r in ran)
    abandoned = sum(r.abandoned for r in ran)
    return Summary(
        first.server,
        first.cell,
        first.workload,
        OK,
        reason,
        len(ran),
        errors=errors,
        error_kinds=kinds,
        abandoned=abandoned,
        tls_session="; ".join(dict.fromkeys(r.tls_session for r in ran if r.tls_session)),
        tls_handshakes=sum(r.tls_handshakes for r in ran),
        tls_resumed=sum(r.tls_resumed for r in ran),
        tls_other_sessions=sum(r.tls_other_sessions for r in ran),
        tls_library="; ".join(dict.fromkeys(r.tls_library for r in ran if r.tls_library)),
        **medians,
    )


def _sum_kinds(all_kinds: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for kinds in all_kinds:
        for kind, count in kinds.items():
            if count:
                total[kind] = total.get(kind, 0) + count
    return total


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None
