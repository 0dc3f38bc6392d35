"""The standard library's socketserver users, unchanged, running on portico.

Each server runs in a fresh interpreter started through
``interop_servers/as_socketserver.py``, which sets
``sys.modules["socketserver"] = portico`` before anything built on
socketserver is imported.  The server scripts check from the inside that they
really run on portico's classes; the tests check from the outside, with real
clients (urllib, xmlrpc.client, logging's SocketHandler, curl), that they work.

A server script reports its port as its first line of output (``port N``;
werkzeug's own ``Running on`` line for run_simple); the tests read it with a
deadline.  Each server must then stop cleanly: on Ctrl+C (SIGINT) when its
main thread only accepts, through shutdown() when its stdin closes when the
main thread also handles requests (a SIGINT could land inside one).
Teardown kills whatever is still running (``portico.testing.ServerProcess``).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from portico.testing import ServerProcess, has_ipv6_loopback

pytestmark = pytest.mark.timeout(10)

SERVERS = Path(__file__).parent / "interop_servers"
LAUNCHER = SERVERS / "as_socketserver.py"
TIMEOUT = 5.0  # for each step: starting, one request, stopping

PORT_LINE = re.compile(r"port (\d+)")


class ScriptServer(ServerProcess):
    """A server script in a subprocess: its stdout read line by line, its stderr in a file."""

    def read_port(self) -> int:
        line = self.read_line()
        match = PORT_LINE.fullmatch(line or "")
        assert match, self.explain(f"expected 'port N', got {line!r}")
        return int(match[1])

    def read_until(self, pattern: re.Pattern[str], timeout: float = TIMEOUT) -> re.Match[str]:
        """Read lines until one contains ``pattern``; at most ``timeout`` seconds in all."""
        return self.wait_for(pattern, timeout=timeout, since=len(self.lines))[0]

    def interrupt(self) -> int:
        """Ctrl+C: send SIGINT and wait for the exit status."""
        self.popen.send_signal(signal.SIGINT)
        return self.wait()

    def close_stdin(self) -> int:
        assert self.popen.stdin is not None
        self.popen.stdin.close()
        return self.wait()


Launch = Callable[..., ScriptServer]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start ``as_socketserver.py ARGS...`` in a fresh interpreter; stopped at teardown."""
    started: list[ScriptServer] = []

    def start(*args: str, stdin: bool = False) -> ScriptServer:
        stderr_path = tmp_path / f"server-{len(started)}.stderr"
        command = [sys.executable, "-u", str(LAUNCHER), *args]
        process = ScriptServer(
            command, stream="stdout", other_path=stderr_path, stdin=stdin, timeout=TIMEOUT
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def script(name: str) -> str:
    return str(SERVERS / name)


# urllib honours http_proxy from the environment; loopback tests must not.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    with _opener.open(url, data=data, timeout=TIMEOUT) as response:
        return response.status, response.read()


# -- http.server ---------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"served by http.server on portico\n")
    (root / "blob.bin").write_bytes(bytes(range(256)) * 1024)
    return root


def test_http_server_threading_server_and_simple_handler(launch: Launch, site: Path) -> None:
    server = launch(script("http_server.py"), str(site))
    base = f"http://127.0.0.1:{server.read_port()}"

    assert fetch(f"{base}/hello.txt") == (200, b"served by http.server on portico\n")
    assert fetch(f"{base}/blob.bin") == (200, (site / "blob.bin").read_bytes())
    with pytest.raises(urllib.error.HTTPError) as missing:
        fetch(f"{base}/missing.txt")
    assert missing.value.code == 404
    missing.value.close()  # an HTTPError holds the response, and its socket

    assert server.interrupt() == 0, server.explain("unclean exit")
    assert server.read_line() == "stopped"


@pytest.mark.parametrize(
    ("bind", "url_host"),
    [
        pytest.param("127.0.0.1", "127.0.0.1", id="ipv4"),
        pytest.param(
            "::1",
            "[::1]",
            id="ipv6",
            marks=pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback"),
        ),
    ],
)
def test_python_m_http_server(launch: Launch, site: Path, bind: str, url_host: str) -> None:
    # The stdlib's own command line, `python -m http.server`, untouched.
    server = launch("-m", "http.server", "--bind", bind, "--directory", str(site), "0")
    banner = re.compile(r"^Serving HTTP on \S+ port (\d+) \((http://\S+/)\) \.\.\.$")
    match = server.read_until(banner)
    assert match[2] == f"http://{url_host}:{match[1]}/"

    assert fetch(f"{match[2]}hello.txt") == (200, b"served by http.server on portico\n")

    assert server.interrupt() == 0, server.explain("unclean exit")
    assert server.read_until(re.compile("Keyboard interrupt received, exiting"))


# -- xmlrpc.server -------------------------------------------------------------------


class _TimeoutTransport(xmlrpc.client.Transport):
    def make_connection(self, host: Any) -> Any:
        connection = super().make_connection(host)
        connection.timeout = TIMEOUT
        return connection


def test_xmlrpc_simple_server(launch: Launch) -> None:
    server = launch(script("xmlrpc_server.py"), stdin=True)
    url = f"http://127.0.0.1:{server.read_port()}/"

    with xmlrpc.client.ServerProxy(url, transport=_TimeoutTransport()) as remote:
        assert remote.add(40, 2) == 42
        assert remote.upper("xml-rpc on portico") == "XML-RPC ON PORTICO"
        assert {"add", "upper", "divide", "system.multicall"} <= set(remote.system.listMethods())
        multicall = xmlrpc.client.MultiCall(remote)
        multicall.divide(1, 4)
        multicall.add(1, 2)
        assert list(multicall()) == [0.25, 3]
        with pytest.raises(xmlrpc.client.Fault, match="ZeroDivisionError"):
            remote.divide(1, 0)

    assert server.close_stdin() == 0, server.explain("unclean exit")
    assert server.read_line() == "stopped"


# -- logging.config.listen() ---------------------------------------------------------


def send_logging_config(port: int, config: dict[str, Any]) -> None:
    """Send a config as logging.config.listen() expects it, and wait until it is applied.

    The wire format: a 4-byte big-endian length, then the configuration (JSON
    for dictConfig(), or fileConfig() text).  The listener closes the
    connection after applying it, so end-of-file means "applied".
    """
    payload = json.dumps(config).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(struct.pack(">L", len(payload)) + payload)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b"", "logging.config.listen() answered something"


def test_logging_config_listen_applies_a_config_sent_over_the_socket(
    launch: Launch, tmp_path: Path
) -> None:
    log_file = tmp_path / "configured.log"
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(name)s %(levelname)s %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "filename": str(log_file),
                "formatter": "plain",
                "encoding": "utf-8",
            }
        },
        "loggers": {"interop.listen": {"handlers": ["file"], "level": "INFO"}},
    }
    server = launch(script("logging_listen.py"), stdin=True)
    port = server.read_port()

    send_logging_config(port, config)
    server.send_line("configured over the socket")
    assert server.read_line() == "logged"

    assert server.close_stdin() == 0, server.explain("unclean exit")
    assert server.read_line() == "stopped"
    assert log_file.read_text(encoding="utf-8") == (
        "interop.listen INFO configured over the socket\n"
    )


