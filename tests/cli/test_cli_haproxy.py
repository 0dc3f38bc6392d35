"""Behind a real HAProxy: send-proxy and send-proxy-v2 to ``portico serve --proxy-protocol``.

HAProxy (Debian package ``haproxy``, installed by scripts/system-deps) runs
in the foreground on a loopback port with a configuration written by the
test.  The client connects to it from 127.0.0.2, so the handler can tell
the original client (127.0.0.2) from the proxy (127.0.0.1).  HAProxy's own
TCP health checks go to portico too, with their PROXY header, and pass.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conversations import DEADLINE, free_port
from haproxy_support import CLIENT_HOST, GLOBAL, needs_haproxy, server_stats, start_haproxy

from portico.testing import ServerProcess

pytestmark = [
    pytest.mark.timeout(40),
    needs_haproxy,
]

HERE = Path(__file__).parent

CONFIG = (
    GLOBAL
    + """
backend portico
    server portico 127.0.0.1:{back} {send} check inter 200ms
"""
)


def start_proxy(tmp_path: Path, back: int, send: str) -> tuple[ServerProcess, int]:
    front = free_port()
    text = CONFIG.format(front=front, back=back, send=send, stats=tmp_path / "stats.sock")
    haproxy = start_haproxy(tmp_path / "haproxy.cfg", text)
    # Ready once its health check of portico has passed: it then forwards clients.
    haproxy.wait_for(r"Health check for server portico/portico succeeded")
    return haproxy, front


def ask_through(front: int, line: bytes) -> bytes:
    with socket.create_connection(
        ("127.0.0.1", front), timeout=DEADLINE, source_address=(CLIENT_HOST, 0)
    ) as sock:
        sock.sendall(line)
        return sock.makefile("rb").readline()


@pytest.mark.parametrize(("send", "version"), [("send-proxy", "v1"), ("send-proxy-v2", "v2")])
def test_the_handler_sees_the_original_client_behind_haproxy(
    portico_serve, tmp_path: Path, send: str, version: str
) -> None:
    server = portico_serve(
        "prefork_handlers:WhoAmI", "--bind", "127.0.0.1:0", "--proxy-protocol", version,
        pythonpath=HERE,
    )  # fmt: skip
    haproxy, front = start_proxy(tmp_path, server.addresses[0][1], send)
    with haproxy:
        for n in range(5):
            assert ask_through(front, b"hello %d\n" % n) == b"127.0.0.2 HELLO %d\n" % n
        # The checks kept passing all along: HAProxy counts no failed check.
        stats = server_stats(tmp_path / "stats.sock", "portico", "portico")
        assert stats is not None
        assert (stats["status"], stats["check_status"], stats["chkfail"]) == ("UP", "L4OK", "0")
        assert "DOWN" not in haproxy.text
    assert server.stop() == 0
    assert "dropped" not in server.text


def test_a_proxy_outside_proxy_allow_is_refused(portico_serve, tmp_path: Path) -> None:
    server = portico_serve(
        "prefork_handlers:WhoAmI", "--bind", "127.0.0.1:0", "--proxy-protocol", "v2",
        "--proxy-allow", "10.0.0.0/8", "--proxy-timeout", "30", pythonpath=HERE,
    )  # fmt: skip
    back = server.addresses[0][1]
    with socket.create_connection(("127.0.0.1", back), timeout=DEADLINE) as sock:
        # Closed at once: waiting for the 30 s header timeout would time this recv out.
        assert sock.recv(10) == b""
    server.wait_for(r"connection from 127\.0\.0\.1:\d+ dropped: not an allowed proxy")
    assert server.stop() == 0
