"""The programs in examples/, run as their readers run them: in subprocesses.

Each server starts on port 0 and says where it listens (``serving on
HOST:PORT``, its first line of output, read here with a deadline); its
client then runs against it, and the outputs of both are checked byte for
byte.  The threaded example runs to completion on its own.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from portico.testing import ServerProcess

pytestmark = pytest.mark.timeout(10)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 5.0  # for each step: starting, one exchange, stopping

SERVING = re.compile(r"serving on 127\.0\.0\.1:(\d+)")


class ExampleServer(ServerProcess):
    """An example server in a subprocess, its stdout read line by line with deadlines."""

    def __init__(self, script: str, stderr_path: Path) -> None:
        super().__init__(
            [sys.executable, str(EXAMPLES / script), "0"],
            stream="stdout",
            other_path=stderr_path,
            timeout=TIMEOUT,
        )

    def read_port(self) -> int:
        line = self.read_line()
        match = SERVING.fullmatch(line or "")
        assert match, self.explain(f"expected 'serving on 127.0.0.1:PORT', got {line!r}")
        return int(match[1])


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[[str], ExampleServer]]:
    started: list[ExampleServer] = []

    def start(script: str) -> ExampleServer:
        server = ExampleServer(script, tmp_path / f"{script}.stderr")
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def run_example(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, timeout=TIMEOUT * 2, check=False
    )


@pytest.mark.parametrize(
    ("server_script", "client_script"),
    [
        ("tcp_server.py", "tcp_client.py"),
        ("tcp_stream_server.py", "tcp_client.py"),
        ("udp_server.py", "udp_client.py"),
    ],
)
def test_server_and_client(
    start_server: Callable[[str], ExampleServer], server_script: str, client_script: str
) -> None:
    server = start_server(server_script)
    port = server.read_port()

    # Two clients in turn: the server keeps serving after the first.
    for words in (["hello", "world"], ["portico,", "as", "socketserver!"]):
        line = " ".join(words)
        client = run_example(str(EXAMPLES / client_script), "--port", str(port), *words)
        assert (client.returncode, client.stderr) == (0, b"")
        assert client.stdout == f"Sent:     {line}\nReceived: {line.upper()}\n".encode()
        assert server.read_line() == f"127.0.0.1 wrote: {line.encode()!r}"


def test_threaded_example_runs_to_completion() -> None:
    result = run_example(str(EXAMPLES / "threaded_server.py"))
    assert (result.returncode, result.stderr) == (0, b"")

    serving, loop, *replies = result.stdout.decode().splitlines()
    assert SERVING.fullmatch(serving), serving
    assert loop == "Server loop running in thread: server loop"
    reply = re.compile(
        r"Received: (?P<thread>.+ \(process_request_thread\)): Hello World (?P<n>\d)"
    )
    matches = [reply.fullmatch(line) for line in replies]
    assert all(matches), replies
    assert [match["n"] for match in matches if match] == ["1", "2", "3"]
    # A thread per request, none of them the serving loop's.
    threads = {match["thread"] for match in matches if match}
    assert len(threads) == 3
    assert "server loop" not in threads
