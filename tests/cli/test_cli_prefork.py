"""``portico serve --workers N``: the prefork master, its workers and its signals, for real.

Every test runs a real master process with real workers on loopback, sends
real signals, and (where the issue asks "under load") keeps a client loop
running through the event: no request may fail.  Workers find the test
handlers through PYTHONPATH.  Every wait is on a log line or a socket, with
a deadline; fork warnings are errors (``PYTHONWARNINGS``), so a master that
forked with a thread running would fail.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from clients import ClientLoop
from conversations import DEADLINE, converse, converse_on, free_port, udp_exchange

from portico.engines import available_engines

pytestmark = pytest.mark.timeout(40)

HERE = Path(__file__).parent
LOCAL = "127.0.0.1:0"
STRICT = {"PYTHONWARNINGS": "error::DeprecationWarning"}
SERVING = r"INFO portico\.prefork: worker (\d+) \(pid (\d+)\) serving"
ALL_SERVING = r"INFO portico\.prefork: master pid \d+: \d+ workers serving"


def start_master(portico_serve, *args: str, workers: int = 2, **kwargs):
    server = portico_serve(
        *args,
        "--workers",
        str(workers),
        "--drain-timeout",
        "5",
        env=STRICT,
        pythonpath=HERE,
        **kwargs,
    )
    server.wait_for(ALL_SERVING)
    return server


def serving_pids(server, since: int = 0) -> list[int]:
    return [int(m.group(2)) for m in map(re.compile(SERVING).search, server.lines[since:]) if m]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pid: int, timeout: float = DEADLINE) -> None:
    """Wait for a process that is not our child to exit (a pidfd becomes readable)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"pid {pid} did not exit within {timeout} s"
    finally:
        os.close(fd)


def assert_no_fork_warning(server) -> None:
    assert "multi-threaded" not in server.text, server.text


# -- serving and stopping ------------------------------------------------------


@pytest.mark.parametrize("engine", available_engines())
def test_each_engine_serves_from_two_workers_and_drains_on_term(portico_serve, engine: str):
    server = start_master(portico_serve, "upper", "--engine", engine, "--bind", LOCAL)
    pids = serving_pids(server)
    assert len(set(pids)) == 2 and server.pid not in pids
    assert converse(server.addresses[0], [b"hello\n", b"again\n"]) == [b"HELLO\n", b"AGAIN\n"]
    assert server.stop(signal.SIGTERM) == 0
    assert not any(alive(pid) for pid in pids)
    assert_no_fork_warning(server)


def test_term_under_load_answers_every_started_request_and_refuses_the_rest(portico_serve):
    server = start_master(portico_serve, "upper", "--bind", LOCAL)
    address = server.addresses[0]
    in_flight = socket.create_connection(address, timeout=DEADLINE)
    with in_flight, ClientLoop(address, stop_when_refused=True) as load:
        assert converse_on(in_flight, [b"before\n"]) == [b"BEFORE\n"]
        load.wait_for_answers(200)
        started = time.monotonic()
        server.popen.send_signal(signal.SIGTERM)
        server.wait_for(r"portico\.server: draining: the listeners are closed", 2)
        # A connection that was being served before the signal is served to its end.
        assert converse_on(in_flight, [b"after\n"]) == [b"AFTER\n"]
        in_flight.shutdown(socket.SHUT_WR)
        assert server.wait(DEADLINE) == 0
        elapsed = time.monotonic() - started
        load.stop()
        assert not load.failures, load.summary()
        assert load.refused > 0, load.summary()  # the loop ran past the close
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=DEADLINE)
    assert elapsed < 5 + 2, "the master exceeded --drain-timeout"
    assert_no_fork_warning(server)


