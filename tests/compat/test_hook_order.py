"""Hooks are called in the stdlib's order, with the stdlib's arguments.

Each scenario runs twice, once on a stdlib class and once on its portico
twin, both wrapped by the same recorder; the recorded call sequences must be
identical.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any

import pytest

import portico

HOOKS = (
    "server_bind",
    "server_activate",
    "get_request",
    "verify_request",
    "process_request",
    "process_request_thread",
    "finish_request",
    "shutdown_request",
    "close_request",
    "handle_error",
    "handle_timeout",
    "server_close",
)


def recording(server_class: type, calls: list[str], refuse: bool = False) -> type:
    """A subclass of ``server_class`` that appends each hook's name to ``calls``."""

    def wrap(name: str) -> Callable[..., Any]:
        def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            if name == "verify_request" and refuse:
                return False
            return getattr(server_class, name)(self, *args, **kwargs)

        return hook

    members = {name: wrap(name) for name in HOOKS if hasattr(server_class, name)}
    return type("Recording" + server_class.__name__, (server_class,), members)


class Upper(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = (
            self.request.recv(1024) if isinstance(self.request, socket.socket) else self.request[0]
        )
        if data == b"boom\n":
            raise ValueError("handler failure on purpose")
        if isinstance(self.request, socket.socket):
            self.request.sendall(data.upper())
        else:
            self.request[1].sendto(data.upper(), self.client_address)


def tcp_exchange(address: Any, payload: bytes) -> bytes:
    with socket.create_connection(address, timeout=5) as client:
        try:
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)
            return b"".join(iter(lambda: client.recv(1024), b""))
        except OSError:
            return b""  # a refused request may be closed before we are done


def udp_exchange(address: Any, payload: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.sendto(payload, address)


def run_scenario(module: Any, scenario: str) -> list[str]:
    calls: list[str] = []
    quiet_errors = {"handle_error": lambda self, request, address: calls.append("handled")}
    if scenario.startswith("udp"):
        base = module.UDPServer
    elif scenario.startswith("threading"):
        base = module.ThreadingTCPServer
    else:
        base = module.TCPServer
    cls = recording(base, calls, refuse=scenario.endswith("refused"))
    cls = type(cls.__name__, (cls,), quiet_errors)
    server = cls(("127.0.0.1", 0), Upper)
    server.timeout = 5
    payload = b"boom\n" if scenario.endswith("error") else b"hello\n"
    try:
        if scenario.startswith("udp"):
            udp_exchange(server.server_address, payload)
            server.handle_request()
        elif scenario == "timeout":
            server.timeout = 0.01
            server.handle_request()
        else:
            client = threading.Thread(target=tcp_exchange, args=(server.server_address, payload))
            client.start()
            server.handle_request()
            client.join(5)
            # Let the request thread finish, so server_close() comes after it in both runs.
            for thread in list(vars(server).get("_threads", [])):
                thread.join(5)
    finally:
        server.server_close()
    return calls


SCENARIOS = [
    "tcp",
    "tcp refused",
    "tcp error",
    "timeout",
    "threading",
    "threading error",
    "threading refused",
    "udp",
    "udp error",
]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_hooks_run_in_stdlib_order(scenario: str) -> None:
    expected = run_scenario(socketserver, scenario)
    assert run_scenario(portico, scenario) == expected


def test_bind_and_activate_false_defers_both_hooks() -> None:
    for module in (socketserver, portico):
        calls: list[str] = []
        server = recording(module.TCPServer, calls)(
            ("127.0.0.1", 0), Upper, bind_and_activate=False
        )
        assert calls == []
        server.server_bind()
        server.server_activate()
        server.server_close()
        assert calls == ["server_bind", "server_activate", "server_close"], module


def test_serial_request_sequence_is_the_documented_one() -> None:
    calls = run_scenario(portico, "tcp")
    assert calls == [
        "server_bind",
        "server_activate",
        "get_request",
        "verify_request",
        "process_request",
        "finish_request",
        "shutdown_request",
        "close_request",
        "server_close",
    ]