# -- a log record receiver, as in the logging cookbook -------------------------------


@pytest.fixture
def socket_logger() -> Iterator[Callable[[int], logging.Logger]]:
    """A logger of this process whose records go only to a SocketHandler on a port."""
    handlers: list[logging.Handler] = []
    logger = logging.getLogger(f"interop.sender.{uuid.uuid4().hex}")

    def connect(port: int) -> logging.Logger:
        handler = logging.handlers.SocketHandler("127.0.0.1", port)
        handlers.append(handler)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        return logger

    yield connect
    for handler in handlers:
        logger.removeHandler(handler)
        handler.close()


def read_records(server: ScriptServer, name: str, count: int) -> list[dict[str, Any]]:
    """The next ``count`` records of logger ``name`` that the receiver prints, as dicts."""
    deadline = time.monotonic() + TIMEOUT
    records: list[dict[str, Any]] = []
    while len(records) < count:
        line = server.read_line(max(deadline - time.monotonic(), 0.0))
        assert line is not None, server.explain("the receiver's output ended")
        record = json.loads(line)
        if record["name"] == name:  # not, say, a record of portico's own
            records.append(record)
    return records


def test_log_record_receiver_fed_by_a_socket_handler(
    launch: Launch, socket_logger: Callable[[int], logging.Logger]
) -> None:
    server = launch(script("log_receiver.py"))
    logger = socket_logger(server.read_port())

    logger.info("first record")
    logger.warning("second record, %s", "with arguments")
    try:
        raise ValueError("carried over the wire")
    except ValueError:
        logger.exception("third record")
    for handler in logger.handlers:
        handler.close()  # the receiver's handler sees end-of-file

    received = read_records(server, logger.name, 3)
    common = {
        "name": logger.name,
        "process": os.getpid(),
        "threadName": threading.current_thread().name,
    }
    assert received[0] == {
        **common,
        "levelname": "INFO",
        "message": "first record",
        "exc_text": None,
    }
    assert received[1] == {
        **common,
        "levelname": "WARNING",
        "message": "second record, with arguments",
        "exc_text": None,
    }
    assert received[2]["levelname"] == "ERROR"
    assert received[2]["message"] == "third record"
    assert received[2]["exc_text"].endswith("ValueError: carried over the wire")

    assert server.interrupt() == 0, server.explain("unclean exit")
    assert server.read_line() == "stopped"


