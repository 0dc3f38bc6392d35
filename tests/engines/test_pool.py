"""The pool engine: bounded, reused workers, back-pressure by pausing accept.

Nothing here sleeps to synchronise: handlers block on events that the test
sets, and the serving loop's accept gate reports each "no" on a queue.
Servers run with ``poll_interval=None``, so their loop never wakes on a
timer: when accepting resumes, the pool's wake-up did it.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from engine_support import DEADLINE, client_threads

import portico
from portico.engines import (
    PoolMixIn,
    PoolStatistics,
    PoolTCPServer,
    PoolUDPServer,
    WorkerPool,
    default_max_workers,
)
from portico.errors import ConfigurationError
from portico.testing import serving

pytestmark = pytest.mark.timeout(30)


class Gauge:
    """How many handlers run now, and the most that ever ran at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


def gated(server_class: type, max_workers: int) -> tuple[type, queue.Queue[str]]:
    """``server_class`` bounded to ``max_workers``, putting "paused" on a queue at each gate no."""
    pauses: queue.Queue[str] = queue.Queue()

    class Gated(server_class):  # type: ignore[misc, valid-type]
        def _portico_can_accept(self) -> bool:
            answer: bool = super()._portico_can_accept()
            if not answer:
                pauses.put("paused")
            return answer

    Gated.max_workers = max_workers
    return Gated, pauses


def ask(address: Any, line: bytes) -> bytes:
    with socket.create_connection(address, timeout=DEADLINE) as sock:
        sock.sendall(line)
        sock.shutdown(socket.SHUT_WR)
        with sock.makefile("rb") as answers:
            return answers.read()


class UpperLine(portico.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())


# -- the pool behind a server --------------------------------------------


def test_never_more_than_max_workers_handlers_run_at_once_and_every_client_is_served() -> None:
    gauge = Gauge()
    entered: queue.Queue[bool] = queue.Queue()
    release = threading.Event()

    class Slow(portico.BaseRequestHandler):
        def handle(self) -> None:
            with gauge:
                entered.put(True)
                assert release.wait(DEADLINE)
                self.request.sendall(self.request.recv(64).upper())

    server_class, pauses = gated(PoolTCPServer, 2)
    with serving(server_class, Slow, poll_interval=None) as running:
        clients = [socket.create_connection(running.address, timeout=DEADLINE) for _ in range(5)]
        try:
            for index, client in enumerate(clients):
                client.sendall(b"client %d" % index)
            assert entered.get(timeout=DEADLINE) and entered.get(timeout=DEADLINE)
            assert pauses.get(timeout=DEADLINE) == "paused"
            # Both workers are busy and the server stopped accepting: the three
            # other clients wait in the listen backlog, not in the pool.
            stats = running.server.statistics()
            assert (stats.busy, stats.pending, stats.in_flight, stats.accept_pauses) == (2, 0, 2, 1)
            assert entered.empty()
            release.set()
            for index, client in enumerate(clients):
                assert client.recv(64) == b"CLIENT %d" % index
        finally:
            for client in clients:
                client.close()
    assert gauge.peak == 2
    stats = running.server.statistics()
    assert (stats.completed, stats.peak_busy, stats.in_flight, stats.workers) == (5, 2, 0, 0)
    assert stats.accept_pauses >= 1


def test_accepting_resumes_as_soon_as_a_worker_frees() -> None:
    entered = {name: threading.Event() for name in "ab"}
    release = {name: threading.Event() for name in "ab"}

    class Held(portico.BaseRequestHandler):
        def handle(self) -> None:
            name = self.request.recv(1).decode()
            entered[name].set()
            assert release[name].wait(DEADLINE)
            self.request.sendall(name.upper().encode())

    server_class, pauses = gated(PoolTCPServer, 1)
    with (
        serving(server_class, Held, poll_interval=None) as running,
        socket.create_connection(running.address, timeout=DEADLINE) as a,
    ):
        a.sendall(b"a")
        assert entered["a"].wait(DEADLINE)
        assert pauses.get(timeout=DEADLINE) == "paused"
        with socket.create_connection(running.address, timeout=DEADLINE) as b:
            b.sendall(b"b")  # connected through the backlog, and not accepted
            assert not entered["b"].is_set()
            assert running.server.statistics().in_flight == 1
            release["a"].set()
            assert a.recv(1) == b"A"
            # No poll interval: only the freed worker's wake-up resumes accepting.
            assert entered["b"].wait(DEADLINE)
            assert pauses.get(timeout=DEADLINE) == "paused"  # full again, with b
            release["b"].set()
            assert b.recv(1) == b"B"
    stats = running.server.statistics()
    assert (stats.accept_pauses, stats.completed, stats.peak_busy) == (2, 2, 1)