def test_term_kills_a_worker_still_busy_past_the_drain_deadline(portico_serve):
    server = portico_serve(
        "upper", "--bind", LOCAL, "--workers", "1", "--drain-timeout", "0.5", env=STRICT
    )
    server.wait_for(ALL_SERVING)
    with socket.create_connection(server.addresses[0], timeout=DEADLINE) as idle:
        assert converse_on(idle, [b"x\n"]) == [b"X\n"]
        assert server.stop(signal.SIGTERM) == 0  # the idle connection was closed for it
    assert "drain deadline passed" in server.text


def test_a_second_sigint_stops_at_once(portico_serve):
    server = start_master(portico_serve, "upper", "--bind", LOCAL)
    with socket.create_connection(server.addresses[0], timeout=DEADLINE) as idle:
        assert converse_on(idle, [b"x\n"]) == [b"X\n"]
        server.popen.send_signal(signal.SIGINT)
        server.wait_for(r"stopping on SIGINT: draining 2 workers")
        server.popen.send_signal(signal.SIGINT)
        server.wait_for(r"stopping at once on SIGINT")
        assert server.wait(3) == 0


# -- replacing workers ------------------------------------------------------------


@contextmanager
def connections_per_worker(address, workers: int) -> Iterator[dict[int, socket.socket]]:
    """One persistent connection to each worker (the kernel picks the worker)."""
    found: dict[int, socket.socket] = {}
    extra: list[socket.socket] = []
    try:
        for _ in range(200):
            sock = socket.create_connection(address, timeout=DEADLINE)
            pid = int(converse_on(sock, [b"who\n"])[0].split()[0])
            if pid in found:
                extra.append(sock)
            else:
                found[pid] = sock
            if len(found) == workers:
                break
        assert len(found) == workers, f"reached only workers {sorted(found)}"
        yield found
    finally:
        for sock in [*found.values(), *extra]:
            sock.close()


def test_kill_9_of_a_worker_spares_the_others_and_is_replaced_within_a_second(portico_serve):
    server = start_master(portico_serve, "prefork_handlers:PidUpper", "--bind", LOCAL)
    with connections_per_worker(server.addresses[0], 2) as by_worker:
        victim, survivor = sorted(by_worker)
        since = len(server.lines)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        server.wait_for(rf"worker \d+ \(pid {victim}\) died \(killed by SIGKILL\); replacing it")
        server.wait_for(SERVING, timeout=max(0.0, killed + 1.0 - time.monotonic()), since=since)
        # The survivor's client saw nothing happen.
        for n in range(20):
            reply = converse_on(by_worker[survivor], [b"still %d\n" % n])
            assert reply == [b"%d STILL %d\n" % (survivor, n)]
    replacement = serving_pids(server, since)[0]
    assert alive(replacement) and replacement not in (victim, survivor)
    assert server.stop(signal.SIGTERM) == 0


def test_a_hung_worker_is_killed_and_replaced(portico_serve):
    server = start_master(
        portico_serve,
        "prefork_handlers:PidUpper",
        "--engine",
        "serial",
        "--worker-timeout",
        "2",
        "--bind",
        LOCAL,
        workers=1,
    )
    with socket.create_connection(server.addresses[0], timeout=DEADLINE) as sock:
        sock.sendall(b"hang\n")  # the serial worker's loop now never returns
        since = len(server.lines)
        server.wait_for(r"worker 1 \(pid \d+\) is hung: no heartbeat", timeout=DEADLINE)
        server.wait_for(SERVING, since=since)
    assert converse(server.addresses[0], [b"ok\n"])[0].endswith(b" OK\n")
    assert server.stop(signal.SIGTERM) == 0


def test_max_requests_recycles_workers_without_a_failed_request(portico_serve):
    server = start_master(
        portico_serve,
        "prefork_handlers:PidUpper",
        "--max-requests",
        "5",
        "--bind",
        LOCAL,
        workers=1,
    )
    pids = set()
    for n in range(16):
        pids.add(int(converse(server.addresses[0], [b"n %d\n" % n])[0].split()[0]))
    assert len(pids) >= 3, pids  # 16 connections, 5 per worker
    server.wait_for(r"worker 1 \(pid \d+\) retiring after 5 requests")
    assert server.stop(signal.SIGTERM) == 0


