"""The C load generator checks every reply byte for byte: tried on tiny servers in threads.

Each run lasts a fraction of a second; nothing here is timed.
"""

from __future__ import annotations

import json
import socket
import socketserver
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from bench.throughput.loadgen import LoadResult, LoadSpec, run_loadgen
from bench.throughput.procs import PROBE, ServerFailed, check_probe_reply

pytestmark = pytest.mark.timeout(20)

SHORT = {"duration": 0.2, "warmup": 0.05, "timeout": 1.0, "drain": 0.5, "setup_timeout": 5.0}


class Answer(socketserver.StreamRequestHandler):
    answer: Callable[[bytes], bytes] = staticmethod(bytes.upper)

    def handle(self) -> None:
        try:
            while line := self.rfile.readline():
                self.wfile.write(self.answer(line))
        except ConnectionError:
            pass


class Upper(Answer):
    pass


class Echo(Answer):
    answer = staticmethod(bytes)


class OffByOne(Answer):
    """Upper-cases all but the last letter: almost right is wrong."""

    @staticmethod
    def answer(line: bytes) -> bytes:
        return line[:-2].upper() + line[-2:]


class HangUp(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.rfile.readline()


class UpperDatagram(socketserver.DatagramRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.packet.upper())


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128  # the stdlib's 5 would drop SYNs: slow, not wrong


class DatagramServer(socketserver.UDPServer):
    pass


@contextmanager
def serving(cls: type[Any], handler: type[Any]) -> Iterator[int]:
    with cls(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            thread.join(5)


def load(
    binary: Path, port: int, mode: str = "pingpong", conns: int = 2, **extra: Any
) -> LoadResult:
    return run_loadgen(binary, LoadSpec(mode, conns, **{**SHORT, **extra}), port)


def test_selftest(loadgen: Path) -> None:
    done = subprocess.run([loadgen, "--selftest"], capture_output=True, timeout=10, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"selftest": True}


@pytest.mark.parametrize("mode", ["pingpong", "oneshot"])
def test_upper_cased_replies_pass(loadgen: Path, mode: str) -> None:
    with serving(Server, Upper) as port:
        result = load(loadgen, port, mode)
    assert result.errors == 0, result.error_kinds
    assert result.requests > 0
    assert 0 < result.p50_us <= result.p99_us


@pytest.mark.parametrize("handler", [Echo, OffByOne])
def test_wrong_replies_are_mismatches(loadgen: Path, handler: type[Any]) -> None:
    with serving(Server, handler) as port:
        result = load(loadgen, port)
    assert result.requests == 0
    assert result.error_kinds["mismatch"] > 0


def test_a_server_that_hangs_up_is_an_error(loadgen: Path) -> None:
    with serving(Server, HangUp) as port:
        result = load(loadgen, port, "oneshot", conns=1)
    assert result.requests == 0
    assert result.error_kinds["eof"] + result.error_kinds["reset"] > 0


def test_large_lines_and_bulk(loadgen: Path) -> None:
    with serving(Server, Upper) as port:
        big = load(loadgen, port, size=16 * 1024)
        bulk = load(loadgen, port, "bulk", size=4096, bulk_bytes=1 << 20, duration=5.0)
    assert big.errors == 0 and big.requests > 0
    assert bulk.errors == 0 and bulk.bulk_done
    assert bulk.requests == 256  # 1 MiB in 4 KiB lines, every one checked


def test_datagrams(loadgen: Path) -> None:
    with serving(DatagramServer, UpperDatagram) as port:
        result = load(loadgen, port, "udp")
    assert result.errors == 0, result.error_kinds
    assert result.requests > 0


def test_idle_connections_are_held_and_counted(loadgen: Path) -> None:
    with serving(Server, Upper) as port:
        result = load(loadgen, port, idle=20)
    assert result.idle_established == result.idle_held == 20, result
    assert result.errors == 0


def test_nothing_listening_is_a_connect_error(loadgen: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        result = load(loadgen, port, "oneshot", conns=1)
    assert result.requests == 0
    assert result.error_kinds["connect"] > 0


def test_readiness_probe_wants_the_upper_cased_line() -> None:
    check_probe_reply(PROBE.upper())
    with pytest.raises(ServerFailed, match="not the upper-cased line"):
        check_probe_reply(PROBE)
