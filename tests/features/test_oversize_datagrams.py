"""Datagrams over max_packet_size: detected, counted and logged; truncated (the stdlib's
behaviour, which was silent) or dropped, on every engine that serves datagrams."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest

import portico
from portico.engines import AsyncDatagramRequestHandler, available_engines, server_class

pytestmark = pytest.mark.timeout(30)

DEADLINE = 10.0
ENGINES = [e for e in ("serial", "threads", "pool", "event", "async") if e in available_engines()]


class Size(portico.DatagramRequestHandler):
    def handle(self) -> None:
        self.wfile.write(b"%d" % len(self.packet))


class AsyncSize(AsyncDatagramRequestHandler):
    async def handle(self) -> None:
        self.wfile.write(b"%d" % len(self.packet))


@pytest.fixture
def serve(serving: Any) -> Any:
    def start(engine: str, policy: str) -> Any:
        handler = AsyncSize if engine == "async" else Size
        server = server_class(engine, portico.UDPServer)(("127.0.0.1", 0), handler)
        server.max_packet_size = 100
        server.oversize_datagrams = policy
        return serving(server)

    return start


def sizes_seen(server: Any, payloads: list[bytes], replies: int) -> list[bytes]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(DEADLINE)
        for payload in payloads:
            client.sendto(payload, server.server_address)
        return [client.recvfrom(100)[0] for _ in range(replies)]


@pytest.mark.parametrize("engine", ENGINES)
def test_oversize_datagrams_are_truncated_as_in_the_stdlib_but_counted(serve, engine, caplog):
    server = serve(engine, "truncate")
    with caplog.at_level(logging.WARNING, logger="portico.server"):
        assert sizes_seen(server, [b"a" * 150, b"b" * 100], 2) == [b"100", b"100"]
    assert server.datagrams_oversize == 1
    assert "datagram over max_packet_size (100 bytes) from 127.0.0.1:" in caplog.text


@pytest.mark.parametrize("engine", ENGINES)
def test_oversize_datagrams_can_be_dropped(serve, engine) -> None:
    server = serve(engine, "drop")
    # The oversize one gets no answer: the first answer is the next datagram's.
    assert sizes_seen(server, [b"a" * 150, b"b" * 101, b"c" * 40], 1) == [b"40"]
    assert server.datagrams_oversize == 2
