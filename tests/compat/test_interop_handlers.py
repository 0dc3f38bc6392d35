"""The standard library's request handlers, served by portico's servers.

Every handler class here comes from the stdlib unchanged (``http.server``,
``xmlrpc.server`` and the stdlib's own ``socketserver``); only the server is
portico's.  Real clients (urllib, http.client, xmlrpc.client, plain sockets)
talk to it over loopback.  The last tests go the other way: portico's
handlers and mixins on the stdlib's servers.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import http.client
import http.server
import json
import logging
import socket
import socketserver as stdlib_socketserver
import tempfile
import threading
import time
import urllib.error
import urllib.request
import xmlrpc.client
import xmlrpc.server
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any, ClassVar

import pytest

import portico
from portico.testing import has_ipv6_loopback, serving

pytestmark = pytest.mark.timeout(10)

TIMEOUT = 5.0  # for every client operation: no test waits longer on one


LOOPBACKS = [
    pytest.param("127.0.0.1", id="ipv4"),
    pytest.param(
        "::1",
        id="ipv6",
        marks=pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback"),
    ),
]


@pytest.fixture(autouse=True)
def _real_stdlib_socketserver() -> None:
    # Someone setting sys.modules["socketserver"] = portico in this process
    # would make these tests compare portico with itself.
    assert stdlib_socketserver is not portico
    assert http.server.socketserver is stdlib_socketserver  # type: ignore[attr-defined]


# -- clients --------------------------------------------------------------------


def http_url(address: Any, path: str = "/") -> str:
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"


# urllib honours http_proxy from the environment; loopback tests must not.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str) -> tuple[int, Message, bytes]:
    with _opener.open(url, timeout=TIMEOUT) as response:
        return response.status, response.headers, response.read()


def recv_until_eof(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the peer sends until it closes; at most ``limit`` bytes, within TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    received = bytearray()
    while len(received) <= limit:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(received)
        received += chunk
    raise AssertionError(f"more than {limit} bytes received")


# -- http.server.SimpleHTTPRequestHandler -------------------------------------------


class RecordingFileHandler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler whose access log goes to a list, not stderr."""

    log: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        self.log.append(f"{self.client_address[0]} {format % args}")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "hello.txt").write_bytes(b"hello from portico\n")
    # 1 MiB: copyfileobj() writes it through wfile in many sendall() calls.
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4096)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.html").write_bytes(b"<p>the index</p>\n")
    return tmp_path


@pytest.mark.parametrize("host", LOOPBACKS)
def test_simple_http_request_handler_serves_a_directory(site: Path, host: str) -> None:
    log: list[str] = []
    handler_class = type("Handler", (RecordingFileHandler,), {"log": log})
    handler = functools.partial(handler_class, directory=str(site))

    with serving(portico.ThreadingTCPServer, handler, (host, 0)) as running:
        status, headers, body = fetch(http_url(running.address, "/hello.txt"))
        assert (status, body) == (200, b"hello from portico\n")
        assert headers["Content-Type"] == "text/plain"
        assert headers["Content-Length"] == "19"

        _, _, blob = fetch(http_url(running.address, "/blob.bin"))
        assert blob == (site / "blob.bin").read_bytes()

        _, headers, listing = fetch(http_url(running.address, "/"))
        assert headers["Content-Type"].startswith("text/html")
        for name in (b"hello.txt", b"blob.bin", b"docs/"):
            assert b'href="' + name + b'"' in listing

        _, _, index = fetch(http_url(running.address, "/docs/"))
        assert index == b"<p>the index</p>\n"

        with pytest.raises(urllib.error.HTTPError) as missing:
            fetch(http_url(running.address, "/missing.txt"))
        assert missing.value.code == 404
        missing.value.close()  # an HTTPError holds the response, and its socket

    # serving() has closed the server, which joined every request thread.
    assert f'{host} "GET /hello.txt HTTP/1.1" 200 -' in log
    assert any('"GET /missing.txt HTTP/1.1" 404' in line for line in log)


# -- http.server.BaseHTTPRequestHandler subclass ------------------------------------


class EchoHTTPHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive: GET describes the request, POST upper-cases the body."""

    protocol_version = "HTTP/1.1"
    timeout = TIMEOUT  # a connection left open cannot keep server_close() waiting

    def do_GET(self) -> None:
        if self.path == "/boom":
            raise RuntimeError("handler failed on purpose")
        description = {
            "path": self.path,
            "client": list(self.client_address[:2]),
            "thread": threading.current_thread().name,
            "agent": self.headers["User-Agent"],
        }
        self.reply(json.dumps(description).encode(), "application/json")

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.reply(self.rfile.read(length).upper(), "text/plain")

    def reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def connect(address: Any) -> contextlib.closing[http.client.HTTPConnection]:
    return contextlib.closing(http.client.HTTPConnection(address[0], address[1], timeout=TIMEOUT))


def request(
    connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    connection.request(method, path, body=body, headers={"User-Agent": "interop-test"})
    response = connection.getresponse()
    return response.status, response.read()


@pytest.mark.parametrize(
    "server_class", [portico.TCPServer, portico.ThreadingTCPServer], ids=lambda c: c.__name__
)
def test_base_http_request_handler_keeps_the_connection_alive(
    server_class: type[portico.TCPServer],
) -> None:
    # Connections close inside serving(): server_close() joins the request threads.
    with serving(server_class, EchoHTTPHandler) as running, connect(running.address) as connection:
        status, first = request(connection, "GET", "/first?x=1")
        assert status == 200
        assert request(connection, "POST", "/upper", b"keep me alive") == (200, b"KEEP ME ALIVE")
        status, second = request(connection, "GET", "/second")
        serving_thread = running.thread.name

    first_seen, second_seen = json.loads(first), json.loads(second)
    assert first_seen["path"] == "/first?x=1"
    assert first_seen["agent"] == "interop-test"
    assert first_seen["client"][0] == "127.0.0.1"
    # Three requests, one connection: the same client port each time.
    assert first_seen["client"] == second_seen["client"]
    # A serial server handles requests in its serving thread, a threading one never does.
    if server_class is portico.ThreadingTCPServer:
        assert first_seen["thread"] != serving_thread
    else:
        assert first_seen["thread"] == serving_thread


def test_a_failing_stdlib_handler_is_logged_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="portico.error")
    with serving(portico.ThreadingTCPServer, EchoHTTPHandler) as running:
        with connect(running.address) as broken, pytest.raises(http.client.RemoteDisconnected):
            request(broken, "GET", "/boom")
        with connect(running.address) as connection:
            status, body = request(connection, "GET", "/after")
        assert status == 200 and json.loads(body)["path"] == "/after"

    [record] = [r for r in caplog.records if r.name == "portico.error"]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert record.client_address[0] == "127.0.0.1"  # type: ignore[attr-defined]


# -- xmlrpc.server.SimpleXMLRPCRequestHandler ---------------------------------------


class PorticoXMLRPCServer(xmlrpc.server.SimpleXMLRPCDispatcher, portico.ThreadingTCPServer):
    """The stdlib's SimpleXMLRPCServer recipe (dispatcher, then server), on portico threads."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: Any, request_handler: Any) -> None:
        self.logRequests = False
        xmlrpc.server.SimpleXMLRPCDispatcher.__init__(self, allow_none=True, encoding=None)
        portico.ThreadingTCPServer.__init__(self, address, request_handler)


class _TimeoutTransport(xmlrpc.client.Transport):
    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = super().make_connection(host)
        connection.timeout = TIMEOUT
        return connection


def proxy(address: Any) -> xmlrpc.client.ServerProxy:
    return xmlrpc.client.ServerProxy(
        http_url(address), transport=_TimeoutTransport(), allow_none=True
    )


@pytest.fixture
def xmlrpc_server() -> Iterator[Any]:
    server = PorticoXMLRPCServer(("127.0.0.1", 0), xmlrpc.server.SimpleXMLRPCRequestHandler)
    rendezvous = threading.Barrier(2, timeout=TIMEOUT)
    server.register_function(lambda a, b: a + b, "add")
    server.register_function(lambda text: text.upper(), "upper")
    server.register_function(lambda: rendezvous.wait() is not None, "rendezvous")
    server.register_function(lambda: 1 / 0, "divide_by_zero")
    server.register_introspection_functions()
    server.register_multicall_functions()
    with serving(server) as running:
        yield running


def test_xmlrpc_calls_results_and_faults(xmlrpc_server: Any) -> None:
    with proxy(xmlrpc_server.address) as remote:
        assert remote.add(2, 3) == 5
        assert remote.upper("portico") == "PORTICO"
        # Large enough for the handler to gzip the response (encode_threshold).
        assert remote.upper("x" * 100_000) == "X" * 100_000
        assert {"add", "upper", "system.multicall"} <= set(remote.system.listMethods())

        multicall = xmlrpc.client.MultiCall(remote)
        multicall.add(1, 1)
        multicall.upper("multi")
        assert list(multicall()) == [2, "MULTI"]

        with pytest.raises(xmlrpc.client.Fault, match="ZeroDivisionError"):
            remote.divide_by_zero()
        assert remote.add(-1, 1) == 0  # still serving after the fault


def test_xmlrpc_requests_run_concurrently(xmlrpc_server: Any) -> None:
    # Each call waits for the other one: a server handling one request at a
    # time would deadlock until the barrier times out with a Fault.
    def call() -> bool:
        with proxy(xmlrpc_server.address) as remote:
            return bool(remote.rendezvous())

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = [pool.submit(call) for _ in range(2)]
        assert [result.result(TIMEOUT * 2) for result in results] == [True, True]


# -- the stdlib's socketserver handlers ---------------------------------------------