# -- signals under load: zero failures ---------------------------------------------


def test_hup_replaces_every_worker_under_load_without_a_failure(portico_serve):
    server = start_master(portico_serve, "prefork_handlers:PidUpper", "--bind", LOCAL)
    old = set(serving_pids(server))
    with ClientLoop(server.addresses[0]) as load:
        load.wait_for_answers(200)
        since = len(server.lines)
        server.popen.send_signal(signal.SIGHUP)
        server.wait_for(r"reload: the new workers serve; draining the old ones", since=since)
        server.wait_for(r"worker \d+ \(pid \d+\) stopped \(exit status 0\)", 2, since=since)
        load.wait_for_answers(200)
        load.stop()
        assert not load.failures and not load.refused, load.summary()
    new = set(serving_pids(server, since))
    assert len(new) == 2 and not new & old
    assert not any(alive(pid) for pid in old)
    assert server.stop(signal.SIGTERM) == 0


def test_ttin_and_ttou_add_and_remove_workers_under_load(portico_serve):
    server = start_master(portico_serve, "upper", "--bind", LOCAL)
    with ClientLoop(server.addresses[0]) as load:
        load.wait_for_answers(100)
        since = len(server.lines)
        server.popen.send_signal(signal.SIGTTIN)
        server.wait_for(r"worker 3 \(pid \d+\) serving", since=since)
        load.wait_for_answers(100)
        server.popen.send_signal(signal.SIGTTOU)
        server.wait_for(r"worker 1 \(pid \d+\) stopped: 2 workers wanted", since=since)
        server.wait_for(r"worker 1 \(pid \d+\) stopped \(exit status 0\)", since=since)
        load.wait_for_answers(100)
        load.stop()
        assert not load.failures and not load.refused, load.summary()
    assert server.stop(signal.SIGTERM) == 0


def test_usr2_hands_the_sockets_to_a_new_master_without_a_failure(portico_serve, short_tmp):
    pid_file = short_tmp / "portico.pid"
    server = start_master(
        portico_serve, "prefork_handlers:PidUpper", "--bind", LOCAL, "--pid-file", str(pid_file)
    )
    assert int(pid_file.read_text()) == server.pid
    old_workers = set(serving_pids(server))
    new_master = 0
    try:
        with ClientLoop(server.addresses[0]) as load:
            load.wait_for_answers(200)
            server.popen.send_signal(signal.SIGUSR2)
            match = server.wait_for(r"upgrading on SIGUSR2: new master pid (\d+) started")[0]
            new_master = int(match.group(1))
            server.wait_for(rf"upgrade: serving; asking the old master \(pid {server.pid}\)")
            assert server.wait(DEADLINE + 2) == 0  # the old master drained and left
            load.wait_for_answers(200)  # the new master's workers answer now
            load.stop()
            assert not load.failures and not load.refused, load.summary()
        assert int(pid_file.read_text()) == new_master
        assert not any(alive(pid) for pid in old_workers)
        assert converse(server.addresses[0], [b"new\n"])[0].endswith(b" NEW\n")
        os.kill(new_master, signal.SIGTERM)
        wait_gone(new_master)
        assert not pid_file.exists()
    finally:
        if new_master and alive(new_master):
            os.kill(new_master, signal.SIGKILL)


# -- transports, boot failures, systemd --------------------------------------------


def test_udp_and_unix_sockets_are_served_by_workers(portico_serve, short_tmp):
    udp = start_master(portico_serve, "upper", "--udp", "--bind", LOCAL)
    assert udp_exchange(udp.addresses[0], b"datagram\n") == b"DATAGRAM\n"
    path = str(short_tmp / "portico.sock")
    unix = start_master(portico_serve, "upper", "--unix", path)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(DEADLINE)
        sock.connect(path)
        assert converse_on(sock, [b"unix\n"]) == [b"UNIX\n"]
    assert udp.stop(signal.SIGTERM) == 0
    assert unix.stop(signal.SIGTERM) == 0
    assert not os.path.exists(path)  # the master bound it, so the master removes it


