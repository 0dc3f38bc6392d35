"""Scale-out behind a real HAProxy: a rolling restart of two instances loses no request.

HAProxy (Debian package ``haproxy``, installed by scripts/system-deps)
balances two ``portico serve`` instances with PROXY v2, and checks each
one's health listener (``option httpchk GET /readyz``).  A client loop from
127.0.0.2 runs through a rolling restart: SIGTERM one instance (its
``/readyz`` flips to "draining", HAProxy takes it out, and only then, after
``--drain-delay``, does it close its listener), start it again, wait until
HAProxy has it back, then the other.  Every request sent is answered, and
the handler saw the original client address on every one.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from conversations import DEADLINE, free_port
from haproxy_support import CLIENT_HOST, GLOBAL, needs_haproxy, server_stats, start_haproxy

from portico.testing import ServerProcess

pytestmark = [
    pytest.mark.timeout(90),
    needs_haproxy,
]

HERE = Path(__file__).parent

CONFIG = (
    GLOBAL
    + """
backend portico
    retries 3
    option redispatch
    option httpchk GET /readyz
    http-check expect status 200
    default-server send-proxy-v2 check inter 100ms fall 1 rise 2
    server a 127.0.0.1:{a} check port {a_health}
    server b 127.0.0.1:{b} check port {b_health}
"""
)


class Instance:
    """One ``portico serve`` on fixed ports, which it keeps across restarts."""

    def __init__(self, portico_serve, name: str) -> None:  # type: ignore[no-untyped-def]
        self.portico_serve, self.name = portico_serve, name
        self.port, self.health = free_port(), free_port()
        self.process = self.start()

    def start(self) -> ServerProcess:
        return self.portico_serve(
            "prefork_handlers:WhoAmI", "--bind", f"127.0.0.1:{self.port}",
            "--proxy-protocol", "v2", "--health", f"127.0.0.1:{self.health}",
            "--drain-delay", "1", pythonpath=HERE,
        )  # fmt: skip

    def restart(self) -> None:
        self.process.popen.send_signal(signal.SIGTERM)
        assert self.process.popen.wait(DEADLINE + 5) == 0
        self.process = self.start()


def server_status(stats: Path, name: str) -> str:
    fields = server_stats(stats, "portico", name)
    return "HAProxy not started yet" if fields is None else fields["status"]


def wait_status(stats: Path, name: str, status: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while (found := server_status(stats, name)) != status:
        assert time.monotonic() < deadline, f"server {name} is {found}, never {status}"
        time.sleep(0.05)


class ClientLoop(threading.Thread):
    """Requests through HAProxy from 127.0.0.2, one connection each, until stopped."""

    def __init__(self, front: int) -> None:
        super().__init__(name="client-loop")
        self.front = front
        self.sent = self.answered = 0
        self.wrong: list[bytes] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 60  # bounded, whatever happens
        while not self.stop.is_set() and time.monotonic() < deadline:
            line = b"request %d\n" % self.sent
            self.sent += 1
            try:
                with socket.create_connection(
                    ("127.0.0.1", self.front), timeout=DEADLINE, source_address=(CLIENT_HOST, 0)
                ) as sock:
                    sock.sendall(line)
                    reply = sock.makefile("rb").readline()
            except OSError as exc:
                self.errors.append(repr(exc))
                continue
            if reply == b"127.0.0.2 " + line.upper():
                self.answered += 1
            else:
                self.wrong.append(reply)
            time.sleep(0.005)  # a steady pace, not synchronisation


def test_a_rolling_restart_behind_haproxy_loses_no_request(portico_serve, tmp_path) -> None:
    a, b = Instance(portico_serve, "a"), Instance(portico_serve, "b")
    front, stats = free_port(), tmp_path / "stats.sock"
    config = tmp_path / "haproxy.cfg"
    text = CONFIG.format(
        front=front, stats=stats, a=a.port, a_health=a.health, b=b.port, b_health=b.health
    )
    haproxy = start_haproxy(config, text)
    with haproxy:
        for instance in (a, b):
            wait_status(stats, instance.name, "UP")
        loop = ClientLoop(front)
        loop.start()
        try:
            for instance in (a, b):
                instance.restart()
                wait_status(stats, instance.name, "UP")
        finally:
            loop.stop.set()
            loop.join(DEADLINE * 2)
        assert loop.sent > 50, "the loop barely ran"
        assert (loop.errors, loop.wrong) == ([], [])
        assert loop.answered == loop.sent
        # HAProxy took each one out because /readyz said so, not because its port closed.
        for instance in (a, b):
            haproxy.wait_for(rf"server portico/{instance.name} .*code: 503", timeout=1)
    for instance in (a, b):
        assert instance.process.stop() == 0
