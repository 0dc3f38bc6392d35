"""server.statistics(): a frozen snapshot of what the server counted, on every engine."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from typing import Any

import pytest

import portico
from portico.engines import AsyncStreamRequestHandler, available_engines, server_class

pytestmark = pytest.mark.timeout(30)

DEADLINE = 10.0
ENGINES = [e for e in ("serial", "threads", "pool", "event", "async") if e in available_engines()]


class Upper(portico.StreamRequestHandler):
    max_line_length = 64

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


class AsyncUpper(AsyncStreamRequestHandler):
    max_line_length = 64

    async def handle(self) -> None:
        async for line in self.reader:
            self.writer.write(line.upper())


def build(engine: str, base: type = portico.TCPServer) -> Any:
    handler = AsyncUpper if engine == "async" else Upper
    server = server_class(engine, base)(("127.0.0.1", 0), handler)
    server.count_bytes = True
    return server


def talk(address: Any, payload: bytes) -> bytes:
    with socket.create_connection(address, timeout=DEADLINE) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return sock.makefile("rb").read()


def settled(server: Any, count: int) -> Any:
    """The snapshot once ``count`` requests have finished (they finish after the client reads)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        stats = server.statistics()
        if stats.handler_seconds.count >= count or time.monotonic() > deadline:
            return stats
        time.sleep(0.01)


@pytest.mark.parametrize("engine", ENGINES)
def test_the_snapshot_counts_connections_bytes_limits_and_durations(serving, engine) -> None:
    server = serving(build(engine))
    for n in range(3):
        assert talk(server.server_address, b"line %d\n" % n) == b"LINE %d\n" % n
    assert talk(server.server_address, b"x" * 200 + b"\n") == b""  # over max_line_length
    stats = settled(server, 4)
    assert (stats.accepted, stats.active) == (4, 0)
    assert stats.bytes_in >= 3 * 7 + 65 and stats.bytes_out == 3 * 7
    assert dict(stats.closed_by_limit) == {"max_line_length": 1}
    histogram = stats.handler_seconds
    assert histogram.count == 4 == sum(histogram.counts)
    assert histogram.cumulative()[-1] == (float("inf"), 4)
    assert stats.drain_seconds is None and dict(stats.rejected) == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.accepted = 0  # type: ignore[misc]


@pytest.mark.parametrize("engine", [e for e in ENGINES if e in ("pool", "event", "async")])
def test_the_engines_own_figures_read_through(serving, engine) -> None:
    server = serving(build(engine))
    stats = server.statistics()
    assert stats.engine.engine == engine
    assert stats.in_flight == stats.engine.in_flight  # the engine's field, read through


def test_active_and_rejected_while_full(serving) -> None:
    server = build("threads")
    server.max_connections, server.overload_policy = 1, "reject"
    serving(server)
    with socket.create_connection(server.server_address, timeout=DEADLINE) as holder:
        holder.sendall(b"hold\n")
        assert holder.makefile("rb").readline() == b"HOLD\n"
        with socket.create_connection(server.server_address, timeout=DEADLINE) as extra:
            assert extra.recv(10) == b""  # turned away: closed at once
        stats = server.statistics()
        assert (stats.active, dict(stats.rejected)) == (1, {"max_connections": 1})


def test_a_drain_records_how_long_it_took() -> None:
    server = build("threads")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    server._portico_serving.wait(DEADLINE)
    assert talk(server.server_address, b"x\n") == b"X\n"
    assert server.drain(5.0)
    thread.join(DEADLINE)
    seconds = server.statistics().drain_seconds
    assert seconds is not None and 0 <= seconds < 5


def test_the_stdlib_classes_count_requests_but_not_bytes(serving) -> None:
    server = serving(portico.ThreadingTCPServer(("127.0.0.1", 0), Upper))
    assert talk(server.server_address, b"plain\n") == b"PLAIN\n"
    stats = settled(server, 1)
    assert (stats.accepted, stats.bytes_in, stats.engine) == (1, 0, None)
