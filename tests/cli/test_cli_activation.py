"""Sockets handed down to ``portico serve`` (systemd socket activation, ``--fd``) and sd_notify.

The activation tests use the real ``systemd-socket-activate`` (Debian package
``systemd``): it binds, waits for the first client, then execs portico with
``LISTEN_FDS``, exactly as systemd would.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
from pathlib import Path

import pytest
from conversations import DEADLINE, converse, free_port, udp_exchange

pytestmark = pytest.mark.timeout(30)

ACTIVATE = shutil.which("systemd-socket-activate")
needs_activate = pytest.mark.skipif(ACTIVATE is None, reason="needs systemd-socket-activate")


@needs_activate
def test_systemd_socket_activation_serves_the_passed_socket(portico_serve) -> None:
    port = free_port()
    server = portico_serve(
        "--log-level",
        "INFO",
        prefix=[ACTIVATE, "-l", f"127.0.0.1:{port}", "--fdname=api"],
        listeners=0,
    )
    server.wait_for(rf"Listening on 127\.0\.0\.1:{port}")
    # The first client makes systemd-socket-activate exec portico with the socket as fd 3.
    assert converse(("127.0.0.1", port), [b"activated\n", b"twice\n"]) == [
        b"ACTIVATED\n",
        b"TWICE\n",
    ]
    server.wait_for(rf"INFO portico\.cli: inherited systemd api: 127\.0\.0\.1:{port}$")
    server.wait_for(rf"INFO portico\.cli: serving on 127\.0\.0\.1:{port}$")
    assert converse(("127.0.0.1", port), [b"again\n"]) == [b"AGAIN\n"]
    assert server.stop() == 0


@needs_activate
def test_systemd_datagram_sockets_are_served_as_udp(portico_serve) -> None:
    port = free_port(socket.SOCK_DGRAM)
    server = portico_serve(
        "--log-level",
        "INFO",
        prefix=[ACTIVATE, "--datagram", "-l", f"127.0.0.1:{port}"],
        listeners=0,
    )
    server.wait_for(rf"Listening on 127\.0\.0\.1:{port}")
    # The datagram that woke the service waits in the socket for it.
    assert udp_exchange(("127.0.0.1", port), b"first datagram") == b"FIRST DATAGRAM"
    server.wait_for(r"INFO portico\.cli: handler upper over udp$")
    assert server.stop() == 0


def test_fd_serves_an_inherited_listening_socket(portico_serve) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        fd = listener.fileno()
        server = portico_serve("--fd", str(fd), pass_fds=[fd])
        assert server.addresses == [listener.getsockname()]
    # Our copy is closed: the server's, inherited, still serves.
    assert converse(server.addresses[0], [b"inherited\n"]) == [b"INHERITED\n"]
    server.wait_for(rf"INFO portico\.cli: inherited --fd {fd}: ")
    assert server.stop() == 0


@pytest.mark.parametrize("workers", [None, "2"])
def test_a_held_socket_still_takes_connections_after_the_server_stopped(
    portico_serve, workers: str | None
) -> None:
    """As systemd does, we keep the socket: the next server must find it working."""
    prefork = ["--workers", workers] if workers else []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        fd = listener.fileno()
        server = portico_serve("--fd", str(fd), *prefork, pass_fds=[fd])
        if workers:
            server.wait_for(r"portico\.prefork: master pid \d+: 2 workers serving")
        assert converse(server.addresses[0], [b"first\n"]) == [b"FIRST\n"]
        assert server.stop() == 0
        # A new client is queued for whoever serves the socket next, not dropped: the
        # filter that held connections off during the drain is gone.
        with socket.create_connection(listener.getsockname(), timeout=DEADLINE):
            listener.settimeout(DEADLINE)
            accepted, _ = listener.accept()
            accepted.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("closed", "descriptor {fd} is not open"),
        ("pipe", "descriptor {fd} is not a socket"),
        ("unlistened", "descriptor {fd} is a stream socket that is not listening"),
    ],
)
def test_an_unusable_descriptor_is_a_usage_error(portico_serve, make: str, message: str) -> None:
    keep: list[object] = []
    if make == "closed":
        fd, pass_fds = 97, []
    elif make == "pipe":
        read, write = os.pipe()
        keep += [read, write]
        fd, pass_fds = read, [read]
    else:
        sock = socket.socket()
        keep.append(sock)
        fd, pass_fds = sock.fileno(), [sock.fileno()]
    try:
        server = portico_serve("--fd", str(fd), pass_fds=pass_fds, listeners=0)
        assert server.wait() == 2
        server.wait_for("^" + re.escape(f"portico: {message.format(fd=fd)}") + "$")
    finally:
        for item in keep:
            if isinstance(item, int):
                os.close(item)
            else:
                item.close()  # type: ignore[attr-defined]


def test_fd_cannot_be_combined_with_bind(portico_run) -> None:
    result = portico_run("serve", "--fd", "3", "--bind", "127.0.0.1:0")
    assert result.returncode == 2
    assert "--fd serves the socket as it is: it cannot be combined with --bind" in result.stderr


def test_systemd_is_told_ready_stopping_and_watchdog(portico_serve, short_tmp: Path) -> None:
    path = str(short_tmp / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(path)
        systemd.settimeout(DEADLINE)
        server = portico_serve(
            "--bind", "127.0.0.1:0", env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
        )
        states = [systemd.recv(256)]
        while b"WATCHDOG=1" not in states:  # pinged every 0.1 s (half the interval)
            states.append(systemd.recv(256))
        assert states[0] == b"READY=1\nSTATUS=serving"
        assert server.stop(signal.SIGTERM) == 0
        while (state := systemd.recv(256)) == b"WATCHDOG=1":
            pass
        assert state == b"STOPPING=1"
