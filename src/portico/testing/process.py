"""A server in a subprocess, read line by line with deadlines and stopped by its PID.

Tests of real processes need the same few things: start the server, wait
(never sleep) until it prints that it is listening, read what it logs, send
it a signal and collect its exit status, and make sure it is gone whatever
happened.  ``ServerProcess`` does exactly that; it reads the chosen stream
with a selector, so it needs no thread, unless asked to ``drain`` a process
that may write more than anyone waits for.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

__all__ = ["ServerProcess"]


class ServerProcess:
    """``subprocess.Popen`` plus line reading on ``stream``.

    ``lines`` holds every line read so far, without newlines.  The other
    stream is discarded, or written to the file ``other_path`` (shown in
    failure messages).  With ``drain``, a thread reads ``stream`` as it
    arrives, so a chatty process never blocks on a full pipe while the test
    waits for something else.  Use it as a context manager: on exit the
    process is killed if it still runs, and reaped.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        stream: Literal["stdout", "stderr"] = "stderr",
        other_path: str | os.PathLike[str] | None = None,
        drain: bool = False,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        stdin: bool = False,
        timeout: float = 10.0,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.timeout = timeout
        self.stream = stream
        self.other_path = None if other_path is None else Path(other_path)
        self.lines: list[str] = []
        self._pending = b""
        self._eof = False
        with contextlib.ExitStack() as files:
            other: int | IO[bytes] = subprocess.DEVNULL
            if self.other_path is not None:
                other = files.enter_context(self.other_path.open("wb"))
            piped = {"stdout": other, "stderr": other, stream: subprocess.PIPE}
            self.popen = subprocess.Popen(
                list(args),
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=piped["stdout"],
                stderr=piped["stderr"],
                env=None if env is None else dict(env),
                cwd=cwd,
                pass_fds=tuple(pass_fds),
            )
        output = self.popen.stdout if stream == "stdout" else self.popen.stderr
        assert output is not None
        self._output: IO[bytes] = output
        self._chunks: queue.SimpleQueue[bytes] | None = None
        self._reader: threading.Thread | None = None
        if drain:
            self._chunks = queue.SimpleQueue()
            self._reader = threading.Thread(
                target=self._drain, args=(self._chunks,), name=f"pid {self.pid} reader", daemon=True
            )
            self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def text(self) -> str:
        """Everything read so far, for failure messages."""
        return "\n".join(self.lines)

    def explain(self, problem: str) -> str:
        """``problem``, with the process's state and what it wrote, for a failure message."""
        status = self.popen.poll()
        state = "still running" if status is None else f"exit status {status}"
        message = f"{problem} (pid {self.pid}, {state}); its {self.stream} so far:\n{self.text}"
        if self.other_path is not None:
            other = "stdout" if self.stream == "stderr" else "stderr"
            message += f"\nits {other}:\n{self.other_path.read_text(errors='replace')}"
        return message

    def read_line(self, timeout: float | None = None) -> str | None:
        """The next line, or None at end of output; TimeoutError if none comes in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self._pending and not self._eof:
            self._fill(deadline)
        if not self._pending:
            return None
        raw, _, self._pending = self._pending.partition(b"\n")
        line = raw.decode(errors="replace")
        self.lines.append(line)
        return line

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        chunk = self._receive(remaining) if remaining > 0 else None
        if chunk is None:
            raise TimeoutError(self.explain("no line in time"))
        if chunk:
            self._pending += chunk
        else:
            self._eof = True

    def _receive(self, timeout: float) -> bytes | None:
        """The next chunk of output (b"" at its end), or None if none comes in time."""
        if self._chunks is not None:
            try:
                return self._chunks.get(timeout=timeout)
            except queue.Empty:
                return None
        with selectors.DefaultSelector() as selector:
            selector.register(self._output, selectors.EVENT_READ)
            if not selector.select(timeout):
                return None
        return os.read(self._output.fileno(), 65536)

    def _drain(self, chunks: queue.SimpleQueue[bytes]) -> None:
        fd = self._output.fileno()
        while chunk := os.read(fd, 65536):
            chunks.put(chunk)
        chunks.put(b"")

    def wait_for(
        self,
        pattern: str | re.Pattern[str],
        count: int = 1,
        timeout: float | None = None,
        *,
        since: int = 0,
    ) -> list[re.Match[str]]:
        """The first ``count`` lines matching ``pattern``, read so far or waited for.

        Only ``lines[since:]`` count: ``since=len(proc.lines)`` waits for new lines.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        matches = [m for m in map(regex.search, self.lines[since:]) if m]
        while len(matches) < count:
            line = self.read_line(max(deadline - time.monotonic(), 0.0))
            if line is None:
                raise AssertionError(self.explain(f"output ended before {regex.pattern!r}"))
            if match := regex.search(line):
                matches.append(match)
        return matches[:count]

    def send_line(self, line: str) -> None:
        assert self.popen.stdin is not None, "start with stdin=True"
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()

    def wait(self, timeout: float | None = None) -> int:
        """The exit status; TimeoutError if the process does not exit in time."""
        try:
            return self.popen.wait(self.timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(self.explain("the process did not exit in time")) from None

    def stop(self, signum: int = signal.SIGTERM, timeout: float | None = None) -> int:
        """Send ``signum``, wait for the exit status, and read the rest of the output."""
        self.popen.send_signal(signum)
        code = self.wait(timeout)
        while self.read_line() is not None:
            pass
        return code

    def close(self) -> None:
        """Kill the process if it still runs, reap it, and close the pipes."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(self.timeout)
        if self._reader is not None:
            # It ends at the end of output, once every process holding the pipe has gone.
            self._reader.join(self.timeout)
        for pipe in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            reading = pipe is self._output and self._reader is not None and self._reader.is_alive()
            if pipe is not None and not reading:
                pipe.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
