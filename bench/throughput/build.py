"""Compile the C programs (load generator, reference server) with the system compiler.

Binaries go to ``bench/.build/NAME-HASH`` (git-ignored), where the hash covers the
source, the compiler and its flags: an edited source is rebuilt, an unchanged
one is not, and concurrent builds (tests under xdist) never see a half-written
file because each compiles to its own temporary name and renames.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["BUILD_DIR", "REPO_ROOT", "BuildError", "build", "compiler"]

REPO_ROOT = Path(__file__).resolve().parents[2]
C_DIR = REPO_ROOT / "bench" / "c"
BUILD_DIR = REPO_ROOT / "bench" / ".build"
CFLAGS = ("-O3", "-std=gnu11", "-Wall", "-Wextra")
PROGRAMS = ("loadgen", "refserver")
BUILD_TIMEOUT = 120.0


class BuildError(RuntimeError):
    """No C compiler, or the program did not compile."""


def compiler() -> str:
    """``$CC``, else ``cc``, else ``gcc``."""
    found = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not found:
        raise BuildError("no C compiler found: install gcc, or set CC")
    return found


def build(name: str, build_dir: Path = BUILD_DIR) -> Path:
    """The path of the compiled ``bench/c/NAME.c``, building it if needed."""
    if name not in PROGRAMS:
        raise BuildError(f"unknown program {name!r}: one of {', '.join(PROGRAMS)}")
    source = C_DIR / f"{name}.c"
    cc = compiler()
    target = build_dir / f"{name}-{_digest(source, cc)}"
    if not target.exists():
        _compile(cc, source, target)
        _remove_stale(build_dir, name, keep=target)
    return target


def _digest(source: Path, cc: str) -> str:
    digest = hashlib.sha256(source.read_bytes())
    digest.update(" ".join((cc, *CFLAGS)).encode())
    return digest.hexdigest()[:12]


def _compile(cc: str, source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    command = [cc, *CFLAGS, "-o", str(temporary), str(source)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"{' '.join(command)}: {exc}") from exc
    if done.returncode != 0:
        temporary.unlink(missing_ok=True)
        raise BuildError(f"{' '.join(command)} failed:\n{done.stderr.strip()}")
    os.replace(temporary, target)


def _remove_stale(build_dir: Path, name: str, keep: Path) -> None:
    for old in build_dir.glob(f"{name}-*"):
        if old != keep and not old.name.endswith(".tmp"):
            old.unlink(missing_ok=True)
