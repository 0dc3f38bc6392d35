"""Running ``python -m portico`` as a real subprocess, on loopback only.

``portico_serve(*args)`` starts ``portico serve`` with a ``--bind ...:0`` (or
``--unix``) of the test's choosing, reads its stderr in a thread, and returns
once every "serving on ADDRESS" line has arrived, with the addresses parsed.
Nothing sleeps to synchronise: every wait reads log lines with a deadline.
Every process started is killed (if still running) and waited for at teardown.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

PORTICO = (sys.executable, "-m", "portico")
DEADLINE = 5.0  # seconds for any one thing we wait for


def clean_env(
    extra: dict[str, str] | None = None, pythonpath: Path | None = None
) -> dict[str, str]:
    """The test's environment without PORTICO_* settings, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTICO_")}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def parse_address(text: str) -> Any:
    """'127.0.0.1:80' -> ('127.0.0.1', 80); '[::1]:80' -> ('::1', 80); else a path."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return text
    return host.strip("[]"), int(port)


class ServerProcess:
    """One ``portico serve`` subprocess and the lines of its stderr."""

    def __init__(self, args: Sequence[str], env: dict[str, str], cwd: Path | None) -> None:
        self.lines: list[str] = []
        self.addresses: list[Any] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._eof = False
        self.proc = subprocess.Popen(
            [*PORTICO, "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            encoding="utf-8",
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def _next_line(self, deadline: float) -> str | None:
        """The next stderr line; None once the process has closed stderr."""
        if self._eof:
            return None
        try:
            line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            raise AssertionError(f"timed out; stderr so far:\n{self.stderr}") from None
        if line is None:
            self._eof = True
        else:
            self.lines.append(line)
        return line

    def wait_for(
        self, pattern: str, count: int = 1, timeout: float = DEADLINE
    ) -> list[re.Match[str]]:
        """The first ``count`` stderr lines matching ``pattern``, waiting for them if need be."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        matches = [m for m in map(regex.search, self.lines) if m]
        while len(matches) < count:
            line = self._next_line(deadline)
            if line is None:
                code = self.proc.poll()
                raise AssertionError(f"portico exited ({code}) before {pattern!r}:\n{self.stderr}")
            if match := regex.search(line):
                matches.append(match)
        return matches[:count]

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum``; return the exit code, with all of stderr read."""
        self.proc.send_signal(signum)
        code = self.proc.wait(DEADLINE)
        deadline = time.monotonic() + DEADLINE
        while self._next_line(deadline) is not None:
            pass
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(DEADLINE)
        self._reader.join(DEADLINE)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


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
    ) -> ServerProcess:
        server = ServerProcess(args, clean_env(env, pythonpath), cwd)
        started.append(server)
        for match in server.wait_for(r"INFO portico\.cli: serving on (\S+)$", listeners):
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
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    return "::1"
