"""The machine: what it is (for the results' meta record) and how busy others keep it.

On a shared machine other processes steal CPU from the server or the load
generator and the figures drop.  Before each cell the harness waits (bounded)
until the machine is quiet, and each result records how much CPU went to
processes other than the server and the load generator during its window.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.throughput.build import BuildError, compiler

__all__ = ["busy_cpus", "describe", "wait_for_quiet"]

QUIET_CPUS = 0.2  # busy CPUs (of all of them) below which the machine counts as quiet
SAMPLE = 0.2  # seconds per sample


def _busy_and_total() -> tuple[int, int]:
    """Busy and total jiffies over all CPUs since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def busy_cpus(window: float = SAMPLE) -> float:
    """How many CPUs' worth of time was busy over ``window`` seconds (0 to the CPU count)."""
    busy0, total0 = _busy_and_total()
    time.sleep(window)
    busy1, total1 = _busy_and_total()
    cpus = os.cpu_count() or 1
    return cpus * (busy1 - busy0) / max(1, total1 - total0)


def wait_for_quiet(limit: float, threshold: float = QUIET_CPUS) -> tuple[float, float]:
    """Wait until the machine is quiet, at most ``limit`` seconds; (seconds waited, last busy)."""
    started = time.monotonic()
    busy = 0.0
    while limit > 0:
        try:
            busy = busy_cpus()
        except (OSError, ValueError, IndexError):  # no /proc/stat: nothing to wait for
            break
        if busy < threshold or time.monotonic() - started >= limit:
            break
    return time.monotonic() - started, busy


def describe() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "compiler": _compiler_version(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _compiler_version() -> str:
    try:
        command = [compiler(), "--version"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (BuildError, OSError, subprocess.TimeoutExpired):
        return "?"
    return done.stdout.splitlines()[0] if done.stdout else "?"
