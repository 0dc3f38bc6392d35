"""The workloads, each measured in one or more cells, and how long to measure them.

A cell is one workload at one message size and concurrency, e.g.
``pingpong-64x256``: 256 persistent connections, one 64-byte line in flight on
each.  Every request is a line (a datagram for ``udp``) and every reply must be
that line upper-cased, byte for byte.

``bulk`` streams 256 MiB over one connection as 16 KiB lines, and every line
comes back upper-cased and is checked (rather than just counted): the server
does the same job as in the other workloads, and the figure covers both
directions.  At most 1 MiB is unanswered at a time.

The TLS cells (:data:`TLS_CELLS`, transport ``tls``) are not part of issue 3's
matrix (:data:`CELLS`, what runs without ``--workloads``): they are named, or
run by ``--preset tls``.  ``tls-oneshot`` is ``oneshot`` over TLS, one full
handshake per connection (handshakes per second); ``tls-pingpong`` is
``pingpong`` over persistent TLS connections.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bench.throughput.loadgen import LoadSpec
from bench.throughput.procs import Transport

__all__ = [
    "ALL_CELLS",
    "CELLS",
    "FULL",
    "QUICK",
    "TLS_CELLS",
    "WORKLOADS",
    "Cell",
    "Timing",
    "select_cells",
]

KIB = 1024
MIB = 1024 * KIB
IDLE_CONNECTIONS = 10_000
# Short connections rotate over this many loopback source addresses, each with
# its own ephemeral ports, so that TIME_WAIT never runs a run out of ports.
ONESHOT_SOURCES = 8
UDP_TIMEOUT = 1.0  # a datagram unanswered this long counts as lost


@dataclass(frozen=True)
class Timing:
    """How long each cell runs, and how many times."""

    name: str
    duration: float  # measured seconds per cell
    warmup: float  # seconds of load before measuring
    runs: int  # runs per cell; the report shows the medians
    timeout: float = 5.0  # a request unanswered this long is an error
    bulk_cap: float = 30.0  # the bulk transfer's time bound
    setup_timeout: float = 60.0  # to open the connections (10,000 for idle)
    quiet_wait: float = 10.0  # at most this long before a cell, wait for others' load to pass
    quiet_budget: float = 300.0  # ... and at most this long over the whole run

    @property
    def max_requests(self) -> int:
        """The hard cap on requests per run: far above what this machine does."""
        return int(1_000_000 * (self.duration + self.warmup + 1))


QUICK = Timing("quick", duration=1.0, warmup=0.25, runs=1, quiet_budget=60.0)
FULL = Timing("full", duration=2.0, warmup=0.5, runs=3)


@dataclass(frozen=True)
class Cell:
    """One workload at one size and concurrency."""

    name: str
    workload: str
    label: str
    transport: Transport  # tls: TCP with TLS on every connection
    mode: str  # oneshot, pingpong, udp, bulk (over TLS too: the load generator's tls-MODE)
    conns: int
    size: int = 64
    idle: int = 0
    bulk_bytes: int = 0

    @property
    def simultaneous_connections(self) -> int:
        """How many connections the server must serve at once (0: datagrams).

        One-shot connections beyond the first wait in the listen backlog, so a
        serial server can take them, one at a time.
        """
        if self.transport == "udp":
            return 0
        return self.conns + self.idle if self.mode == "pingpong" else 1

    def load(self, timing: Timing) -> LoadSpec:
        """What the load generator runs for this cell."""
        bulk = self.mode == "bulk"
        return LoadSpec(
            mode=f"tls-{self.mode}" if self.transport == "tls" else self.mode,
            conns=self.conns,
            size=self.size,
            duration=timing.bulk_cap if bulk else timing.duration,
            warmup=0.0 if bulk else timing.warmup,
            timeout=UDP_TIMEOUT if self.transport == "udp" else timing.timeout,
            idle=self.idle,
            bulk_bytes=self.bulk_bytes,
            src_addrs=ONESHOT_SOURCES if self.mode == "oneshot" else 1,
            max_requests=timing.max_requests,
            setup_timeout=timing.setup_timeout,
        )


def _pingpong(conns: int, size: int = 64) -> Cell:
    size_label = f"{size // KIB} KiB" if size >= KIB else f"{size} B"
    name = f"pingpong-{size // KIB}kx{conns}" if size >= KIB else f"pingpong-{size}x{conns}"
    plural = "s" if conns > 1 else ""
    return Cell(
        name,
        "pingpong",
        f"{size_label}, {conns:,} conn{plural}",
        "tcp",
        "pingpong",
        conns,
        size=size,
    )


CELLS: tuple[Cell, ...] = (
    Cell("oneshot-1", "oneshot", "1 in flight", "tcp", "oneshot", 1),
    Cell("oneshot-16", "oneshot", "16 in flight", "tcp", "oneshot", 16),
    Cell("oneshot-64", "oneshot", "64 in flight", "tcp", "oneshot", 64),
    _pingpong(1),
    _pingpong(16),
    _pingpong(256),
    _pingpong(1024),
    _pingpong(16, size=16 * KIB),
    Cell(
        "idle-10k", "idle", "10,000 idle + 16 active", "tcp", "pingpong", 16, idle=IDLE_CONNECTIONS
    ),
    Cell("udp-64x16", "udp", "64 B, 16 in flight", "udp", "udp", 16),
    Cell(
        "bulk-256m",
        "bulk",
        "256 MiB in 16 KiB lines",
        "tcp",
        "bulk",
        1,
        size=16 * KIB,
        bulk_bytes=256 * MIB,
    ),
)
# TLS: a full handshake per connection, and persistent TLS connections.  Not in the
# matrix above: run by name, or by --preset tls.
TLS_CELLS: tuple[Cell, ...] = (
    Cell("tls-oneshot-1", "tls-oneshot", "TLS handshakes, 1 in flight", "tls", "oneshot", 1),
    Cell("tls-oneshot-16", "tls-oneshot", "TLS handshakes, 16 in flight", "tls", "oneshot", 16),
    Cell("tls-pingpong-64x16", "tls-pingpong", "64 B over TLS, 16 conns", "tls", "pingpong", 16),
    Cell("tls-pingpong-64x256", "tls-pingpong", "64 B over TLS, 256 conns", "tls", "pingpong", 256),
)
ALL_CELLS: tuple[Cell, ...] = CELLS + TLS_CELLS
WORKLOADS: tuple[str, ...] = tuple(dict.fromkeys(cell.workload for cell in ALL_CELLS))


def select_cells(names: Iterable[str] | None) -> list[Cell]:
    """The cells named, by workload (``pingpong``) or by cell (``pingpong-64x256``).

    Without names, issue 3's matrix (:data:`CELLS`); names may also pick the TLS cells.
    """
    if not names:
        return list(CELLS)
    wanted = set(names)
    unknown = wanted - set(WORKLOADS) - {cell.name for cell in ALL_CELLS}
    if unknown:
        known = ", ".join([*WORKLOADS, *(cell.name for cell in ALL_CELLS)])
        raise ValueError(f"unknown workload {', '.join(sorted(unknown))}: choose from {known}")
    return [cell for cell in ALL_CELLS if cell.name in wanted or cell.workload in wanted]
