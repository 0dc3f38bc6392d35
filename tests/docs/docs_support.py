"""Helpers for the tests that run the documentation's commands as a new user would.

A copy of the repository (the files git tracks, as they are in the working
tree), a shell environment that finds only this interpreter as ``python3``,
the fenced blocks of a Markdown page, and a lock for the fixed port the
documents serve on.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The address the README and docs/quickstart.md serve on: one process at a time can.
DOCUMENTED_PORT = 9999

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)


def copy_of_checkout(target: Path) -> Path:
    """Copy every file git tracks, with its working-tree content, to ``target``."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            (target / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name.decode())
    return target


def fresh_shell_env(tmp_path: Path) -> dict[str, str]:
    """A new user's environment: this interpreter as ``python3``, system tools, an empty home."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}


def wait_for_line(proc: subprocess.Popen[str], needle: str, deadline: float) -> list[str]:
    seen: list[str] = []
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} never appeared: {seen}")


def fenced_blocks(markdown: str) -> list[tuple[str, str]]:
    """``(info string, body)`` of each fenced block (fences at the start of a line)."""
    return [(info.strip(), body) for info, body in _FENCE.findall(markdown)]


@contextmanager
def documented_port_lock() -> Iterator[None]:
    """Hold the documented port for this test: pytest-xdist may run two such tests at once.

    An exclusive ``flock`` on a file in the temporary directory, shared by every
    test process on this machine; the kernel releases it if the holder dies.
    """
    path = Path(tempfile.gettempdir()) / f"portico-tests-port-{DOCUMENTED_PORT}.lock"
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # bounded by the test's timeout
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
