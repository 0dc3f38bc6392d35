"""Running ``python -m portico`` as a real subprocess, on loopback only.

``portico_serve(*args)`` starts ``portico serve`` with a ``--bind ...:0`` (or
``--unix``) of the test's choosing, reads its stderr in a thread
(``portico.testing.ServerProcess`` with ``drain``), and returns once every
"serving on ADDRESS" line has arrived, with the addresses parsed.
Nothing sleeps to synchronise: every wait reads log lines with a deadline.
Every process started is killed (if still running) and waited for at teardown.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import portico.testing
from portico.testing import clean_env, has_ipv6_loopback

PORTICO = (sys.executable, "-m", "portico")
DEADLINE = 5.0  # seconds for any one thing we wait for


def parse_address(text: str) -> Any:
    """'127.0.0.1:80' -> ('127.0.0.1', 80); '[::1]:80' -> ('::1', 80); else a path."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return text
    return host.strip("[]"), int(port)


class ServerProcess(portico.testing.ServerProcess):
    """One ``portico serve`` subprocess and the lines of its stderr, read in a thread."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str],
        cwd: Path | None,
        pass_fds: Sequence[int] = (),
        prefix: Sequence[str] = (),
    ) -> None:
        super().__init__(
            [*prefix, *PORTICO, "serve", *args],
            drain=True,
            env=env,
            cwd=cwd,
            timeout=DEADLINE,
            pass_fds=pass_fds,
        )
        self.addresses: list[Any] = []

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.popen

    @property
    def stderr(self) -> str:
        return self.text


StartServer = Callable[..., ServerProcess]


@pytest.fixture
def portico_serve() -> Iterator[StartServer]:
    """Start ``portico serve *args``; returns once its ``listeners`` addresses are logged."""
    started: list[ServerProcess] = []

    def start(
        *args: str,
        listeners: int = 1,
        env: dict[str, str] | None = None,
        pythonpath: Path | None = None,
        cwd: Path | None = None,
        pass_fds: Sequence[int] = (),
        prefix: Sequence[str] = (),
    ) -> ServerProcess:
        server = ServerProcess(args, clean_env(env, pythonpath), cwd, pass_fds, prefix)
        started.append(server)
        if listeners == 0:  # the caller waits for what it needs
            return server
        # The line as text, or as JSON (--log-format json).
        serving_on = r'(?:INFO portico\.cli: |"message": ")serving on ([^\s"]+)'
        for match in server.wait_for(serving_on, listeners):
            server.addresses.append(parse_address(match.group(1)))
        return server

    yield start
    for server in started:
        server.close()


def run_portico(
    *args: str, env: dict[str, str] | None = None, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m portico *args`` to completion (killed if it outlives the deadline)."""
    return subprocess.run(
        [*PORTICO, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        env=clean_env(env, pythonpath),
        timeout=2 * DEADLINE,
        check=False,
    )


@pytest.fixture
def portico_run() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_portico``, for commands expected to end on their own (errors, --help)."""
    return run_portico


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory with a short path: Unix socket paths are limited to about 100 bytes."""
    with tempfile.TemporaryDirectory(prefix="portico-") as name:
        yield Path(name)


@pytest.fixture
def ipv6_loopback() -> str:
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    return "::1"
