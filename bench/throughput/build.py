"""Compile the C programs (load generator, reference server) with the system compiler.

Binaries go to ``bench/.build/NAME-HASH`` (git-ignored), where the hash covers the
source, the compiler and its flags: an edited source is rebuilt, an unchanged
one is not, and concurrent builds (tests under xdist) never see a half-written
file because each compiles to its own temporary name and renames.

``loadgen-tls`` and ``refserver-tls`` are the same sources built with TLS
(``-DWITH_TLS``, linked with OpenSSL's libssl): they need OpenSSL's development
files (Debian: ``libssl-dev``, which ``scripts/system-deps`` installs), and a
machine without them gets a :class:`BuildError` that says so, before anything
is compiled.  The plain programs never need them.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BUILD_DIR",
    "REPO_ROOT",
    "BuildError",
    "Program",
    "build",
    "build_problem",
    "compiler",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
C_DIR = REPO_ROOT / "bench" / "c"
BUILD_DIR = REPO_ROOT / "bench" / ".build"
CFLAGS = ("-O3", "-std=gnu11", "-Wall", "-Wextra")
BUILD_TIMEOUT = 120.0
OPENSSL_HEADER = "openssl/ssl.h"
OPENSSL_PACKAGE = "libssl-dev"


@dataclass(frozen=True)
class Program:
    """A C program: its source in bench/c/, extra flags and libraries, what it needs."""

    source: str  # bench/c/SOURCE.c
    defines: tuple[str, ...] = ()
    libs: tuple[str, ...] = ()
    header: str | None = None  # a system header it needs, checked first for a clear error
    package: str = ""  # the Debian package that provides that header

    @property
    def flags(self) -> tuple[str, ...]:
        return (*CFLAGS, *self.defines)


def _with_tls(source: str) -> Program:
    """``source`` built with TLS: OpenSSL's libssl."""
    return Program(source, ("-DWITH_TLS",), ("-lssl", "-lcrypto"), OPENSSL_HEADER, OPENSSL_PACKAGE)


PROGRAMS: dict[str, Program] = {
    "loadgen": Program("loadgen"),
    "refserver": Program("refserver"),
    "loadgen-tls": _with_tls("loadgen"),
    "refserver-tls": _with_tls("refserver"),
}
# NAME-HASH: the hash is 12 hex digits (loadgen-tls-HASH is not a stale loadgen).
_BINARY = re.compile(r"^(?P<name>.+)-(?P<hash>[0-9a-f]{12})$")


class BuildError(RuntimeError):
    """No C compiler, a missing library's development files, or a compile error."""


def compiler() -> str:
    """``$CC``, else ``cc``, else ``gcc``."""
    found = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not found:
        raise BuildError("no C compiler found: install gcc, or set CC")
    return found


def build(name: str, build_dir: Path = BUILD_DIR) -> Path:
    """The path of the compiled program ``name`` (see PROGRAMS), building it if needed."""
    program = PROGRAMS.get(name)
    if program is None:
        raise BuildError(f"unknown program {name!r}: one of {', '.join(PROGRAMS)}")
    source = C_DIR / f"{program.source}.c"
    cc = compiler()
    target = build_dir / f"{name}-{_digest(source, cc, program)}"
    if not target.exists():
        if program.header:
            _check_header(cc, program)
        _compile(cc, source, program, target)
        _remove_stale(build_dir, name, keep=target)
    return target


@functools.cache
def build_problem(name: str) -> str | None:
    """None if ``name`` builds here, else why not (once per process)."""
    try:
        build(name)
    except BuildError as exc:
        return str(exc)
    return None


def _digest(source: Path, cc: str, program: Program) -> str:
    digest = hashlib.sha256(source.read_bytes())
    digest.update(" ".join((cc, *program.flags, *program.libs)).encode())
    return digest.hexdigest()[:12]


def _check_header(cc: str, program: Program) -> None:
    """A missing header says which package to install, not a page of compiler errors."""
    command = [cc, "-E", "-x", "c", "-", "-o", os.devnull]
    try:
        done = subprocess.run(
            command,
            input=f"#include <{program.header}>\n",
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"{' '.join(command)}: {exc}") from exc
    if done.returncode != 0:
        raise BuildError(
            f"cannot build the TLS programs: <{program.header}> is missing (OpenSSL's "
            f"development files): install {program.package} (Debian/Ubuntu; "
            "`sudo scripts/system-deps` does), or the TLS cells cannot run"
        )


def _compile(cc: str, source: Path, program: Program, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    command = [cc, *program.flags, "-o", str(temporary), str(source), *program.libs]
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
        match = _BINARY.match(old.name)
        if old != keep and match and match["name"] == name:
            old.unlink(missing_ok=True)
