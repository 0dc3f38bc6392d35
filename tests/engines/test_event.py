"""The event engine: blocking-style handlers as tasks, on one thread, cooperating with its loop.

The conformance suite (test_conformance.py) covers what every engine does;
these tests cover what is particular to this one: many connections on one
thread, the handler's socket API, timeouts, the blocking-call helpers, the
warning about a handler that holds the loop, and how closing ends tasks.
"""

from __future__ import annotations

import logging
import resource
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import portico
from portico.engines.event import (
    EventTCPServer,
    EventUDPServer,
    EventUnixStreamServer,
    run_in_thread,
    sleep,
)
from portico.testing import serving

pytestmark = pytest.mark.timeout(30)

DEADLINE = 10.0


class Upper(portico.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


class UpperDatagram(portico.DatagramRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.read().upper())


def connect(address: Any) -> socket.socket:
    return socket.create_connection(address, timeout=DEADLINE)


def ask(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line)
    with sock.makefile("rb") as replies:
        return replies.readline()


@pytest.fixture
def descriptors() -> Iterator[int]:
    """Raise this process's descriptor limit for the test; yields how many it may open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, 65536), hard))
    try:
        yield min(wanted, 65536)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_one_thread_holds_two_thousand_connections_and_answers_each(descriptors: int) -> None:
    count = min(2000, (descriptors - 100) // 2)
    threads_before = set(threading.enumerate())
    with serving(EventTCPServer, Upper) as running:
        clients = [connect(running.address) for _ in range(count)]
        try:
            for index, sock in enumerate(clients):
                sock.sendall(b"client %d\n" % index)
            for index, sock in enumerate(clients):
                assert sock.recv(64) == b"CLIENT %d\n" % index
            stats = running.server.statistics()
            assert stats.in_flight == count
            assert stats.peak_in_flight == count
            # The serving thread is the only one added (besides the time limits'
            # watchdog, one per process): no thread per connection.
            added = {thread.name for thread in set(threading.enumerate()) - threads_before}
            assert len(added - {"portico-connection-limits"}) == 1
        finally:
            for sock in clients:
                sock.close()


class SocketCalls(portico.BaseRequestHandler):
    """recv/sendall on self.request, with the request's timeout as the handler sees it."""

    def handle(self) -> None:
        self.request.settimeout(5.0)
        assert self.request.gettimeout() == 5.0
        data = b""
        while not data.endswith(b"\n"):
            chunk = self.request.recv(3)
            if not chunk:
                return
            data += chunk
        self.request.sendall(b"%s %r\n" % (data.strip(), self.request.gettimeout()))


def test_recv_and_sendall_on_the_request_cooperate_and_keep_the_timeout() -> None:
    with serving(EventTCPServer, SocketCalls) as running, connect(running.address) as sock:
        sock.sendall(b"a longer line than three bytes\n")
        assert sock.makefile("rb").readline() == b"a longer line than three bytes 5.0\n"


def test_nothing_global_is_patched() -> None:
    seen: dict[str, Any] = {}

    class Inspect(portico.BaseRequestHandler):
        def handle(self) -> None:
            with socket.socket() as plain:
                seen["plain"] = type(plain)
            # Under the engine's defaults, the byte counter and the time limits' guard wrap it.
            request = self.request
            while hasattr(request, "raw"):
                request = request.raw
            seen["request"] = type(request)
            seen["recv"] = socket.socket.recv
            self.request.sendall(b"done\n")

    original = socket.socket.recv
    with serving(EventTCPServer, Inspect) as running, connect(running.address) as sock:
        assert sock.recv(16) == b"done\n"
    assert seen["plain"] is socket.socket
    assert seen["recv"] is original
    assert issubclass(seen["request"], socket.socket)
    assert seen["request"] is not socket.socket


class TimesOut(portico.StreamRequestHandler):
    timeout = 0.2

    def handle(self) -> None:
        self.rfile.readline()


def test_the_handler_timeout_raises_in_the_handler_and_closes_only_that_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with serving(EventTCPServer, TimesOut) as running, connect(running.address) as silent:
        assert silent.recv(1) == b""  # closed by the server once the handler timed out
    assert any(
        record.exc_info and record.exc_info[0] is TimeoutError
        for record in caplog.records
        if record.name == "portico.error"
    )


def test_run_in_thread_waits_without_holding_the_loop() -> None:
    release = threading.Event()

    class Blocking(portico.StreamRequestHandler):
        def handle(self) -> None:
            line = self.rfile.readline()
            if line == b"block\n":
                # Would deadlock if the loop waited: the test sets the event only
                # after another client has been answered.
                answer = run_in_thread(lambda: release.wait(DEADLINE) and b"RELEASED\n")
                self.wfile.write(answer)
            else:
                self.wfile.write(line.upper())

    with serving(EventTCPServer, Blocking) as running:
        blocked, other = connect(running.address), connect(running.address)
        with blocked, other:
            blocked.sendall(b"block\n")
            assert ask(other, b"meanwhile\n") == b"MEANWHILE\n"
            release.set()
            assert blocked.makefile("rb").readline() == b"RELEASED\n"


def test_run_in_thread_raises_what_the_call_raised() -> None:
    class Failing(portico.BaseRequestHandler):
        def handle(self) -> None:
            try:
                run_in_thread(int, "not a number")
            except ValueError as exc:
                self.request.sendall(b"%s\n" % type(exc).__name__.encode())

    with serving(EventTCPServer, Failing) as running, connect(running.address) as sock:
        assert sock.recv(32) == b"ValueError\n"


def test_the_helpers_work_outside_the_event_engine() -> None:
    assert run_in_thread(sum, [1, 2, 3]) == 6
    started = time.monotonic()
    sleep(0.01)
    assert time.monotonic() - started >= 0.01


def test_sleep_lets_other_connections_be_served() -> None:
    class Sleepy(portico.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                if line == b"nap\n":
                    sleep(0.3)
                self.wfile.write(line.upper())

    with serving(EventTCPServer, Sleepy) as running:
        napping, other = connect(running.address), connect(running.address)
        with napping, other:
            napping.sendall(b"nap\n")
            started = time.monotonic()
            assert ask(other, b"quick\n") == b"QUICK\n"
            quick = time.monotonic() - started
            assert napping.makefile("rb").readline() == b"NAP\n"
            assert quick < time.monotonic() - started  # the nap ended after the quick answer
    assert running.server.statistics().loop_blocks == 0


def test_a_handler_that_holds_the_loop_is_logged_with_how_long(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Hog(portico.StreamRequestHandler):
        def handle(self) -> None:
            self.rfile.readline()
            time.sleep(0.25)  # the mistake the warning is for
            self.wfile.write(b"late\n")

    caplog.set_level(logging.WARNING, logger="portico.server")
    with serving(EventTCPServer, Hog) as running, connect(running.address) as sock:
        assert ask(sock, b"go\n") == b"late\n"
    stats = running.server.statistics()  # measured once the handler gives the loop back
    assert stats.loop_blocks == 1
    assert stats.longest_block >= 0.25
    [warning] = [r for r in caplog.records if "blocked the event loop" in r.getMessage()]
    message = warning.getMessage()
    assert "the handler for 127.0.0.1:" in message
    held = float(message.split("blocked the event loop for ")[1].split(" s")[0])
    assert held >= 0.25


def test_datagrams_are_handled_as_tasks() -> None:
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with serving(EventUDPServer, UpperDatagram) as running, client:
        client.settimeout(DEADLINE)
        for index in range(20):
            client.sendto(b"datagram %d" % index, running.address)
            assert client.recv(64) == b"DATAGRAM %d" % index
    # Counted once the task ends, which is just after its reply went out.
    assert running.server.statistics().completed == 20


def test_unix_stream_sockets(tmp_path: Any) -> None:
    path = str(tmp_path / "event.sock")
    with serving(EventUnixStreamServer(path, Upper)), socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(DEADLINE)
        sock.connect(path)
        assert ask(sock, b"over unix\n") == b"OVER UNIX\n"


def test_handle_request_serves_one_connection_to_its_end() -> None:
    with EventTCPServer(("127.0.0.1", 0), Upper) as server:
        server.timeout = DEADLINE
        with connect(server.server_address) as sock:
            sock.sendall(b"one\ntwo\n")
            sock.shutdown(socket.SHUT_WR)
            server.handle_request()
            assert server.statistics().in_flight == 0
            assert sock.makefile("rb").read() == b"ONE\nTWO\n"


def test_server_close_from_another_thread_closes_what_no_loop_runs_any_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = threading.Event()

    class Waits(portico.StreamRequestHandler):
        def handle(self) -> None:
            started.set()
            self.rfile.readline()

    server = EventTCPServer(("127.0.0.1", 0), Waits)
    server.block_on_close = False  # so serve_forever() returns without finishing them
    with connect(server.server_address) as client:
        with serving(server):
            assert started.wait(DEADLINE)
        # serving() shut the server down, then closed it from this thread.
        assert client.recv(1) == b""
    assert server.statistics().in_flight == 0
    assert any("closing 1 connection(s)" in r.getMessage() for r in caplog.records)


def test_server_close_in_the_serving_thread_ends_waiting_handlers_with_their_cleanup() -> None:
    ended: list[str] = []

    class Waits(portico.StreamRequestHandler):
        def handle(self) -> None:
            try:
                self.rfile.readline()
            except BaseException as exc:
                ended.append(type(exc).__name__)
                raise

        def finish(self) -> None:
            ended.append("finish")
            super().finish()

    server = EventTCPServer(("127.0.0.1", 0), Waits)
    server.block_on_close = False
    client = connect(server.server_address)
    try:
        server.timeout = DEADLINE

        def shut_down_after_first() -> None:
            server.shutdown()

        server.service_actions = shut_down_after_first  # type: ignore[method-assign]
        server.serve_forever(poll_interval=0.05)
        server.server_close()
        assert ended == ["GreenletExit", "finish"]
        assert client.recv(1) == b""
    finally:
        client.close()


def test_a_burst_of_datagrams_is_taken_in_batches_and_each_answered() -> None:
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with serving(EventUDPServer, UpperDatagram) as running, client:
        client.settimeout(DEADLINE)
        sent = {b"burst %03d" % index for index in range(200)}
        for payload in sorted(sent):  # all in flight before the first answer is read
            client.sendto(payload, running.address)
        answers = {client.recv(64) for _ in sent}
        assert answers == {payload.upper() for payload in sent}
        assert running.server.socket.gettimeout() == 0.0  # the engine made it non-blocking
