"""``portico serve`` admission limits: a full server, an idle flood, the descriptor budget.

Real ``portico serve`` processes on loopback, every engine where the limit
applies (the fork engine only here: forking needs a process of its own).
"""

from __future__ import annotations

import shutil
import socket
import time
from contextlib import ExitStack

import pytest
from conversations import DEADLINE, converse, converse_on

from portico.engines import available_engines

pytestmark = pytest.mark.timeout(40)

ENGINES = [e for e in ("threads", "pool", "fork", "event", "async") if e in available_engines()]


def answered_eventually(address: tuple[str, int], line: bytes) -> bytes:
    """Ask until the answer is not the busy reply (a freed slot is freed a moment later)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        answer = converse(address, [line])[0]
        if answer != b"busy\r\n" or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_full_server_answers_busy_and_serves_again(portico_serve, engine: str) -> None:
    server = portico_serve(
        "upper", "--bind", "127.0.0.1:0", "--engine", engine, "--max-connections", "1",
        "--overload", "reject", "--busy-reply", r"busy\r\n",
    )  # fmt: skip
    address = server.addresses[0]
    with socket.create_connection(address, timeout=DEADLINE) as holder:
        assert converse_on(holder, [b"mine\n"]) == [b"MINE\n"]
        with socket.create_connection(address, timeout=DEADLINE) as extra:
            assert extra.makefile("rb").read() == b"busy\r\n"
    server.wait_for(r"turned away: max_connections reached")
    assert answered_eventually(address, b"again\n") == b"AGAIN\n"
    assert server.stop() == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_an_idle_flood_waits_out_its_timeout_then_the_client_is_served(
    portico_serve, engine: str
) -> None:
    flood = 8
    server = portico_serve(
        "upper", "--bind", "127.0.0.1:0", "--engine", engine,
        "--max-connections", str(flood), "--first-byte-timeout", "1",
    )  # fmt: skip
    address = server.addresses[0]
    with ExitStack() as stack:
        idle = [
            stack.enter_context(socket.create_connection(address, timeout=DEADLINE))
            for _ in range(flood)
        ]
        # Full: the next client waits in the backlog, and is served once the idle
        # ones are closed by their first-byte timeout; it is never left hanging.
        started = time.monotonic()
        assert converse(address, [b"patient\n"]) == [b"PATIENT\n"]
        assert time.monotonic() - started < DEADLINE
        for sock in idle:
            assert sock.recv(10) == b""  # closed by the server
    assert server.stop() == 0


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
@pytest.mark.parametrize("engine", ["threads", "event"])
def test_the_auto_limit_stops_accepting_before_descriptors_run_out(
    portico_serve, engine: str
) -> None:
    if engine not in available_engines():
        pytest.skip(f"{engine} is not installed")
    server = portico_serve(
        "upper", "--bind", "127.0.0.1:0", "--engine", engine,
        prefix=["prlimit", "--nofile=64:64", "--"],
    )  # fmt: skip
    address = server.addresses[0]
    with ExitStack() as stack:
        for _ in range(100):  # more than the server has descriptors
            sock = stack.enter_context(socket.create_connection(address, timeout=DEADLINE))
            sock.sendall(b"x\n")
    # The flood is gone: every slot frees, and a new client is served.
    assert answered_eventually(address, b"after\n") == b"AFTER\n"
    assert server.stop() == 0
    # Never a failed accept(): the server paused at its budget instead.
    assert "accepting paused" not in server.text
    assert "Too many open files" not in server.text
