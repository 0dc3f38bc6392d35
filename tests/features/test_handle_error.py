"""handle_error() logs to the portico.error logger, and the server keeps serving."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest

import portico
from portico.testing import serving


class Fragile(portico.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        if line == b"boom\n":
            raise ZeroDivisionError("handler failure on purpose")
        self.wfile.write(line.upper())


def ask(address: Any, line: bytes) -> bytes:
    with socket.create_connection(address, timeout=5) as client:
        client.sendall(line)
        client.shutdown(socket.SHUT_WR)
        return client.makefile("rb").read()


@pytest.mark.parametrize(
    "server_class", [portico.TCPServer, portico.ThreadingTCPServer, portico.ForkingTCPServer]
)
def test_handler_errors_are_logged_not_printed_and_serving_goes_on(
    server_class: type, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.ERROR, logger="portico")
    with serving(server_class, Fragile) as running:
        assert ask(running.address, b"boom\n") == b""
        assert ask(running.address, b"still there\n") == b"STILL THERE\n"
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and "----" not in captured.err
    if server_class is portico.ForkingTCPServer:
        return  # the record was logged in the child process: caplog cannot see it
    [record] = [r for r in caplog.records if r.name == "portico.error"]
    assert record.levelno == logging.ERROR
    assert "Exception occurred during processing of request from 127.0.0.1:" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError
    assert record.client_address[0] == "127.0.0.1"  # type: ignore[attr-defined]


def test_an_overridden_handle_error_is_still_called() -> None:
    seen: list[Any] = []

    class Custom(portico.ThreadingTCPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            seen.append(client_address)

    with serving(Custom, Fragile) as running:
        ask(running.address, b"boom\n")
        assert ask(running.address, b"ok\n") == b"OK\n"
    assert len(seen) == 1 and seen[0][0] == "127.0.0.1"