# -- wsgiref.simple_server -----------------------------------------------------------


def test_wsgiref_make_server(launch: Launch) -> None:
    server = launch(script("wsgi_server.py"), stdin=True)
    base = f"http://127.0.0.1:{server.read_port()}"

    assert fetch(f"{base}/hello?to=portico") == (200, b"GET /hello to=portico\n")
    assert fetch(f"{base}/shout", data=b"quiet please") == (200, b"POST /shout \nQUIET PLEASE")

    assert server.close_stdin() == 0, server.explain("unclean exit")
    assert server.read_line() == "stopped"


# -- werkzeug (Flask's development server) -------------------------------------------


def curl(*args: str) -> bytes:
    command = ["curl", "--silent", "--show-error", "--fail", "--noproxy", "*", "--max-time", "5"]
    result = subprocess.run(
        [*command, *args], capture_output=True, timeout=TIMEOUT * 2, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize(
    ("mode", "server_class"),
    [
        ("threaded", "ThreadedWSGIServer"),
        pytest.param(
            "processes",
            "ForkingWSGIServer",
            marks=pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork()"),
        ),
    ],
)
def test_werkzeug_run_simple_fetched_with_curl(
    launch: Launch, mode: str, server_class: str
) -> None:
    server = launch(script("werkzeug_server.py"), mode)
    match = server.read_until(re.compile(r"\* Running on (http://127\.0\.0\.1:\d+)$"))
    base = match[1]

    # werkzeug closes every connection after one response ("Connection: close").
    expected = "".join(
        f"hello {name} from {server_class}, on portico: True\n" for name in ("curl", "again")
    )
    assert curl(f"{base}/?name=curl", f"{base}/?name=again") == expected.encode()
    assert curl("--data-binary", "make me loud", f"{base}/") == b"MAKE ME LOUD"
    assert server.read_until(re.compile(r'"GET /\?name=curl HTTP/1\.1" 200'))

    assert server.interrupt() == 0, server.explain("unclean exit")
    assert server.read_until(re.compile(r"^stopped$"))
