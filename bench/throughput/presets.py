"""Named runs: a set of servers and cells, with their timing and CPU placement, in one command.

``python -m bench.throughput --preset prefork`` runs portico's prefork
supervisor at 1 and 2 workers side by side with one portico process of the
same engine and the C reference server, on the one-line connection
(``oneshot``) and persistent 64-byte lines (``pingpong``), into
``results/prefork.{jsonl,md}`` and ``results/prefork-WORKLOAD.png``.

Nothing is pinned in it: a prefork server's workers must be able to run on
different CPUs, so every server (one process or a master and its workers) and
the load generator share every CPU, and the scheduler places them.  The other
servers of the run are placed the same way, so that the figures compare.

``python -m bench.throughput --preset tls`` runs portico's TLS (the ``threads``,
``event`` and ``async`` engines, and ``event`` with ``--tcp-nodelay``) beside
asyncio's ``Protocol`` with ``ssl=`` on the default loop and on uvloop, and the
C reference built with OpenSSL, on full
TLS handshakes (``tls-oneshot-16``) and persistent TLS connections
(``tls-pingpong-64x16``, ``-64x256``), with the same cells in plaintext
(``oneshot-16``, ``pingpong-64x256``) to show what TLS costs each server, into
``results/tls.{jsonl,md}`` and ``results/tls-WORKLOAD.png``.  Pinned as the
matrix is: each server on CPU 0, the load generator on CPU 1, so that the load
generator's own CPU use shows whether it kept up.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.throughput.workloads import Timing

__all__ = ["PREFORK", "PRESETS", "TLS", "Preset"]


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    servers: tuple[str, ...]  # names for --servers, in the order of the report's rows
    cells: tuple[str, ...]  # names for --workloads
    timing: Timing  # its name names the results file
    share_cpus: bool  # pin nothing: the servers and the load generator share every CPU


PREFORK = Preset(
    "prefork",
    "portico's prefork supervisor at 1 and 2 workers against one process of the same engine "
    "and the C reference, on oneshot and pingpong, nothing pinned (~4-5 min on 2 CPUs)",
    servers=(
        "c-epoll",
        "portico-event",
        "portico-event-w1",
        "portico-event-w2",
        "portico-event-w2-reuseport",
    ),
    # 16 and 64 one-line connections in flight; 16 and 256 persistent ones.  16 gives each
    # of 2 workers 8 connections to serve, 64 and 256 keep both busy even when the kernel
    # hands them out unevenly (a shared accept queue wakes whichever worker waits).
    cells=("oneshot-16", "oneshot-64", "pingpong-64x16", "pingpong-64x256"),
    # Five short runs rather than three long ones: the ratios are paired within each run,
    # and the median of five shrugs off a slow spell of the host better.  About 4 min on a quiet
    # machine, and at most 75 s more waiting for a busy one to quieten.
    timing=Timing("prefork", duration=1.5, warmup=0.5, runs=5, quiet_wait=10.0, quiet_budget=75.0),
    share_cpus=True,
)
TLS = Preset(
    "tls",
    "TLS handshakes/s and persistent TLS throughput: portico (threads, event, event with "
    "--tcp-nodelay, async) beside "
    "asyncio Protocol with ssl= (default loop, uvloop) and the C reference with OpenSSL, "
    "with plaintext twins, pinned (~5 min on 2 CPUs)",
    servers=(
        "c-epoll",
        "portico-threads",
        "portico-event",
        # The event engine with TCP_NODELAY: portico's default leaves Nagle on, and a TLS
        # server's first reply then waits for the client's delayed ACK (docs/benchmarks.md).
        "portico-event-nodelay",
        "portico-async",
        "asyncio-protocol",
        "asyncio-protocol-uvloop",
    ),
    cells=(
        "tls-oneshot-16",
        "tls-pingpong-64x16",
        "tls-pingpong-64x256",
        "oneshot-16",
        "pingpong-64x256",
    ),
    # Four short runs: 140 cells of about 1.9 s (a Python server starts, loads its
    # certificate and answers a TLS probe in about 0.45 s), about 5 min on a quiet
    # machine, and at most 60 s more waiting for a busy one to quieten.
    timing=Timing("tls", duration=1.0, warmup=0.4, runs=4, quiet_wait=10.0, quiet_budget=60.0),
    share_cpus=False,
)
PRESETS: dict[str, Preset] = {preset.name: preset for preset in (PREFORK, TLS)}
