"""``portico serve --health``: /healthz and /readyz, and the flip to "draining" on SIGTERM.

The health listener must say "draining" from the moment SIGTERM arrives,
while the data listener still serves (``--drain-delay``), so that a load
balancer stops sending new clients before they would be refused.
"""

from __future__ import annotations

import http.client
import signal
import socket
import time

import pytest
from conversations import DEADLINE, converse, free_port

pytestmark = pytest.mark.timeout(40)


def check(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def eventually(probe, expected) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE
    while (found := probe()) != expected:
        assert time.monotonic() < deadline, f"still {found!r}, never {expected!r}"
        time.sleep(0.02)


def refused(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=DEADLINE).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("workers", [None, "2"])
def test_readyz_says_draining_before_the_data_listener_closes(portico_serve, workers) -> None:
    health = free_port()
    extra = ["--workers", workers] if workers else []
    server = portico_serve(
        "upper", "--bind", "127.0.0.1:0", "--health", f"127.0.0.1:{health}",
        "--drain-delay", "1.5", *extra,
    )  # fmt: skip
    address = server.addresses[0]
    eventually(lambda: check(health, "/readyz"), (200, b"ready\n"))
    assert check(health, "/healthz") == (200, b"ok\n")
    assert check(health, "/nowhere")[0] == 404
    server.popen.send_signal(signal.SIGTERM)
    eventually(lambda: check(health, "/readyz"), (503, b"draining\n"))
    # Draining, and the data listener still serves: the load balancer has time to notice.
    assert converse(address, [b"still here\n"]) == [b"STILL HERE\n"]
    assert check(health, "/healthz") == (200, b"ok\n")  # alive all the same
    eventually(lambda: refused(address), True)
    assert server.popen.wait(DEADLINE) == 0


def test_a_health_address_in_use_is_a_clear_error(portico_run) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = portico_run(
            "serve", "upper", "--bind", "127.0.0.1:0", "--health", f"127.0.0.1:{port}"
        )
    assert result.returncode == 2
    assert f"--health 127.0.0.1:{port}" in result.stderr