def test_reuse_port_workers_bind_their_own_sockets(portico_serve):
    port = free_port()  # --reuse-port needs a fixed one
    server = start_master(portico_serve, "upper", "--reuse-port", "--bind", f"127.0.0.1:{port}")
    for n in range(10):
        assert converse(("127.0.0.1", port), [b"r %d\n" % n]) == [b"R %d\n" % n]
    assert server.stop(signal.SIGTERM) == 0


def test_worker_init_runs_in_each_worker(portico_serve):
    server = start_master(
        portico_serve, "upper", "--worker-init", "prefork_handlers:note_boot", "--bind", LOCAL
    )
    assert converse(server.addresses[0], [b"x\n"]) == [b"X\n"]
    assert server.stop(signal.SIGTERM) == 0


def test_a_worker_that_cannot_boot_stops_the_master_with_exit_status_3(portico_run):
    result = portico_run(
        "serve",
        "upper",
        "--bind",
        LOCAL,
        "--workers",
        "2",
        "--worker-init",
        "prefork_handlers:refuse_to_boot",
        env=STRICT,
        pythonpath=HERE,
    )
    assert result.returncode == 3, result.stderr
    assert "the database is unreachable" in result.stderr
    assert "could not boot" in result.stderr and "stopping, not retrying" in result.stderr
    assert result.stderr.count("failed to boot") <= 2  # no crash loop
    assert result.stderr.strip().splitlines()[-1].startswith("portico: worker ")


def test_prefork_settings_need_workers(portico_run):
    result = portico_run("serve", "upper", "--max-requests", "10")
    assert result.returncode == 2 and "--max-requests needs --workers" in result.stderr
    result = portico_run("serve", "upper", "--workers", "2", "--reuse-port", "--bind", LOCAL)
    assert result.returncode == 2 and "--reuse-port needs fixed ports" in result.stderr


ACTIVATE = shutil.which("systemd-socket-activate")
needs_activate = pytest.mark.skipif(ACTIVATE is None, reason="needs systemd-socket-activate")
# systemd-socket-activate passes the service only the variables it is told to.
SETENV = [f"--setenv=PYTHONPATH={HERE}", f"--setenv=PYTHONWARNINGS={STRICT['PYTHONWARNINGS']}"]


@needs_activate
def test_systemd_socket_activation_serves_from_workers(portico_serve) -> None:
    port = free_port()
    server = portico_serve(
        "prefork_handlers:PidUpper",
        "--workers",
        "2",
        env=STRICT,
        pythonpath=HERE,
        prefix=[ACTIVATE, *SETENV, "-l", f"127.0.0.1:{port}"],
        listeners=0,
    )
    server.wait_for(rf"Listening on 127\.0\.0\.1:{port}")
    # The first client wakes the service; it waits in the socket's queue meanwhile.
    first = converse(("127.0.0.1", port), [b"activated\n"])[0]
    server.wait_for(ALL_SERVING)
    workers = serving_pids(server)
    assert int(first.split()[0]) in workers and first.endswith(b" ACTIVATED\n")
    assert server.pid not in workers  # the master (systemd's child) serves nothing itself
    assert server.stop() == 0


@needs_activate
def test_under_systemd_a_worker_that_cannot_boot_stops_the_master_with_3(portico_serve):
    port = free_port()
    server = portico_serve(
        "upper",
        "--workers",
        "2",
        "--worker-init",
        "prefork_handlers:refuse_to_boot",
        env=STRICT,
        pythonpath=HERE,
        prefix=[ACTIVATE, *SETENV, "-l", f"127.0.0.1:{port}"],
        listeners=0,
    )
    server.wait_for(rf"Listening on 127\.0\.0\.1:{port}")
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE):
        assert server.wait(DEADLINE) == 3
    server.wait_for(r"^portico: worker \d+ \(pid \d+\) could not boot")
