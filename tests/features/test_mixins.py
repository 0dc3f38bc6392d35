"""ThreadingMixIn and ForkingMixIn keep the stdlib's behaviour: reaping, joining, limits."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import pytest

import portico
from portico.testing import serving


class Upper(portico.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


class OneLine(portico.StreamRequestHandler):
    """Answers one line and returns.

    A forked child inherits every descriptor of this test process, client
    sockets included, so it must never wait for an end of file that its own
    copy of the client socket would hold back.
    """

    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())


def ask(address: Any, line: bytes = b"ping\n") -> bytes:
    with socket.create_connection(address, timeout=5) as client:
        client.sendall(line)
        client.shutdown(socket.SHUT_WR)
        return client.makefile("rb").read()


def test_finished_request_threads_are_reaped_as_new_ones_start() -> None:
    with serving(portico.ThreadingTCPServer, Upper) as running:
        for _ in range(20):
            assert ask(running.address) == b"PING\n"
        tracked = running.server._threads
        for thread in list(tracked):
            thread.join(5)
        # The next append() reaps every finished thread: only the new one stays.
        assert ask(running.address) == b"PING\n"
        assert len(tracked) <= 1
        assert all(isinstance(t, threading.Thread) for t in tracked)


def test_server_close_joins_request_threads_and_leaks_none() -> None:
    before = set(threading.enumerate())
    release = threading.Event()
    entered = threading.Event()

    class Slow(portico.BaseRequestHandler):
        def handle(self) -> None:
            entered.set()
            release.wait(5)
            self.request.sendall(b"done")

    with serving(portico.ThreadingTCPServer, Slow) as running:
        client = socket.create_connection(running.address, timeout=5)
        assert entered.wait(5)
        closer = threading.Timer(0.0, release.set)
        closer.start()
    # serving() called server_close(), which joined the request thread.
    assert client.recv(16) == b"done"
    client.close()
    closer.join(5)
    assert set(threading.enumerate()) <= before | {threading.current_thread()}


def test_daemon_threads_are_not_tracked_and_no_block_on_close_never_joins() -> None:
    class Daemonic(portico.ThreadingTCPServer):
        daemon_threads = True

    class NoBlock(portico.ThreadingTCPServer):
        block_on_close = False

    for server_class in (Daemonic, NoBlock):
        with serving(server_class, Upper) as running:
            assert ask(running.address) == b"PING\n"
            assert list(vars(running.server).get("_threads", [])) == []


def test_instance_attributes_set_after_init_are_honoured() -> None:
    server = portico.ThreadingTCPServer(("127.0.0.1", 0), Upper)
    server.daemon_threads = True  # werkzeug and Django set these on the instance
    server.block_on_close = False
    with serving(server) as running:
        assert ask(running.address) == b"PING\n"
        assert "_threads" not in vars(running.server)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
class TestForking:
    def test_children_are_reaped_and_none_is_left_a_zombie(self) -> None:
        with serving(portico.ForkingTCPServer, OneLine) as running:
            for _ in range(5):
                assert ask(running.address) == b"PING\n"
            children = set(running.server.active_children or ())
        # server_close() waited for every child (block_on_close): none is left to reap.
        assert running.server.active_children == set()
        for pid in children:
            with pytest.raises(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)

    def test_max_children_bounds_the_live_children(self) -> None:
        class Two(portico.ForkingTCPServer):
            max_children = 2

        peaks: list[int] = []

        class Watched(Two):
            def process_request(self, request: Any, client_address: Any) -> None:
                super().process_request(request, client_address)
                peaks.append(len(self.active_children or ()))

            def collect_children(self, *, blocking: bool = False) -> None:
                super().collect_children(blocking=blocking)

        with serving(Watched, OneLine) as running:
            clients = [socket.create_connection(running.address, timeout=5) for _ in range(4)]
            for client in clients:
                client.sendall(b"x\n")
                client.shutdown(socket.SHUT_WR)
                assert client.makefile("rb").read() == b"X\n"
                client.close()
        # Before each fork, collect_children() waits while max_children are alive.
        assert peaks and max(peaks) <= 3

    def test_collect_children_blocking_waits_for_running_children(self) -> None:
        # handle_request() in this thread: nothing else reaps, so the child is still ours.
        with portico.ForkingTCPServer(("127.0.0.1", 0), OneLine) as server:
            with socket.create_connection(server.server_address, timeout=5) as client:
                client.sendall(b"a\n")
                server.handle_request()
                assert client.makefile("rb").readline() == b"A\n"
            assert len(server.active_children or ()) == 1
            server.collect_children(blocking=True)
            assert server.active_children == set()

    def test_a_failing_child_exits_with_status_1_and_the_parent_serves_on(self) -> None:
        class Failing(portico.BaseRequestHandler):
            def handle(self) -> None:
                if self.request.recv(16) == b"boom":
                    raise ValueError("child failure on purpose")
                self.request.sendall(b"fine")

        class Quiet(portico.ForkingTCPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        # handle_request() in this thread: the test alone reaps, so it sees the status.
        with Quiet(("127.0.0.1", 0), Failing) as server:
            with socket.create_connection(server.server_address, timeout=5) as client:
                client.sendall(b"boom")
                server.handle_request()
                assert client.recv(16) == b""
            [pid] = server.active_children or ()
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 1
            server.active_children = set()
            with socket.create_connection(server.server_address, timeout=5) as client:
                client.sendall(b"ok")
                server.handle_request()
                assert client.recv(16) == b"fine"
