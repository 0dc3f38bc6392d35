"""Admission limits on a real server: connections at once, per client, per second.

Each engine that runs in this process (threads, pool, event, async; the fork
engine is tested through ``portico serve`` in tests/cli) is filled up to its
limit with connections that stay open; what happens to the next one is the
policy under test: it waits in the backlog and is served once a slot frees
("pause"), or it reads the busy reply and is closed ("reject").
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

import portico
from portico.engines import AsyncStreamRequestHandler, available_engines, server_class

pytestmark = pytest.mark.timeout(30)

DEADLINE = 10.0
ENGINES = [e for e in ("serial", "threads", "pool", "event", "async") if e in available_engines()]
CONCURRENT = [e for e in ENGINES if e != "serial"]
BUSY = b"busy\r\n"


class Upper(portico.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


class AsyncUpper(AsyncStreamRequestHandler):
    async def handle(self) -> None:
        async for line in self.reader:
            self.writer.write(line.upper())


@pytest.fixture
def serve(serving: Any) -> Any:
    def start(engine: str, **settings: Any) -> Any:
        handler = AsyncUpper if engine == "async" else Upper
        server = server_class(engine, portico.TCPServer)(("127.0.0.1", 0), handler)
        for name, value in settings.items():
            setattr(server, name, value)
        return serving(server)

    return start


def ask(sock: socket.socket, line: bytes = b"hello\n") -> bytes:
    sock.sendall(line)
    return sock.makefile("rb").readline()


@contextmanager
def clients(server: Any, count: int, source: str = "127.0.0.1") -> Iterator[list[socket.socket]]:
    """``count`` connections, each answered once: each holds a slot until the block ends."""
    with ExitStack() as stack:
        socks = []
        for _ in range(count):
            sock = stack.enter_context(connect(server, source))
            assert ask(sock) == b"HELLO\n"
            socks.append(sock)
        yield socks


def connect(server: Any, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(
        server.server_address, timeout=DEADLINE, source_address=(source, 0)
    )


def turned_away(sock: socket.socket) -> bool:
    """The server sent the busy reply and closed the connection."""
    return sock.makefile("rb").read() == BUSY


def wait_until(condition: Any) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.01)


class Logged(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.seen.set()


@pytest.fixture
def server_log() -> Iterator[Logged]:
    handler = Logged()
    logger = logging.getLogger("portico.server")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("engine", CONCURRENT)
def test_a_full_server_stops_accepting_until_a_slot_frees(serve, engine: str) -> None:
    server = serve(engine, max_connections=2)
    with clients(server, 2) as (first, _), connect(server) as waiting:
        waiting.sendall(b"queued\n")
        waiting.settimeout(0.3)  # long enough for a reply that should not come
        with pytest.raises(TimeoutError):
            waiting.recv(64)
        first.close()
        waiting.settimeout(DEADLINE)
        assert waiting.makefile("rb").readline() == b"QUEUED\n"


@pytest.mark.parametrize("engine", ENGINES)
def test_reject_answers_busy_and_keeps_serving(serve, engine: str, server_log: Logged) -> None:
    server = serve(engine, max_connections=1, overload_policy="reject", busy_reply=BUSY)
    with clients(server, 1) if engine != "serial" else ExitStack():
        if engine != "serial":
            with connect(server) as extra:
                assert turned_away(extra)
            assert any("max_connections reached" in line for line in server_log.lines)
    # Once the handler has seen its client go, the slot is free again: served as usual.
    wait_until(lambda: server._portico_admission.open == 0)
    with connect(server) as sock:
        assert ask(sock) == b"HELLO\n"


@pytest.mark.parametrize("engine", CONCURRENT)
def test_the_per_client_limit_counts_addresses_or_prefixes(serve, engine: str) -> None:
    server = serve(engine, max_connections_per_client=1, busy_reply=BUSY)
    with clients(server, 1, "127.0.0.1"):
        with connect(server, "127.0.0.1") as same:
            assert turned_away(same)  # always rejected, even under "pause"
        with connect(server, "127.0.0.2") as other:
            assert ask(other) == b"HELLO\n"


@pytest.mark.parametrize("engine", CONCURRENT)
def test_a_prefix_makes_one_client_of_a_network(serve, engine: str) -> None:
    server = serve(engine, max_connections_per_client=1, client_prefix=(8, 64), busy_reply=BUSY)
    with clients(server, 1, "127.0.0.1"), connect(server, "127.0.0.2") as neighbour:
        assert turned_away(neighbour)


@pytest.mark.parametrize("engine", CONCURRENT)
def test_the_accept_rate_rejects_a_burst_beyond_it(serve, engine: str) -> None:
    server = serve(engine, max_accept_rate=2, overload_policy="reject", busy_reply=BUSY)
    answers = []
    for _ in range(5):
        with connect(server) as sock:
            sock.sendall(b"x\n")
            answers.append(sock.makefile("rb").readline())
    # A bucket of 2 (one second's worth), refilled at 2 a second: the burst is too fast.
    assert answers[:2] == [b"X\n", b"X\n"]
    assert BUSY in answers[2:]


@pytest.mark.parametrize("engine", CONCURRENT)
def test_the_accept_rate_under_pause_spreads_a_burst_out(serve, engine: str) -> None:
    rate, burst = 10, 20
    server = serve(engine, max_accept_rate=rate)
    started = time.monotonic()
    with ExitStack() as stack:
        socks = [stack.enter_context(connect(server)) for _ in range(burst)]
        for sock in socks:
            assert ask(sock) == b"HELLO\n"
    # The first second's worth at once, the rest no faster than the rate.
    assert time.monotonic() - started >= (burst - rate) / rate * 0.9


@pytest.mark.parametrize("engine", CONCURRENT)
def test_an_overridden_handle_overload_decides_the_reply(serving: Any, engine: str) -> None:
    handler = AsyncUpper if engine == "async" else Upper
    base = server_class(engine, portico.TCPServer)

    class Polite(base):  # type: ignore[misc, valid-type]
        def handle_overload(self, request: Any, client_address: Any, limit: str) -> None:
            message = f"try later ({limit})\n".encode()
            if isinstance(request, socket.socket):
                request.sendall(message)
            else:
                request.write(message)

    server = Polite(("127.0.0.1", 0), handler)
    server.max_connections = 1
    server.overload_policy = "reject"
    serving(server)
    with clients(server, 1), connect(server) as extra:
        assert extra.makefile("rb").read() == b"try later (max_connections)\n"


@pytest.mark.skipif("async" not in available_engines(), reason="needs the async engine")
def test_the_async_engine_accepts_itself_once_a_full_backlog_could_overshoot(serving) -> None:
    server = server_class("async", portico.TCPServer)(("127.0.0.1", 0), AsyncUpper)
    serving(server)
    assert server._portico_serving.wait(DEADLINE)  # the limits are read as serving starts
    engine = server.async_engine
    assert not engine._listening_gated  # far from the limit: uvloop's listener
    # The backlog a little smaller than auto's room (the engine reads it as it goes):
    # three connections in, a full backlog taken by the loop's listener could overshoot.
    server.request_queue_size = server._portico_admission.limits.max_connections - 3
    with clients(server, 5):
        wait_until(lambda: engine._listening_gated)
        with connect(server) as more:  # served through the engine's own accept path
            assert ask(more) == b"HELLO\n"
