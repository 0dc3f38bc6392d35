"""What the command-line tests say to a served handler: lines over TCP, a datagram over UDP."""

from __future__ import annotations

import socket
from typing import Any

DEADLINE = 5.0


def converse(address: Any, lines: list[bytes]) -> list[bytes]:
    """Send each line on one TCP connection and read its answer before the next."""
    with socket.create_connection(address, timeout=DEADLINE) as sock:
        return converse_on(sock, lines)


def converse_on(sock: socket.socket, lines: list[bytes]) -> list[bytes]:
    with sock.makefile("rb") as answers:
        replies = []
        for line in lines:
            sock.sendall(line)
            replies.append(answers.readline())
        return replies


def udp_exchange(address: Any, payload: bytes) -> bytes:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(DEADLINE)
        sock.sendto(payload, address)
        reply, _ = sock.recvfrom(65536)
        return reply


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nobody uses now, for tools that cannot be given port 0."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
