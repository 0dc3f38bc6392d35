"""``portico serve --engine async``: built-in and module handlers, the access log, signals."""

from __future__ import annotations

import signal
import socket
import textwrap

import pytest
from conversations import DEADLINE, converse, converse_on, udp_exchange

pytestmark = pytest.mark.timeout(20)

LOCAL = "127.0.0.1:0"


@pytest.mark.parametrize(
    ("handler", "line", "reply"),
    [("upper", b"Async\n", b"ASYNC\n"), ("echo", b"Async\n", b"Async\n")],
)
def test_builtin_handlers_over_tcp_with_the_access_log(portico_serve, handler, line, reply):
    server = portico_serve(handler, "--engine", "async", "--bind", LOCAL)
    with socket.create_connection(server.addresses[0], timeout=DEADLINE) as sock:
        port = sock.getsockname()[1]
        assert converse_on(sock, [line, line]) == [reply, reply]
    server.wait_for(
        rf"INFO portico\.access: connection \d+ from 127\.0\.0\.1:{port} "
        r"closed after \d+\.\d{3} s: 12 bytes in, 12 bytes out; completed$"
    )
    server.wait_for(r"INFO portico\.cli: engine async$")
    assert server.stop() == 0


def test_discard_answers_nothing(portico_serve):
    server = portico_serve("discard", "--engine", "async", "--bind", LOCAL)
    with socket.create_connection(server.addresses[0], timeout=DEADLINE) as sock:
        sock.sendall(b"x" * 100000)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(10) == b""
    server.wait_for(r"closed after \d+\.\d{3} s: 100000 bytes in, 0 bytes out; completed$")


def test_udp_with_the_access_log(portico_serve):
    server = portico_serve("--udp", "--engine", "async", "--bind", LOCAL)
    assert udp_exchange(server.addresses[0], b"datagram") == b"DATAGRAM"
    server.wait_for(
        r"portico\.access: datagram \d+ from 127\.0\.0\.1:\d+ handled in "
        r".*8 bytes in, 8 bytes out; completed$"
    )
    assert server.stop() == 0


def test_a_module_async_handler(portico_serve, tmp_path):
    (tmp_path / "areverse.py").write_text(
        textwrap.dedent(
            """
            import asyncio
            from portico.engines import AsyncStreamRequestHandler

            class Reverse(AsyncStreamRequestHandler):
                async def handle(self):
                    async for line in self.reader:
                        await asyncio.sleep(0)
                        self.writer.write(line.rstrip(b"\\n")[::-1] + b"\\n")
                        await self.writer.drain()
            """
        )
    )
    server = portico_serve(
        "areverse:Reverse", "--engine", "async", "--bind", LOCAL, pythonpath=tmp_path
    )
    assert converse(server.addresses[0], [b"abc\n", b"portico\n"]) == [b"cba\n", b"ocitrop\n"]


def test_a_blocking_handler_with_the_async_engine_is_a_usage_error(portico_run):
    result = portico_run(
        "serve", "socketserver:StreamRequestHandler", "--engine", "async", "--bind", LOCAL
    )
    assert result.returncode == 2
    assert "not an async handler" in result.stderr
    assert "--engine event" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signals_with_no_drain_time_close_connected_clients(portico_serve, signum):
    server = portico_serve("--engine", "async", "--bind", LOCAL, "--drain-timeout", "0")
    with socket.create_connection(server.addresses[0], timeout=DEADLINE) as idle:
        assert converse_on(idle, [b"still here\n"]) == [b"STILL HERE\n"]
        assert server.stop(signum) == 0
        assert idle.recv(10) == b""  # the connection was closed, not left hanging
    assert f"stopping on {signal.Signals(signum).name}" in server.stderr
    assert "Traceback" not in server.stderr
