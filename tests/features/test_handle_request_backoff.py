"""handle_request() waits out an accept back-off instead of failing again at once."""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

import pytest

import portico

pytestmark = pytest.mark.timeout(10)


class Unused(portico.BaseRequestHandler):
    def handle(self) -> None:
        raise AssertionError("no request is ever accepted")


class OutOfDescriptors(portico.TCPServer):
    """Every accept fails as it does when the process has no descriptor left."""

    attempts = 0

    def get_request(self) -> Any:
        self.attempts += 1
        raise OSError(errno.EMFILE, "Too many open files")


def test_a_handle_request_loop_backs_off_instead_of_spinning() -> None:
    with OutOfDescriptors(("127.0.0.1", 0), Unused) as server:
        server.timeout = 1.0
        # A pending connection keeps the listener readable, as in a real exhaustion.
        with socket.create_connection(server.server_address, timeout=5):
            stop = time.monotonic() + 0.3
            while time.monotonic() < stop:
                server.handle_request()
    # Back-off from 10 ms, doubling: 10 + 20 + 40 + 80 + 160 ms covers the 0.3 s.
    assert 3 <= server.attempts <= 7


def test_a_back_off_longer_than_the_timeout_ends_in_handle_timeout() -> None:
    timeouts: list[float] = []

    class Counting(OutOfDescriptors):
        def handle_timeout(self) -> None:
            timeouts.append(time.monotonic())

    server = Counting(("127.0.0.1", 0), Unused)
    with server, socket.create_connection(server.server_address, timeout=5):
        for _ in range(8):  # the pause doubles from 10 ms to 1 s, past the timeout
            server._portico_accept.pause()
        server.timeout = 0.05
        started = time.monotonic()
        server.handle_request()
    assert len(timeouts) == 1
    assert 0.05 <= timeouts[0] - started < 0.5
    assert server.attempts == 0
