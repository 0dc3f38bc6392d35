"""``portico bench``: run the throughput benchmark of a portico checkout.

The harness is not part of the installed package: it lives in ``bench/`` at
the root of a portico source checkout (it compiles a C load generator and
reference server, and measures optional peers: asyncio, uvloop, gevent).
``portico bench`` finds that checkout, from the current directory or one of
its parents, or at ``--checkout PATH``, and runs ``python -m bench.throughput``
there with this interpreter (so it measures the portico that runs it), passing
its options through.  Its exit status is the harness's: 0, 1 when a cell
failed, 2 on bad usage; outside a checkout, 2 with one line saying where the
harness lives.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from portico.cli.settings import (
    Command,
    Resolved,
    Setting,
    parse_bool,
    parse_positive_int,
    parse_positive_seconds,
    parse_seconds,
)
from portico.errors import ConfigurationError

__all__ = ["COMMAND", "SETTINGS", "find_checkout", "harness_argv", "run"]

HARNESS = Path("bench", "throughput", "__main__.py")
_PORTICO_PROJECT = re.compile(r"""^name\s*=\s*["']portico["']\s*$""", re.MULTILINE)
# After Ctrl-C, which reaches the harness too, wait this long for it to stop its server.
INTERRUPT_GRACE = 15.0


def parse_names(text: str) -> tuple[str, ...]:
    """Names separated by commas (``oneshot,udp``); the harness checks that they exist."""
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise ConfigurationError(f"{text!r} is not a list of names such as oneshot,udp")
    return names


def parse_path(text: str) -> Path:
    """A path, made absolute here: the harness runs in the checkout, not in this directory."""
    if not text or "\0" in text:
        raise ConfigurationError(f"{text!r} is not a usable path")
    return Path(text).expanduser().absolute()


SETTINGS = (
    Setting(
        "checkout",
        parse_path,
        flag="--checkout",
        metavar="PATH",
        env="PORTICO_CHECKOUT",
        help="the portico source checkout whose bench/ to run (default: the current "
        "directory or one of its parents)",
    ),
    Setting(
        "quick",
        parse_bool,
        flag="--quick",
        default="no",
        switch=True,
        help="one short run per cell (a few minutes), instead of three longer ones",
    ),
    Setting(
        "preset",
        str,
        flag="--preset",
        metavar="NAME",
        help="a named run: prefork (the supervisor at 1 and 2 workers against one process "
        "and the C reference) or tls (TLS handshakes and persistent TLS beside asyncio and "
        "uvloop with ssl=); the options below override it",
    ),
    Setting(
        "share_cpus",
        parse_bool,
        flag="--share-cpus",
        default="no",
        switch=True,
        help="pin nothing: servers and the load generator share every CPU",
    ),
    Setting(
        "workloads",
        parse_names,
        flag="--workloads",
        metavar="NAMES",
        repeat=True,
        help="workloads (oneshot, pingpong, idle, udp, bulk) or cells (pingpong-64x256), "
        "comma-separated; default: all",
    ),
    Setting(
        "servers",
        parse_names,
        flag="--servers",
        metavar="NAMES",
        repeat=True,
        help="servers (c-epoll, portico-threads, ...) or families (portico, stdlib, asyncio, "
        "gevent, c), comma-separated; default: all",
    ),
    Setting(
        "duration",
        parse_positive_seconds,
        flag="--duration",
        metavar="SECONDS",
        help="measured seconds per cell",
    ),
    Setting(
        "warmup", parse_seconds, flag="--warmup", metavar="SECONDS", help="warm-up seconds per cell"
    ),
    Setting("runs", parse_positive_int, flag="--runs", metavar="N", help="runs per cell"),
    Setting(
        "quiet_wait",
        parse_seconds,
        flag="--quiet-wait",
        metavar="SECONDS",
        help="before each cell, wait at most this long for other processes' load to pass",
    ),
    Setting(
        "out",
        parse_path,
        flag="--out",
        metavar="FILE",
        help="results file (.jsonl); the report and plots go next to it",
    ),
    Setting(
        "logs",
        parse_path,
        flag="--logs",
        metavar="DIR",
        help="directory for the servers' output",
    ),
    Setting(
        "no_plots",
        parse_bool,
        flag="--no-plots",
        default="no",
        switch=True,
        help="skip the PNG plots",
    ),
    Setting(
        "list",
        parse_bool,
        flag="--list",
        default="no",
        switch=True,
        help="list the servers and cells, and exit",
    ),
)


def is_checkout(directory: Path) -> bool:
    """Whether ``directory`` holds the harness next to a pyproject.toml naming portico."""
    try:
        pyproject = (directory / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return (directory / HARNESS).is_file() and _PORTICO_PROJECT.search(pyproject) is not None


def find_checkout(start: Path) -> Path | None:
    """The portico checkout holding ``start`` (the directory itself or a parent), or None."""
    start = start.absolute()
    return next((path for path in (start, *start.parents) if is_checkout(path)), None)


def checkout_for(given: Path | None) -> Path:
    """The checkout to run: the one given, else the one around the current directory."""
    if given is not None:
        if not is_checkout(given):
            raise ConfigurationError(
                f"--checkout {given}: not a portico checkout (no {HARNESS} next to a "
                "pyproject.toml naming portico)"
            )
        return given
    found = find_checkout(Path.cwd())
    if found is None:
        raise ConfigurationError(
            "the benchmark is not installed with portico: it lives in bench/ of a portico "
            "source checkout (a clone of its git repository); run `portico bench` inside "
            "one, or pass --checkout PATH"
        )
    return found


def _flatten(groups: Iterable[tuple[str, ...]]) -> list[str]:
    return [name for group in groups for name in group]


def harness_argv(values: dict[str, Any]) -> list[str]:
    """The ``python -m bench.throughput`` options for the resolved settings."""
    return list(_harness_options(values))


def _harness_options(values: dict[str, Any]) -> Iterator[str]:
    for name in ("quick", "share_cpus", "no_plots", "list"):
        if values.get(name):
            yield f"--{name.replace('_', '-')}"
    for name in ("workloads", "servers"):
        names = _flatten(values.get(name) or ())
        if names:
            yield f"--{name}"
            yield from names
    for name in ("preset", "duration", "warmup", "runs", "quiet_wait", "out", "logs"):
        value = values.get(name)
        if value is not None:
            yield f"--{name.replace('_', '-')}"
            yield f"{value:g}" if isinstance(value, float) else str(value)


def run(resolved: Resolved) -> int:
    checkout = checkout_for(resolved.values["checkout"])
    command = [sys.executable, "-m", "bench.throughput", *harness_argv(dict(resolved.values))]
    # The harness finds bench/ because it runs in the checkout (python -m puts the
    # current directory first on the path); paths given here were made absolute.
    with subprocess.Popen(command, cwd=checkout) as harness:
        try:
            return harness.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the harness too: let it stop its server and load generator.
            try:
                harness.wait(INTERRUPT_GRACE)
            except subprocess.TimeoutExpired:
                harness.kill()
            raise


COMMAND = Command(
    name="bench",
    summary="run the throughput benchmark (bench/ of a portico checkout)",
    settings=SETTINGS,
    run=run,
)
