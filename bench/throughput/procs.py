"""Server processes: start one pinned to a CPU, wait until it answers, read its memory, stop it.

A server runs in a session of its own, so that stopping it (SIGTERM, then
SIGKILL after a grace period) reaches the children a forking server made, and
nothing else.  Readiness is detected by talking to it: a TCP server is ready
when a connection answers a line upper-cased, a TLS server when it does so over
TLS (its certificate verified against the run's CA, see ``tls.py``), a UDP
server when a datagram is answered; between attempts the harness waits on the
process itself, so a server that dies early is noticed at once.  A server that says when it is
ready (a prefork master, once every worker serves) is probed only after it
has said so.  A prefork master is stopped with SIGTERM to it alone: it drains
its workers and waits for them; SIGKILL to the session is the fallback.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.throughput.build import REPO_ROOT
from bench.throughput.tls import SERVER_NAME, tls_files

__all__ = [
    "PROBE",
    "ServerFailed",
    "ServerProcess",
    "Transport",
    "free_port",
    "pin_current_process",
    "raise_nofile_limit",
    "running_server",
    "wait_ready",
]

Transport = Literal["tcp", "udp", "tls"]  # tls: TCP, with TLS on every connection
PROBE = b"readiness probe from bench.throughput\n"
READY_TIMEOUT = 20.0
PROBE_TIMEOUT = 2.0
PROBE_PAUSE = 0.01  # between connection attempts, spent waiting on the process
STOP_GRACE = 5.0


class ServerFailed(RuntimeError):
    """The server exited, did not answer in time, or answered wrongly."""


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def pin_current_process(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def _pinning(cpu: int | None) -> Callable[[], None] | None:
    """What the child runs before exec: pin itself (the affinity survives exec)."""
    return None if cpu is None else (lambda: pin_current_process(cpu))


def free_port(transport: Transport) -> int:
    """A port the kernel just handed out on 127.0.0.1 (free unless someone races us)."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A started server: its process, and the file that holds its output."""

    popen: subprocess.Popen[bytes]
    log: Path
    stop_leader: bool = False  # SIGTERM to the process alone (it stops its own children)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_kib(self) -> int | None:
        return _status_kib(self.pid, "VmRSS")

    def peak_rss_kib(self) -> int | None:
        """The process's high-water mark (VmHWM); a forking server's children are apart."""
        return _status_kib(self.pid, "VmHWM")

    def tree_pss_kib(self) -> int:
        """The memory of the server and every process it forked, now.

        PSS (proportional set size) shares each page among the processes that map it, so
        the pages a forked child still shares with its parent are not counted twice.
        """
        pids = (self.pid, *descendants(self.pid))
        return sum(_kib_field(f"/proc/{pid}/smaps_rollup", "Pss") or 0 for pid in pids)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, SIGKILL to the session if the server is still there after ``grace``.

        The SIGTERM goes to the session, or with ``stop_leader`` to the server alone.
        """
        for signum in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                if signum == signal.SIGTERM and self.stop_leader:
                    os.kill(self.pid, signum)
                else:
                    os.killpg(self.pid, signum)
            try:
                self.popen.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue


@contextlib.contextmanager
def running_server(
    argv: Sequence[str], *, cpu: int | None, log: Path, stop_leader: bool = False
) -> Iterator[ServerProcess]:
    """Start ``argv`` pinned to ``cpu``, its output in ``log``; stop it on the way out."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=child_environment(),
            start_new_session=True,
            preexec_fn=_pinning(cpu),  # noqa: PLW1509 (the harness runs no threads)
        )
    server = ServerProcess(popen, log, stop_leader)
    try:
        yield server
    finally:
        server.stop()


def child_environment() -> dict[str, str]:
    """This environment, with the repository importable (for ``bench.throughput.peers``)."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def wait_ready(
    server: ServerProcess,
    transport: Transport,
    port: int,
    timeout: float = READY_TIMEOUT,
    *,
    ready: Callable[[], bool] | None = None,
) -> None:
    """Return once the server answers a probe correctly; ServerFailed otherwise.

    With ``ready``, the server is probed only once ``ready()`` is true (it said so).
    """
    probe = {"tcp": _probe_tcp, "udp": _probe_udp, "tls": _probe_tls}[transport]
    deadline = time.monotonic() + timeout
    said = ready is None
    while True:
        said = said or (ready is not None and ready())
        if said and probe(port):
            return
        if server.popen.poll() is not None:
            raise ServerFailed(
                f"exited with status {server.popen.returncode} before answering\n"
                + server.log_tail()
            )
        if time.monotonic() > deadline:
            what = "answer" if said else "say it was ready"
            raise ServerFailed(f"did not {what} within {timeout:g} s\n" + server.log_tail())
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.popen.wait(PROBE_PAUSE)


def check_probe_reply(reply: bytes) -> None:
    if reply != PROBE.upper():
        raise ServerFailed(f"answered {reply!r} to {PROBE!r}: not the upper-cased line")


def _probe_tcp(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT) as sock:
            sock.sendall(PROBE)
            reply = _read_line(sock)
    except OSError:  # refused (not listening yet) or timed out
        return False
    check_probe_reply(reply)
    return True


def _probe_tls(port: int) -> bool:
    """The probe over TLS, the server's certificate verified (for ``localhost``)."""
    context = ssl.create_default_context(cafile=str(tls_files().ca))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=SERVER_NAME) as sock,
        ):
            sock.sendall(PROBE)
            reply = _read_line(sock)
    except ssl.SSLCertVerificationError as exc:
        raise ServerFailed(f"its TLS certificate did not verify: {exc}") from exc
    except OSError:  # refused (not listening yet), timed out, or TLS not up yet
        return False
    check_probe_reply(reply)
    return True


def _read_line(sock: socket.socket, limit: int = 4096) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = sock.recv(limit)
        if not chunk:
            break
        data += chunk
    return data


def _probe_udp(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.connect(("127.0.0.1", port))
            sock.send(PROBE)
            reply = sock.recv(4096)
        except OSError:  # refused (ICMP port unreachable) or no answer yet
            return False
    check_probe_reply(reply)
    return True


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc/PID/task/TID/children (Linux)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        kids = _children(pending.pop())
        found += kids
        pending += kids
    return found


def _children(pid: int) -> list[int]:
    """The children of ``pid``; none if it is gone (processes come and go as we read)."""
    kids: list[int] = []
    try:
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                kids += [int(kid) for kid in children.read_text().split()]
    except OSError:
        pass
    return kids


def _status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/PID/status, or None when the process is gone."""
    return _kib_field(f"/proc/{pid}/status", field)


def _kib_field(path: str, field: str) -> int | None:
    """A ``kB`` field of a /proc file (``Name:   123 kB``), or None."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    return None


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Keep this process (a harness, a client) on ``cpu``, away from the server's; then restore."""
    if cpu is None or not hasattr(os, "sched_getaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    pin_current_process(cpu)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