def test_datagrams_go_to_the_pool_workers() -> None:
    idents: list[int] = []

    class Upper(portico.DatagramRequestHandler):
        def handle(self) -> None:
            idents.append(threading.get_ident())
            self.wfile.write(self.packet.upper())

    class Three(PoolUDPServer):
        max_workers = 3

    with serving(Three, Upper, poll_interval=None) as running:

        def client(index: int) -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(DEADLINE)
                for number in range(10):
                    datagram = b"datagram %d.%d" % (index, number)
                    sock.sendto(datagram, running.address)
                    assert sock.recvfrom(64) == (datagram.upper(), running.address)

        client_threads(client, 4)
        workers = running.server.worker_pool.worker_threads()
    assert len(idents) == 40
    assert set(idents) <= {thread.ident for thread in workers}
    assert len(workers) <= 3
    assert running.server.statistics().completed == 40


def test_datagrams_wait_in_the_socket_buffer_while_the_pool_is_full() -> None:
    entered, release = threading.Event(), threading.Event()

    class Upper(portico.DatagramRequestHandler):
        def handle(self) -> None:
            if self.packet == b"hold":
                entered.set()
                assert release.wait(DEADLINE)
            self.wfile.write(self.packet.upper())

    server_class, pauses = gated(PoolUDPServer, 1)
    with (
        serving(server_class, Upper, poll_interval=None) as running,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        sock.settimeout(DEADLINE)
        sock.sendto(b"hold", running.address)
        assert entered.wait(DEADLINE)
        assert pauses.get(timeout=DEADLINE) == "paused"
        for number in range(3):
            sock.sendto(b"next %d" % number, running.address)
        assert running.server.statistics().in_flight == 1
        release.set()
        replies = [sock.recvfrom(64)[0] for _ in range(4)]
    assert replies == [b"HOLD", b"NEXT 0", b"NEXT 1", b"NEXT 2"]
    assert running.server.statistics().accept_pauses >= 1


def test_workers_are_reused_across_connections() -> None:
    idents: list[int] = []

    class Upper(UpperLine):
        def handle(self) -> None:
            idents.append(threading.get_ident())
            super().handle()

    class Four(PoolTCPServer):
        max_workers = 4

    threads_before = set(threading.enumerate())
    with serving(Four, Upper, poll_interval=None) as running:

        def client(index: int) -> None:
            for number in range(10):
                line = b"client %d connection %d\n" % (index, number)
                assert ask(running.address, line) == line.upper()

        client_threads(client, 10)
        workers = running.server.worker_pool.worker_threads()
    assert len(idents) == 100
    assert set(idents) <= {thread.ident for thread in workers}
    assert len(workers) <= 4
    assert running.server.statistics().completed == 100
    # server_close() joined every worker.
    assert set(threading.enumerate()) <= threads_before


def test_a_failing_handler_goes_through_handle_error_and_its_worker_serves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    idents: list[int] = []

    class Fragile(UpperLine):
        def handle(self) -> None:
            idents.append(threading.get_ident())
            if self.rfile.peek(5)[:5] == b"boom\n":
                raise ZeroDivisionError("handler failure on purpose")
            super().handle()

    class One(PoolTCPServer):
        max_workers = 1

    caplog.set_level(logging.ERROR, logger="portico")
    with serving(One, Fragile, poll_interval=None) as running:
        assert ask(running.address, b"boom\n") == b""
        assert ask(running.address, b"fine\n") == b"FINE\n"
    assert len(idents) == 2 and idents[0] == idents[1]
    [record] = [r for r in caplog.records if r.name == "portico.error"]
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError
    assert "Exception occurred during processing of request from 127.0.0.1:" in record.getMessage()


def test_without_block_on_close_server_close_leaves_requests_in_flight_running() -> None:
    entered, release = threading.Event(), threading.Event()

    class Held(portico.BaseRequestHandler):
        def handle(self) -> None:
            entered.set()
            assert release.wait(DEADLINE)
            self.request.sendall(b"late")

    class NoBlock(PoolTCPServer):
        block_on_close = False
        daemon_threads = True

    with serving(NoBlock, Held, poll_interval=None) as running:
        client = socket.create_connection(running.address, timeout=DEADLINE)
        client.sendall(b"x")
        assert entered.wait(DEADLINE)
        workers = running.server.worker_pool.worker_threads()
    # serving() has shut the server down and closed it; the handler still runs.
    with client:
        assert [(thread.is_alive(), thread.daemon) for thread in workers] == [(True, True)]
        release.set()
        assert client.recv(4) == b"late"
    workers[0].join(DEADLINE)
    assert not workers[0].is_alive()


def test_handle_request_hands_the_request_to_a_worker() -> None:
    with PoolTCPServer(("127.0.0.1", 0), UpperLine) as server:
        with socket.create_connection(server.server_address, timeout=DEADLINE) as client:
            client.sendall(b"one\n")
            server.handle_request()
            with client.makefile("rb") as answers:
                assert answers.readline() == b"ONE\n"
        workers = server.worker_pool.worker_threads()
    assert len(workers) == 1 and not workers[0].is_alive()
    assert server.statistics().completed == 1


def test_settings_may_be_set_on_the_instance_until_the_first_request() -> None:
    with PoolTCPServer(("127.0.0.1", 0), UpperLine) as server:
        server.max_workers = 3
        server.daemon_threads = True
        assert server.statistics().max_workers == 3
        assert ask_with_handle_request(server, b"x\n") == b"X\n"
        assert [thread.daemon for thread in server.worker_pool.worker_threads()] == [True]
    with PoolTCPServer(("127.0.0.1", 0), UpperLine) as server:
        assert server.statistics().max_workers == default_max_workers()
    assert 16 <= default_max_workers() <= 256


def ask_with_handle_request(server: Any, line: bytes) -> bytes:
    with socket.create_connection(server.server_address, timeout=DEADLINE) as client:
        client.sendall(line)
        client.shutdown(socket.SHUT_WR)
        server.handle_request()
        with client.makefile("rb") as answers:
            return answers.read()


def test_the_pool_mixin_composes_with_any_server_class() -> None:
    class Custom(portico.TCPServer):
        allow_reuse_address = True

    class PoolCustom(PoolMixIn, Custom):
        max_workers = 2

    with serving(PoolCustom, UpperLine, poll_interval=None) as running:
        assert ask(running.address, b"custom\n") == b"CUSTOM\n"
    assert running.server.statistics().completed == 1


# -- the WorkerPool engine on its own --------------------------------------


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An event the jobs wait on; set at teardown, so no worker stays blocked."""
    event = threading.Event()
    yield event
    event.set()


def waiting_job(release: threading.Event, done: list[Any]) -> Any:
    def run(request: Any, client_address: Any) -> None:
        assert release.wait(DEADLINE)
        done.append(request)

    return run


def test_drain_waits_for_the_requests_in_flight_until_its_deadline(
    release: threading.Event,
) -> None:
    done: list[Any] = []
    pool = WorkerPool(waiting_job(release, done), max_workers=2)
    try:
        pool.submit("one", None)
        pool.submit("two", None)
        assert pool.drain(deadline=0.0) is False  # long past: it returns at once
        release.set()
        assert pool.drain() is True
        assert sorted(done) == ["one", "two"]
        assert pool.drain(deadline=0.0) is True
    finally:
        pool.close()


def test_close_runs_what_was_submitted_then_joins_every_worker(release: threading.Event) -> None:
    done: list[Any] = []
    pool = WorkerPool(waiting_job(release, done), max_workers=1)
    for number in range(5):  # beyond the bound, as handle_request() may: they queue
        pool.submit(number, None)
    stats = pool.statistics()
    assert (stats.in_flight, stats.busy + stats.pending, stats.workers) == (5, 5, 1)
    release.set()
    pool.close()
    assert done == [0, 1, 2, 3, 4]
    assert not any(thread.is_alive() for thread in pool.worker_threads())
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(5, None)
    pool.close()  # again: nothing to do


def test_a_full_pool_wakes_its_server_once_a_worker_frees(release: threading.Event) -> None:
    woken = threading.Event()
    pool = WorkerPool(waiting_job(release, []), max_workers=1, wake=woken.set)
    try:
        assert pool.can_accept() is True
        pool.submit("one", None)
        assert pool.can_accept() is False
        assert pool.can_accept() is False  # asked again: still one pause
        assert not woken.is_set()
        release.set()
        assert woken.wait(DEADLINE)
        assert pool.can_accept() is True
        assert pool.statistics().accept_pauses == 1
    finally:
        pool.close()


def test_workers_start_on_demand_up_to_the_bound(release: threading.Event) -> None:
    done: list[Any] = []
    pool = WorkerPool(waiting_job(release, done), max_workers=3)
    try:
        assert pool.statistics().workers == 0
        pool.submit(0, None)
        assert pool.statistics().workers == 1
        for number in range(1, 5):
            pool.submit(number, None)
        stats = pool.statistics()
        assert (stats.workers, stats.in_flight) == (3, 5)
        release.set()
        assert pool.drain()
        pool.submit(5, None)  # a free worker takes it: no new thread
        assert pool.drain()
        assert (pool.statistics().workers, sorted(done)) == (3, [0, 1, 2, 3, 4, 5])
    finally:
        pool.close()


def test_an_error_escaping_the_request_is_logged_and_the_worker_survives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    idents: list[int] = []

    def run(request: Any, client_address: Any) -> None:
        idents.append(threading.get_ident())
        if request == "bad":
            raise SystemExit("not even this ends a worker")

    caplog.set_level(logging.ERROR, logger="portico")
    pool = WorkerPool(run, max_workers=1)
    try:
        pool.submit("bad", None)
        pool.submit("good", None)
        assert pool.drain()
    finally:
        pool.close()
    assert len(idents) == 2 and idents[0] == idents[1]
    assert pool.statistics().completed == 2
    [record] = [r for r in caplog.records if r.name == "portico.error"]
    assert record.getMessage() == "unexpected error in portico-pool-1"
    assert record.exc_info is not None and record.exc_info[0] is SystemExit


@pytest.mark.parametrize("bound", [0, -1])
def test_max_workers_must_be_positive(bound: int) -> None:
    with pytest.raises(ConfigurationError, match="at least 1"):
        WorkerPool(lambda request, address: None, max_workers=bound)


def test_statistics_are_frozen_snapshots() -> None:
    pool = WorkerPool(lambda request, address: None, max_workers=2)
    stats = pool.statistics()
    assert isinstance(stats, PoolStatistics)
    assert stats == PoolStatistics(
        engine="pool",
        in_flight=0,
        completed=0,
        max_workers=2,
        workers=0,
        busy=0,
        pending=0,
        peak_busy=0,
        accept_pauses=0,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.busy = 1  # type: ignore[misc]
    pool.close()


def test_a_worker_that_cannot_start_is_survived(
    release: threading.Event, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    done: list[Any] = []
    pool = WorkerPool(waiting_job(release, done), max_workers=2)
    start_worker = pool._start_worker

    def cannot_start() -> None:
        raise RuntimeError("can't start new thread")

    try:
        monkeypatch.setattr(pool, "_start_worker", cannot_start)
        with pytest.raises(RuntimeError):  # no worker at all: the caller must know
            pool.submit("refused", None)
        assert pool.statistics().in_flight == 0
        monkeypatch.setattr(pool, "_start_worker", start_worker)
        pool.submit("first", None)
        monkeypatch.setattr(pool, "_start_worker", cannot_start)
        caplog.set_level(logging.WARNING, logger="portico")
        pool.submit("second", None)  # waits for the one worker there is
        assert "cannot start another pool worker" in caplog.text
        release.set()
        assert pool.drain()
        assert done == ["first", "second"]
    finally:
        pool.close()