class StdlibUpperLines(stdlib_socketserver.StreamRequestHandler):
    """Upper-cases each line, until the client half-closes the connection."""

    timeout = TIMEOUT

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


class BufferedStdlibUpperLines(StdlibUpperLines):
    """The same with a buffered wfile, which finish() flushes."""

    wbufsize = -1


class NoDelayStdlibUpperLines(BufferedStdlibUpperLines):
    """Buffered, with TCP_NODELAY set by setup() (TCP only)."""

    disable_nagle_algorithm = True


STREAM_HANDLERS = [StdlibUpperLines, BufferedStdlibUpperLines]
LINES = b"hello\nportico\nno newline at the end"


def exchange_lines(family: int, address: Any) -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(address)
        sock.sendall(LINES)
        sock.shutdown(socket.SHUT_WR)
        return recv_until_eof(sock)


@pytest.mark.parametrize("host", LOOPBACKS)
@pytest.mark.parametrize(
    "handler", [*STREAM_HANDLERS, NoDelayStdlibUpperLines], ids=lambda c: c.__name__
)
@pytest.mark.parametrize(
    "server_class", [portico.TCPServer, portico.ThreadingTCPServer], ids=lambda c: c.__name__
)
def test_stdlib_stream_request_handler_on_portico_tcp(
    server_class: type[portico.TCPServer], handler: type[Any], host: str
) -> None:
    with serving(server_class, handler, (host, 0)) as running:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        assert exchange_lines(family, running.address) == LINES.upper()
        assert exchange_lines(family, running.address) == LINES.upper()


def test_stdlib_stream_request_handler_answers_line_by_line() -> None:
    # With the default unbuffered wfile each reply leaves at once: a client
    # may wait for it before sending the next line.
    with (
        serving(portico.ThreadingTCPServer, StdlibUpperLines) as running,
        socket.create_connection(running.address, timeout=TIMEOUT) as sock,
        sock.makefile("rb") as replies,
    ):
        for word in (b"ping\n", b"pong\n", b"done\n"):
            sock.sendall(word)
            assert replies.readline() == word.upper()
        sock.shutdown(socket.SHUT_WR)
        assert replies.read() == b""


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
@pytest.mark.parametrize("handler", STREAM_HANDLERS, ids=lambda c: c.__name__)
def test_stdlib_stream_request_handler_on_portico_unix(handler: type[Any]) -> None:
    # A short directory: Unix socket paths are limited to about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="portico-") as directory:
        path = str(Path(directory) / "upper.sock")
        with serving(portico.ThreadingUnixStreamServer, handler, path) as running:
            assert exchange_lines(socket.AF_UNIX, running.address) == LINES.upper()


class StdlibUpperDatagram(stdlib_socketserver.DatagramRequestHandler):
    """Upper-cases each line of the datagram; finish() sends the reply."""

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


@pytest.mark.parametrize("host", LOOPBACKS)
@pytest.mark.parametrize(
    "server_class", [portico.UDPServer, portico.ThreadingUDPServer], ids=lambda c: c.__name__
)
def test_stdlib_datagram_request_handler_on_portico_udp(
    server_class: type[portico.UDPServer], host: str
) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with (
        serving(server_class, StdlibUpperDatagram, (host, 0)) as running,
        socket.socket(family, socket.SOCK_DGRAM) as client,
    ):
        client.settimeout(TIMEOUT)
        for payload in (b"one datagram\ntwo lines", b"another"):
            client.sendto(payload, running.address)
            reply, sender = client.recvfrom(65536)
            assert reply == payload.upper()
            assert sender[:2] == running.address[:2]


# -- the other way: portico's handlers and mixins with the stdlib's servers ------------


class PorticoUpperLines(portico.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


class PorticoUpperDatagram(portico.DatagramRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.read().upper())


class StdlibThreadsOnPortico(stdlib_socketserver.ThreadingMixIn, portico.TCPServer):
    pass


class PorticoThreadsOnStdlib(portico.ThreadingMixIn, stdlib_socketserver.TCPServer):
    pass


@pytest.mark.parametrize(
    "server_class",
    [stdlib_socketserver.ThreadingTCPServer, StdlibThreadsOnPortico, PorticoThreadsOnStdlib],
    ids=lambda c: c.__name__,
)
def test_portico_stream_handler_and_mixed_servers(server_class: type[Any]) -> None:
    with serving(server_class, PorticoUpperLines, poll_interval=0.05) as running:
        assert exchange_lines(socket.AF_INET, running.address) == LINES.upper()
        assert exchange_lines(socket.AF_INET, running.address) == LINES.upper()


def test_portico_datagram_handler_on_stdlib_udp_server() -> None:
    with (
        serving(stdlib_socketserver.UDPServer, PorticoUpperDatagram, poll_interval=0.05) as running,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        client.settimeout(TIMEOUT)
        client.sendto(b"portico handler, stdlib server", running.address)
        assert client.recv(65536) == b"PORTICO HANDLER, STDLIB SERVER"
