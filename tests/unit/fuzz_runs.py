"""Running a fuzz target (tests/fuzz) briefly from the unit tests, so that it cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_briefly(target: Path, cwd: Path, seconds: int = 8) -> subprocess.CompletedProcess[str]:
    """``target --hypothesis`` for ``seconds`` (bounded by a timeout), as the docs say to run it."""
    command = [
        sys.executable, str(target), "--hypothesis", "--examples", "100000",
        "--seconds", str(seconds),
    ]  # fmt: skip
    return subprocess.run(
        command, check=False, cwd=cwd, capture_output=True, text=True, timeout=seconds + 37
    )
