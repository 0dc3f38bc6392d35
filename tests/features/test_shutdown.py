"""shutdown() wakes the loop at once, from any thread, at any time, any number of times."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest

import portico
from portico.errors import ListenerError
from portico.testing import serving

# A poll interval no test would survive: if shutdown() waited for the poll,
# the test would hit its timeout instead of passing.
FOREVER = 3600.0


class Upper(portico.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


def ask(address: Any, line: bytes = b"ping\n") -> bytes:
    with socket.create_connection(address, timeout=5) as client:
        client.sendall(line)
        client.shutdown(socket.SHUT_WR)
        return client.makefile("rb").read()


def start(server: Any, poll_interval: float = FOREVER) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, args=(poll_interval,), daemon=True)
    thread.start()
    assert server._portico_serving.wait(5)
    return thread


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "server_class", [portico.TCPServer, portico.ThreadingTCPServer, portico.UDPServer]
)
def test_shutdown_does_not_wait_for_the_poll_interval(server_class: type) -> None:
    server = server_class(("127.0.0.1", 0), Upper)
    thread = start(server)
    server.shutdown()
    thread.join(5)
    assert not thread.is_alive()
    server.server_close()


@pytest.mark.timeout(10)
def test_poll_interval_still_paces_service_actions() -> None:
    ticks = threading.Event()
    counted: list[int] = []

    class Ticking(portico.TCPServer):
        def service_actions(self) -> None:
            counted.append(1)
            if len(counted) >= 3:
                ticks.set()

    with serving(Ticking, Upper, poll_interval=0.01):
        assert ticks.wait(5), "service_actions() was not called while idle"


class Stopper(portico.StreamRequestHandler):
    def handle(self) -> None:
        self.rfile.readline()
        # A serial server runs this in the serving thread: the stdlib deadlocks here.
        self.server.shutdown()
        self.wfile.write(b"stopping\n")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("server_class", [portico.TCPServer, portico.ThreadingTCPServer])
def test_shutdown_from_a_handler_returns(server_class: type) -> None:
    server = server_class(("127.0.0.1", 0), Stopper)
    thread = start(server)
    assert ask(server.server_address) == b"stopping\n"
    thread.join(5)
    assert not thread.is_alive()
    server.server_close()


@pytest.mark.timeout(10)
def test_shutdown_before_serve_forever_returns_and_the_loop_then_exits_at_once() -> None:
    server = portico.TCPServer(("127.0.0.1", 0), Upper)
    server.shutdown()  # the stdlib hangs here forever
    server.shutdown()
    server.serve_forever(FOREVER)  # a pending shutdown request ends it, as in the stdlib
    server.server_close()


@pytest.mark.timeout(10)
def test_shutdown_twice_and_serving_again() -> None:
    server = portico.TCPServer(("127.0.0.1", 0), Upper)
    for _ in range(2):
        thread = start(server)
        assert ask(server.server_address) == b"PING\n"
        server.shutdown()
        server.shutdown()
        thread.join(5)
        assert not thread.is_alive()
    server.server_close()


def serve_until_signalled(deliver: Callable[[int], None]) -> None:
    """Serve in this (the main) thread; another thread sends SIGUSR1 once serving."""
    server = portico.TCPServer(("127.0.0.1", 0), Upper)
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: server.shutdown())
    sender = threading.Thread(
        target=lambda: server._portico_serving.wait(5) and deliver(signal.SIGUSR1)
    )
    try:
        sender.start()
        server.serve_forever(FOREVER)
    finally:
        sender.join(5)
        signal.signal(signal.SIGUSR1, previous)
        server.server_close()


@pytest.mark.timeout(10)
def test_shutdown_from_a_signal_handler_in_the_serving_thread() -> None:
    main = threading.main_thread().ident
    assert main is not None
    serve_until_signalled(lambda signum: signal.pthread_kill(main, signum))


@pytest.mark.timeout(10)
def test_a_signal_delivered_to_another_thread_still_wakes_the_loop() -> None:
    # With the signal blocked here, the kernel can only deliver it to the sending
    # thread; the main thread would sleep in poll() for the whole FOREVER.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        serve_until_signalled(lambda signum: os.kill(os.getpid(), signum))
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})


@pytest.mark.timeout(10)
def test_serving_leaves_the_signal_wakeup_fd_as_it_found_it() -> None:
    main = threading.main_thread().ident
    assert main is not None and signal.set_wakeup_fd(-1) == -1
    serve_until_signalled(lambda signum: signal.pthread_kill(main, signum))
    assert signal.set_wakeup_fd(-1) == -1
    # An owner already in place (an event loop, say) keeps its descriptor.  (A
    # signal could then arrive just before poll() and go unnoticed until the poll
    # interval: this loop is stopped by shutdown() from another thread instead.)
    theirs, other_end = socket.socketpair()
    theirs.setblocking(False)
    try:
        signal.set_wakeup_fd(theirs.fileno())
        server = portico.TCPServer(("127.0.0.1", 0), Upper)
        stopper = threading.Thread(
            target=lambda: server._portico_serving.wait(5) and server.shutdown()
        )
        stopper.start()
        server.serve_forever(FOREVER)
        stopper.join(5)
        server.server_close()
        assert signal.set_wakeup_fd(-1) == theirs.fileno()
    finally:
        signal.set_wakeup_fd(-1)
        theirs.close()
        other_end.close()


@pytest.mark.timeout(10)
def test_a_broken_listener_stops_serving_with_a_clear_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = portico.TCPServer(("127.0.0.1", 0), Upper)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            server.serve_forever(FOREVER)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert server._portico_serving.wait(5)
    # On Linux a listening socket shut down for reading wakes poll() and
    # accept() then fails with EINVAL: the listener is unusable.
    server.socket.shutdown(socket.SHUT_RDWR)
    thread.join(5)
    assert not thread.is_alive()
    server.server_close()
    assert len(failure) == 1 and isinstance(failure[0], ListenerError)
    assert isinstance(failure[0], OSError) and failure[0].errno == errno.EINVAL
    assert "listening socket failed" in str(failure[0])
    assert any(r.levelno == logging.ERROR and r.name == "portico.server" for r in caplog.records)


@pytest.mark.timeout(10)
def test_capacity_errors_back_off_without_spinning_and_recover(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[str] = []

    class Exhausted(portico.TCPServer):
        def get_request(self) -> Any:
            if len(attempts) < 3:
                attempts.append("EMFILE")
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
            attempts.append("accepted")
            return super().get_request()

    caplog.set_level(logging.INFO, logger="portico")
    with serving(Exhausted, Upper) as running:
        assert ask(running.address) == b"PING\n"
    # Paused listeners are not selected on: one attempt per back-off step, no spin.
    assert attempts == ["EMFILE", "EMFILE", "EMFILE", "accepted"]
    messages = [r.getMessage() for r in caplog.records if r.name == "portico.server"]
    assert sum("accepting paused" in m for m in messages) == 1
    assert any("accepting again after 3 failed attempts" in m for m in messages)
    assert running.server._portico_accept.counts["EMFILE"] == 3


@pytest.mark.timeout(10)
def test_connection_level_accept_errors_are_retried(caplog: pytest.LogCaptureFixture) -> None:
    failed = threading.Event()

    class Aborting(portico.TCPServer):
        def get_request(self) -> Any:
            if not failed.is_set():
                failed.set()
                raise ConnectionAbortedError(errno.ECONNABORTED, "aborted")
            return super().get_request()

    with serving(Aborting, Upper) as running:
        # The first accept "fails"; the connection stays in the backlog and is served next.
        assert ask(running.address) == b"PING\n"
    assert not running.server._portico_accept.paused
