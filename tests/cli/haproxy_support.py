"""A real HAProxy for the CLI tests: started with a test's configuration, asked for its stats.

Every configuration starts with GLOBAL: logs on stderr (read by the test),
a stats socket at ``{stats}``, which :func:`server_stats` reads, and a
frontend on ``{front}`` to the backend ``portico``, which the test writes.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
from conversations import DEADLINE

from portico.testing import ServerProcess

needs_haproxy = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")
# Clients connect from here, so that a handler can tell them from HAProxy (127.0.0.1).
CLIENT_HOST = "127.0.0.2"

GLOBAL = """
global
    log stderr format raw local0 info
    stats socket {stats}
defaults
    mode tcp
    log global
    option log-health-checks
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend front
    bind 127.0.0.1:{front}
    default_backend portico
"""


def start_haproxy(config: Path, text: str) -> ServerProcess:
    """Write ``text`` (GLOBAL first) to ``config`` and run HAProxy on it in the foreground."""
    config.write_text(text)
    return ServerProcess(
        [str(shutil.which("haproxy")), "-db", "-f", str(config)], drain=True, timeout=DEADLINE
    )


def server_stats(stats: Path, backend: str, server: str) -> dict[str, str] | None:
    """HAProxy's own figures for one server ("show stat"); None while HAProxy is not up yet."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(DEADLINE)
        try:
            sock.connect(str(stats))
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        sock.sendall(b"show stat\n")
        text = sock.makefile("r").read()
    header, *rows = text.lstrip("# ").splitlines()
    for row in rows:
        fields = dict(zip(header.split(","), row.split(","), strict=False))
        if fields["pxname"] == backend and fields["svname"] == server:
            return fields
    raise AssertionError(f"no server {backend}/{server} in HAProxy's stats: {text!r}")
