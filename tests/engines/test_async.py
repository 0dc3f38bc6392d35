"""The async engine's own API: readers and writers, flow control, stopping, both loops.

The conformance suite (``test_conformance.py``) runs on the async engine
too; these tests cover what only it has.  Every server runs in a background
thread through ``portico.testing.serving()``, on uvloop and on asyncio's own
loop, and must leave no thread or descriptor behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from engine_support import DEADLINE, client_threads, open_fds, open_process_wide_descriptors

import portico
from portico.engines import (
    AsyncDatagramRequestHandler,
    AsyncStreamRequestHandler,
    AsyncTCPServer,
    AsyncUDPServer,
    server_class,
)
from portico.errors import ConfigurationError
from portico.testing import serving

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["uvloop", "asyncio"])
def use_uvloop(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "uvloop")


@pytest.fixture
def no_leaks() -> Iterator[None]:
    open_process_wide_descriptors("async")
    threads, fds = set(threading.enumerate()), open_fds()
    yield
    assert {t for t in threading.enumerate() if t.is_alive()} - threads == set()
    assert open_fds() - fds == set()


def make(base: Any, handler: Any, use_uvloop: bool, **attrs: Any) -> Any:
    address = attrs.pop("address", ("127.0.0.1", 0))
    cls = type("TestServer", (server_class("async", base),), {"use_uvloop": use_uvloop, **attrs})
    return cls(address, handler)


def connect(address: Any) -> socket.socket:
    return socket.create_connection(address, timeout=DEADLINE)


def exchange(address: Any, payload: bytes) -> bytes:
    """Send ``payload``, half-close, read everything until the server closes."""
    with connect(address) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


class Reads(AsyncStreamRequestHandler):
    """A line, then 3 bytes exactly, then up to 5, then until ``;``, then the rest."""

    async def handle(self) -> None:
        line = await self.reader.readline()
        exact = await self.reader.readexactly(3)
        some = await self.reader.read(5)
        until = await self.reader.readuntil(b";")
        rest = await self.reader.read()
        after = await self.reader.readline()
        for part in (line, exact, some, until, rest, after):
            self.writer.write(b"[" + part + b"]")


def test_reads_follow_rfile_semantics(use_uvloop: bool, no_leaks: None) -> None:
    with serving(make(portico.TCPServer, Reads, use_uvloop)) as running:
        reply = exchange(running.address, b"line\nabcdefghij;tail")
    assert reply == b"[line\n][abc][defgh][ij;][tail][]"


class Lines(AsyncStreamRequestHandler):
    async def handle(self) -> None:
        count = 0
        async for line in self.reader:
            count += 1
            self.writer.write(line.upper())
        self.writer.write(b"%d lines\n" % count)


def test_async_iteration_and_a_partial_last_line(use_uvloop: bool, no_leaks: None) -> None:
    with serving(make(portico.TCPServer, Lines, use_uvloop)) as running:
        assert exchange(running.address, b"a\nb\nc") == b"A\nB\nC3 lines\n"


class Exactly(AsyncStreamRequestHandler):
    async def handle(self) -> None:
        try:
            await self.reader.readexactly(10)
        except asyncio.IncompleteReadError as exc:
            self.writer.write(b"incomplete: " + exc.partial)


def test_readexactly_at_eof_raises_incomplete_read(use_uvloop: bool, no_leaks: None) -> None:
    with serving(make(portico.TCPServer, Exactly, use_uvloop)) as running:
        assert exchange(running.address, b"short") == b"incomplete: short"


class Sleeps(AsyncStreamRequestHandler):
    async def handle(self) -> None:
        async for line in self.reader:
            await asyncio.sleep(0.001)
            await asyncio.sleep(0)
            task = asyncio.current_task()
            self.writer.write(line.upper() if task is not None else b"no task\n")


def test_handlers_await_asyncio_and_have_a_current_task(use_uvloop: bool, no_leaks: None) -> None:
    with serving(make(portico.TCPServer, Sleeps, use_uvloop)) as running:

        def client(index: int) -> bytes:
            return exchange(running.address, b"one\ntwo %d\n" % index)

        assert client_threads(client, 20) == [b"ONE\nTWO %d\n" % i for i in range(20)]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout() is 3.11+")
def test_asyncio_timeout_and_wait_for_work_inside_handlers(use_uvloop: bool) -> None:
    class Times(AsyncStreamRequestHandler):
        async def handle(self) -> None:
            try:
                async with asyncio.timeout(0.01):
                    await self.reader.readline()
            except TimeoutError:
                self.writer.write(b"timeout\n")
            try:
                await asyncio.wait_for(self.reader.readline(), 0.01)
            except TimeoutError:
                self.writer.write(b"wait_for\n")
            self.writer.write(await self.reader.readline())

    with (
        serving(make(portico.TCPServer, Times, use_uvloop)) as running,
        connect(running.address) as sock,
        sock.makefile("rb") as replies,
    ):
        assert replies.readline() == b"timeout\n"
        assert replies.readline() == b"wait_for\n"
        sock.sendall(b"still reading\n")
        assert replies.readline() == b"still reading\n"


class Floods(AsyncStreamRequestHandler):
    """Writes 64 MiB, draining, to a client that reads nothing until told."""

    sent: list[int]
    written: threading.Event

    async def handle(self) -> None:
        chunk = b"x" * 65536
        for _ in range(1024):
            self.writer.write(chunk)
            await self.writer.drain()
            self.sent.append(len(chunk))
            if sum(self.sent) >= 8 * 1024 * 1024 and not self.written.is_set():
                self.written.set()


def test_drain_waits_for_a_client_that_does_not_read(use_uvloop: bool, no_leaks: None) -> None:
    sent: list[int] = []
    written = threading.Event()
    handler = type("F", (Floods,), {"sent": sent, "written": written})
    with serving(make(portico.TCPServer, handler, use_uvloop)) as running:
        with connect(running.address) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            # The handler stops in drain(): far less than 64 MiB is written.
            assert not written.wait(0.5)
            assert sum(sent) < 8 * 1024 * 1024
            received = 0
            while received < 64 * 1024 * 1024:
                chunk = sock.recv(1 << 20)
                assert chunk
                received += len(chunk)
        assert sum(sent) == 64 * 1024 * 1024


class Refusing(AsyncStreamRequestHandler):
    async def handle(self) -> None:
        self.writer.write(b"served\n")


def test_verify_request_refusal_closes_the_connection(use_uvloop: bool, no_leaks: None) -> None:
    seen: list[Any] = []

    def verify(self: Any, request: Any, client_address: Any) -> bool:
        seen.append(client_address)
        return len(seen) > 1

    server = make(portico.TCPServer, Refusing, use_uvloop, verify_request=verify)
    with serving(server) as running:
        assert exchange(running.address, b"") == b""
        assert exchange(running.address, b"") == b"served\n"
    assert [address[0] for address in seen] == ["127.0.0.1"] * 2


class Fails(AsyncStreamRequestHandler):
    finished: list[bool]

    async def handle(self) -> None:
        line = await self.reader.readline()
        if line == b"boom\n":
            raise ZeroDivisionError("on purpose")
        self.writer.write(line)

    async def finish(self) -> None:
        self.finished.append(True)


def test_handler_exceptions_are_logged_and_finish_runs(
    use_uvloop: bool, no_leaks: None, caplog: pytest.LogCaptureFixture
) -> None:
    finished: list[bool] = []
    handler = type("Fails2", (Fails,), {"finished": finished})
    server = make(portico.TCPServer, handler, use_uvloop)
    with caplog.at_level(logging.ERROR, "portico.error"), serving(server) as running:
        assert exchange(running.address, b"boom\n") == b""
        assert exchange(running.address, b"fine\n") == b"fine\n"
    assert finished == [True, True]
    errors = [r for r in caplog.records if r.name == "portico.error"]
    assert len(errors) == 1
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is ZeroDivisionError


class StopsServer(AsyncStreamRequestHandler):
    async def handle(self) -> None:
        await self.reader.readline()
        self.server.shutdown()  # from inside a handler: returns at once
        self.writer.write(b"stopping\n")


def test_shutdown_from_a_handler(use_uvloop: bool, no_leaks: None) -> None:
    server = make(portico.TCPServer, StopsServer, use_uvloop)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        assert exchange(server.server_address, b"stop\n") == b"stopping\n"
        thread.join(DEADLINE)
        assert not thread.is_alive()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(DEADLINE)


class Holds(AsyncStreamRequestHandler):
    events: list[str]
    started: threading.Event

    async def handle(self) -> None:
        self.started.set()
        try:
            await self.reader.readline()
        except asyncio.CancelledError:
            self.events.append("cancelled")
            raise

    async def finish(self) -> None:
        self.events.append("finish")


def test_server_close_cancels_when_block_on_close_is_false(
    use_uvloop: bool, no_leaks: None
) -> None:
    events: list[str] = []
    started = threading.Event()
    handler = type("Holds2", (Holds,), {"events": events, "started": started})
    server = make(portico.TCPServer, handler, use_uvloop, block_on_close=False)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    with connect(server.server_address) as sock:
        assert started.wait(DEADLINE)
        server.shutdown()
        thread.join(DEADLINE)
        assert not thread.is_alive()  # without block_on_close, serve_forever() returns
        server.server_close()
        assert events == ["cancelled", "finish"]
        assert sock.recv(10) == b""  # closed by the server


def test_server_close_waits_for_handlers_when_block_on_close(
    use_uvloop: bool, no_leaks: None
) -> None:
    with (
        serving(make(portico.TCPServer, Lines, use_uvloop)) as running,
        connect(running.address) as sock,
        sock.makefile("rb") as replies,
    ):
        sock.sendall(b"x\n")
        assert replies.readline() == b"X\n"
        running.server.shutdown()  # returns at once; the conversation goes on
        sock.sendall(b"y\n")
        assert replies.readline() == b"Y\n"
        sock.shutdown(socket.SHUT_WR)
        assert replies.readline() == b"2 lines\n"


def test_handle_request_serves_one_connection(use_uvloop: bool, no_leaks: None) -> None:
    server = make(portico.TCPServer, Lines, use_uvloop)
    try:
        with connect(server.server_address) as sock:
            sock.sendall(b"only\n")
            sock.shutdown(socket.SHUT_WR)
            server.handle_request()
            assert sock.recv(100) == b"ONLY\n1 lines\n"
    finally:
        server.server_close()


class UpperDatagram(AsyncDatagramRequestHandler):
    async def handle(self) -> None:
        await asyncio.sleep(0)
        self.writer.write(self.packet.upper())


def test_datagrams(use_uvloop: bool, no_leaks: None) -> None:
    server = make(portico.UDPServer, UpperDatagram, use_uvloop)
    with serving(server) as running, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(DEADLINE)
        for n in range(20):
            sock.sendto(b"datagram %d" % n, running.address)
            assert sock.recvfrom(100) == (b"DATAGRAM %d" % n, running.address)


def test_handle_request_serves_one_datagram(use_uvloop: bool, no_leaks: None) -> None:
    server = make(portico.UDPServer, UpperDatagram, use_uvloop)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(DEADLINE)
            sock.sendto(b"one", server.server_address)
            server.handle_request()
            assert sock.recvfrom(100)[0] == b"ONE"
    finally:
        server.server_close()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
def test_unix_stream_and_datagram_sockets(use_uvloop: bool, no_leaks: None, tmp_path) -> None:
    path = str(tmp_path / "s")
    server = make(portico.UnixStreamServer, Lines, use_uvloop, address=path)
    with serving(server), socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(DEADLINE)
        sock.connect(path)
        sock.sendall(b"unix\n")
        sock.shutdown(socket.SHUT_WR)
        assert sock.makefile("rb").read() == b"UNIX\n1 lines\n"
    assert not os.path.exists(path)
    dpath, cpath = str(tmp_path / "d"), str(tmp_path / "c")
    server = make(portico.UnixDatagramServer, UpperDatagram, use_uvloop, address=dpath)
    with serving(server), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.settimeout(DEADLINE)
        sock.bind(cpath)
        sock.sendto(b"unix datagram", dpath)
        assert sock.recv(100) == b"UNIX DATAGRAM"


def test_two_thousand_concurrent_connections(no_leaks: None) -> None:
    with serving(make(portico.TCPServer, Lines, True)) as running:
        socks = [connect(running.address) for _ in range(2000)]
        try:
            for index, sock in enumerate(socks):
                sock.sendall(b"c%d\n" % index)
            for index, sock in enumerate(socks):
                assert sock.recv(100) == b"C%d\n" % index
            assert running.server.statistics().connections == 2000
            for sock in socks:
                sock.shutdown(socket.SHUT_WR)
            for sock in socks:
                assert sock.recv(100) == b"1 lines\n"
        finally:
            for sock in socks:
                sock.close()


def test_the_loop_is_uvloop_or_asyncio_as_asked(use_uvloop: bool) -> None:
    with serving(make(portico.TCPServer, Lines, use_uvloop)) as running:
        loop = running.server.statistics().loop
    assert loop.startswith("uvloop") == use_uvloop


def test_a_sync_handler_on_an_async_server_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"not an async handler.*--engine event"):
        AsyncTCPServer(("127.0.0.1", 0), portico.StreamRequestHandler)
    with pytest.raises(ConfigurationError, match="not an async handler"):
        AsyncUDPServer(("127.0.0.1", 0), portico.DatagramRequestHandler)


def test_an_async_handler_on_a_sync_server_is_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = portico.TCPServer(("127.0.0.1", 0), Lines)
    with (
        caplog.at_level(logging.ERROR, "portico.error"),
        serving(server) as running,
        connect(running.address) as sock,
    ):
        assert sock.recv(10) == b""  # the request failed: closed at once
    (record,) = [r for r in caplog.records if r.name == "portico.error"]
    assert record.exc_info is not None
    assert "serve it with the async engine" in str(record.exc_info[1])


class MixedReads(AsyncStreamRequestHandler):
    """Reads a burst of many lines with every reader in turn, answering what each returned."""

    async def handle(self) -> None:
        reader, out = self.reader, []
        out.append(await reader.readline())
        out.append(await reader.readline(4))  # the first 4 bytes of a line
        out.append(await reader.readline())  # the rest of it
        out.append(await reader.readexactly(3))
        out.append(await reader.readline())
        out.append(await reader.readuntil(b";"))
        out.extend([line async for line in reader])
        self.writer.write(b"|".join(out))


def test_every_reader_sees_the_right_bytes_after_lines_were_taken(
    use_uvloop: bool, no_leaks: None
) -> None:
    lines = [b"line %04d %s\n" % (n, b"x" * (n % 97)) for n in range(400)]
    burst = b"".join(lines[:6]) + b"before;after\n" + b"".join(lines[6:])
    with serving(make(portico.TCPServer, MixedReads, use_uvloop)) as running:
        reply = exchange(running.address, burst)
    expected = [
        lines[0],
        lines[1][:4],
        lines[1][4:],
        lines[2][:3],
        lines[2][3:],
        lines[3] + lines[4] + lines[5] + b"before;",
        b"after\n",
        *lines[6:],
    ]
    assert reply == b"|".join(expected)
