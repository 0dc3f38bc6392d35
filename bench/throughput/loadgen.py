"""The C load generator (``bench/c/loadgen.c``): its command line and its result.

:class:`LoadSpec` says what to run; :func:`run_loadgen` runs it pinned to a CPU,
bounded in time, and parses the one JSON object it prints into a
:class:`LoadResult`.  Every reply is checked byte for byte by the C program;
a wrong byte counts as a ``mismatch`` error.  The ``tls-*`` modes need the
load generator built with TLS (``build("loadgen-tls")``); their result says
which TLS version, cipher and key exchange group were negotiated.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from bench.throughput.procs import pin_current_process

__all__ = ["LoadResult", "LoadSpec", "LoadgenFailed", "parse_result", "run_loadgen"]

MODES = ("oneshot", "pingpong", "udp", "bulk", "tls-oneshot", "tls-pingpong")
SAMPLE_INTERVAL = 0.25
EXIT_GRACE = 10.0  # beyond the run's own bound, before the harness kills it


class LoadgenFailed(RuntimeError):
    """The load generator crashed, overran its time bound, or printed no valid result."""


@dataclass(frozen=True)
class LoadSpec:
    """One run of the load generator."""

    mode: str
    conns: int
    size: int = 64
    duration: float = 2.0
    warmup: float = 0.5
    timeout: float = 5.0
    idle: int = 0
    bulk_bytes: int = 0
    src_addrs: int = 1
    max_requests: int = 50_000_000
    setup_timeout: float = 60.0
    drain: float = 2.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}: one of {', '.join(MODES)}")

    @property
    def tls(self) -> bool:
        """Over TLS: needs the load generator built with TLS (``loadgen-tls``)."""
        return self.mode.startswith("tls-")

    def argv(
        self, binary: Path, port: int, server_pid: int | None = None, *, server_tree: bool = False
    ) -> list[str]:
        args = [str(binary), "--port", str(port), "--mode", self.mode, "--conns", str(self.conns)]
        args += ["--size", str(self.size), "--duration", f"{self.duration:g}"]
        args += ["--warmup", f"{self.warmup:g}", "--timeout", f"{self.timeout:g}"]
        args += ["--setup-timeout", f"{self.setup_timeout:g}", "--drain", f"{self.drain:g}"]
        args += ["--max-requests", str(self.max_requests), "--src-addrs", str(self.src_addrs)]
        if self.idle:
            args += ["--idle", str(self.idle)]
        if self.bulk_bytes:
            args += ["--bulk-bytes", str(self.bulk_bytes)]
        if server_pid is not None:
            args += ["--server-pid", str(server_pid), *(["--server-tree"] if server_tree else [])]
        return args

    @property
    def time_bound(self) -> float:
        """The longest the run may take: setup, warm-up, measure, drain."""
        return self.setup_timeout + self.warmup + self.duration + self.drain


@dataclass(frozen=True)
class LoadResult:
    """What the load generator measured over its measured window."""

    mode: str
    conns: int
    size: int
    requests: int
    elapsed_s: float
    rps: float
    mib_s: float
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float
    mean_us: float
    errors: int
    error_kinds: Mapping[str, int] = field(default_factory=dict)
    idle: int = 0
    late: int = 0
    abandoned: int = 0
    completed_total: int = 0
    capped: bool = False
    bulk_done: bool = False
    idle_established: int = 0  # idle connections opened and checked during setup
    idle_held: int = 0  # ... and still open when the measured window ended
    rss_before_idle_kib: int = -1
    rss_idle_kib: int = -1
    loadgen_cpu: float = 0.0
    server_cpu: float = -1.0
    machine_cpu: float = -1.0  # every CPU's busy time over the window, in CPUs
    steal_cpu: float = -1.0  # time the hypervisor took, in CPUs
    # TLS modes: what the first handshake negotiated, and how many there were
    tls_version: str = ""  # TLSv1.3
    tls_cipher: str = ""  # TLS_AES_256_GCM_SHA384
    tls_group: str = ""  # the key exchange group: X25519
    tls_handshakes: int = 0  # completed, warm-up included
    tls_handshakes_measured: int = 0  # completed in the measured window
    tls_resumed: int = 0  # of them, resumed sessions: 0, every handshake is a full one
    tls_other_sessions: int = 0  # handshakes whose version or cipher differed from the first's
    tls_library: str = ""  # the load generator's OpenSSL


_REQUIRED = {f.name for f in fields(LoadResult) if f.default is f.default_factory is MISSING}
_TYPES: dict[str, type] = {
    "mode": str,
    "error_kinds": dict,
    "capped": bool,
    "bulk_done": bool,
    "conns": int,
    "size": int,
    "requests": int,
    "errors": int,
    "idle": int,
    "late": int,
    "abandoned": int,
    "completed_total": int,
    "idle_established": int,
    "idle_held": int,
    "rss_before_idle_kib": int,
    "rss_idle_kib": int,
    "tls_version": str,
    "tls_cipher": str,
    "tls_group": str,
    "tls_handshakes": int,
    "tls_handshakes_measured": int,
    "tls_resumed": int,
    "tls_other_sessions": int,
    "tls_library": str,
}


def parse_result(text: str) -> LoadResult:
    """The load generator's result from its output (the last line holding a JSON object)."""
    lines = [line for line in text.splitlines() if line.strip().startswith("{")]
    if not lines:
        raise LoadgenFailed(f"no result in the load generator's output: {text[-500:]!r}")
    try:
        data = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise LoadgenFailed(f"unreadable result {lines[-1]!r}: {exc}") from exc
    return _result_from(data)


def _result_from(data: Any) -> LoadResult:
    if not isinstance(data, dict):
        raise LoadgenFailed(f"the result is not a JSON object: {data!r}")
    missing = sorted(_REQUIRED - data.keys())
    if missing:
        raise LoadgenFailed(f"the result lacks {', '.join(missing)}")
    known = {f.name for f in fields(LoadResult)}
    values = {name: _checked(name, value) for name, value in data.items() if name in known}
    return LoadResult(**values)


def _checked(name: str, value: Any) -> Any:
    expected = _TYPES.get(name, float)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise LoadgenFailed(f"the result's {name} is {value!r}, not a {expected.__name__}")
    return value


def run_loadgen(
    binary: Path,
    spec: LoadSpec,
    port: int,
    *,
    server_pid: int | None = None,
    server_tree: bool = False,
    cpu: int | None = None,
    sample: Callable[[], None] | None = None,
) -> LoadResult:
    """Run one load, calling ``sample()`` every quarter second while it runs."""
    argv = spec.argv(binary, port, server_pid, server_tree=server_tree)
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=None if cpu is None else (lambda: pin_current_process(cpu)),  # noqa: PLW1509
    ) as proc:
        _wait(proc, spec.time_bound + EXIT_GRACE, sample)
        stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise LoadgenFailed(f"exit status {proc.returncode}: {stderr.decode(errors='replace')}")
    return parse_result(stdout.decode(errors="replace"))


def _wait(proc: subprocess.Popen[bytes], bound: float, sample: Callable[[], None] | None) -> None:
    # The output is small (one line, a few diagnostics), so the pipes cannot fill up.
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(SAMPLE_INTERVAL)
            return
        if sample is not None:
            sample()
    proc.kill()
    proc.wait()
    raise LoadgenFailed(f"the load generator ran past its bound of {bound:g} s and was killed")
