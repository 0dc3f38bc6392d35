"""``portico serve`` logs: one access line per connection, JSON, and the connection as context.

A handler that logs on its own logger, without being given anything, gets
the connection's number and peer on its lines; the access line says who the
client was (behind a PROXY header too), how many bytes went each way, how
long it took and how it ended.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from conversations import DEADLINE, converse, converse_on

from portico.engines import available_engines

pytestmark = pytest.mark.timeout(40)

HERE = Path(__file__).parent
ENGINES = [e for e in ("threads", "pool", "fork", "event", "async") if e in available_engines()]


def handler_for(engine: str) -> str:
    return (
        "prefork_handlers:AsyncLogsEachLine"
        if engine == "async"
        else "prefork_handlers:LogsEachLine"
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_handlers_own_log_lines_carry_its_connection(portico_serve, engine: str) -> None:
    server = portico_serve(
        handler_for(engine), "--bind", "127.0.0.1:0", "--engine", engine, pythonpath=HERE
    )
    with socket.create_connection(server.addresses[0], timeout=DEADLINE) as sock:
        port = sock.getsockname()[1]
        assert converse_on(sock, [b"first\n", b"second\n"]) == [b"FIRST\n", b"SECOND\n"]
    (access,) = server.wait_for(
        rf"INFO portico\.access: connection (\d+) from 127\.0\.0\.1:{port} closed after "
        r"[\d.]+ s: 13 bytes in, 13 bytes out; completed$"
    )
    number = access.group(1)
    for word in ("first", "second"):
        server.wait_for(
            rf"WARNING app: handling '{word}' \[connection {number} 127\.0\.0\.1:{port}\]$"
        )
    assert server.stop() == 0


@pytest.mark.parametrize("engine", ["threads", "async"])
def test_json_logs_have_the_access_fields(portico_serve, engine: str) -> None:
    server = portico_serve(
        handler_for(engine), "--bind", "127.0.0.1:0", "--engine", engine, "--log-format",
        "json", pythonpath=HERE,
    )  # fmt: skip
    address = server.addresses[0]
    assert converse(address, [b"json\n"]) == [b"JSON\n"]
    server.wait_for(r'"logger": "portico.access"')
    assert server.stop() == 0
    records = json_lines(server.text)
    assert records, server.text
    (access,) = [r for r in records if r["logger"] == "portico.access"]
    fields = access["access"]
    assert (fields["bytes_in"], fields["bytes_out"], fields["ended"]) == (5, 5, "completed")
    assert fields["client"].startswith("127.0.0.1:") and fields["tls"] is None
    assert fields["duration"] >= 0
    (own,) = [r for r in records if r["logger"] == "app"]
    assert (own["connection_id"], own["peer"]) == (access["connection_id"], fields["client"])
    assert own["message"] == "handling 'json'"


def test_the_access_line_names_the_client_behind_a_proxy(portico_serve) -> None:
    server = portico_serve(
        "upper", "--bind", "127.0.0.1:0", "--proxy-protocol", "v1", "--log-format", "json"
    )
    with socket.create_connection(server.addresses[0], timeout=DEADLINE) as sock:
        sock.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 4242 443\r\n")
        assert converse_on(sock, [b"proxied\n"]) == [b"PROXIED\n"]
    server.wait_for(r'"logger": "portico.access"')
    assert server.stop() == 0
    (access,) = [r for r in json_lines(server.text) if r["logger"] == "portico.access"]
    assert access["access"]["client"] == "192.0.2.7:4242"
    assert access["access"]["peer"].startswith("127.0.0.1:")


def test_how_a_connection_ended_is_on_its_access_line(portico_serve) -> None:
    server = portico_serve("upper", "--bind", "127.0.0.1:0", "--max-line-length", "16")
    with socket.create_connection(server.addresses[0], timeout=DEADLINE) as sock:
        sock.sendall(b"x" * 64)
        assert sock.recv(10) == b""
    server.wait_for(r"INFO portico\.access: connection \d+ .* closed after .*; max_line_length$")
    assert server.stop() == 0


def test_the_access_log_has_a_level_of_its_own(portico_serve) -> None:
    server = portico_serve("upper", "--bind", "127.0.0.1:0", "--access-log-level", "off")
    assert converse(server.addresses[0], [b"quiet\n"]) == [b"QUIET\n"]
    assert server.stop() == 0
    assert "portico.access" not in server.text
    assert "portico.cli: serving on" in server.text  # the rest is still logged
