"""Running out of descriptors: the server pauses accepting instead of spinning, then resumes.

A portico ``ThreadingTCPServer`` runs in a subprocess (``fd_flood_server.py``)
whose RLIMIT_NOFILE is lowered to 64.  The test opens more connections than
that and holds them: the server accepts until ``accept()`` fails with EMFILE,
and the rest wait in the kernel's backlog, so the listener stays readable.  A
server that retried at once would burn a whole core; portico logs one warning,
takes the listener out of its selector and retries with exponential back-off.
Once the clients go away it accepts again on its own.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portico.testing import ServerProcess

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the server's CPU time from /proc"
)

HELPER = Path(__file__).with_name("fd_flood_server.py")
SERVER_NOFILE = 64
FLOOD = 150  # connections held open: well over the server's descriptor limit
STEP_DEADLINE = 10.0  # generous for a loaded 2-core CI machine, and bounded
CPU_WINDOW = 1.0
CPU_BUDGET = 0.25  # a server spinning on accept() burns about CPU_WINDOW


class FloodedServer(ServerProcess):
    """The helper subprocess, its stderr log lines, and its CPU time."""

    def count(self, pattern: str) -> int:
        """How many of the lines read so far match ``pattern``."""
        return sum(1 for line in self.lines if re.search(pattern, line))

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the whole process (every thread), from /proc."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as file:
            stat = file.read()
        # Fields after "(comm)": state is field 3; utime and stime are fields 14 and 15.
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def enough_descriptors() -> Iterator[None]:
    """Let this process hold the flood: raise its soft limit (never above the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = FLOOD + 256
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} this test needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def server() -> Iterator[FloodedServer]:
    command = [sys.executable, str(HELPER), str(SERVER_NOFILE)]
    with FloodedServer(command, drain=True, timeout=STEP_DEADLINE) as running:
        yield running


def ask(address: tuple[str, int], line: bytes) -> bytes:
    with socket.create_connection(address, timeout=STEP_DEADLINE) as client:
        client.sendall(line)
        with client.makefile("rb") as reply:
            return reply.readline()


@pytest.mark.timeout(60)
def test_descriptor_exhaustion_pauses_accepting_without_spinning_then_recovers(
    enough_descriptors: None, server: FloodedServer
) -> None:
    [listening] = server.wait_for(r"^LISTENING (\d+) NOFILE (\d+)$")
    address = ("127.0.0.1", int(listening[1]))
    assert int(listening[2]) == SERVER_NOFILE

    with contextlib.ExitStack() as flood:
        for _ in range(FLOOD):
            flood.enter_context(socket.create_connection(address, timeout=STEP_DEADLINE))

        # (a) The server ran out of descriptors and said so.
        server.wait_for(r"^WARNING portico\.server accepting paused: ")

        # (b) While it stays exhausted it backs off instead of spinning on the listener.
        cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
        time.sleep(CPU_WINDOW)  # a measurement window, not synchronisation
        cpu_used, wall = server.cpu_seconds() - cpu_before, time.monotonic() - wall_before
        assert server.popen.poll() is None, server.explain("server died while exhausted")
        assert cpu_used < CPU_BUDGET * wall, (
            f"server used {cpu_used:.2f} s of CPU in {wall:.2f} s while out of descriptors"
        )
        assert server.count(r"accepting again") == 0, server.text
        assert server.count(r"accepting paused") == 1, "the pause is logged once:\n" + server.text

        # (c) The flood goes away: the ExitStack closes every client.

    # (d) The server resumes on its own: a new client is answered.
    assert ask(address, b"hello after the flood\n") == b"HELLO AFTER THE FLOOD\n"
    [recovered] = server.wait_for(r"^INFO portico\.server accepting again after (\d+) failed")
    assert int(recovered[1]) >= 1
