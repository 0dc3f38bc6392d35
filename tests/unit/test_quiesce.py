"""portico.net.quiesce: a listener that stops taking new connections but keeps its queue."""

from __future__ import annotations

import socket
import sys

import pytest

from portico.net.quiesce import accept_queue_length, stop_new_connections

pytestmark = [
    pytest.mark.timeout(10),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket filters"),
]


def test_queued_connections_survive_and_new_ones_never_complete() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()
        queued = [socket.create_connection(address, timeout=5) for _ in range(2)]
        assert accept_queue_length(listener) == 2
        assert stop_new_connections(listener)
        late = socket.socket()
        late.settimeout(0.2)  # the SYN is dropped: connect() cannot complete
        with late, pytest.raises(TimeoutError):
            late.connect(address)
        assert accept_queue_length(listener) == 2  # the late one never joined the queue
        for client in queued:
            with client:
                accepted, _ = listener.accept()
                with accepted:
                    client.sendall(b"still here")
                    assert accepted.recv(64) == b"still here"
        assert accept_queue_length(listener) == 0
    # Closed: a new client is refused, at once.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5)


def test_other_sockets_are_left_alone() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagram:
        assert not stop_new_connections(datagram)
        assert accept_queue_length(datagram) is None
    with socket.socket(socket.AF_UNIX) as unix:
        assert not stop_new_connections(unix)
        assert accept_queue_length(unix) is None
