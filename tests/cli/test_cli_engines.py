"""``portico serve --engine``: every available engine serves the upper handler, TCP and UDP."""

from __future__ import annotations

import signal
import socket
import threading

import pytest
from conversations import DEADLINE, converse, udp_exchange

from portico.engines import available_engines, default_max_workers

pytestmark = pytest.mark.timeout(20)

LOCAL = "127.0.0.1:0"


@pytest.mark.parametrize("engine", available_engines())
def test_each_engine_serves_upper_over_tcp(portico_serve, engine: str) -> None:
    server = portico_serve("upper", "--engine", engine, "--bind", LOCAL)
    address = server.addresses[0]
    lines = [b"hello\n", b"Engine " + engine.encode() + b"\n"]
    results: list[list[bytes]] = []

    def client() -> None:
        results.append(converse(address, lines))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(DEADLINE)
    assert results == [[line.upper() for line in lines]] * 4
    server.wait_for(rf"INFO portico\.cli: engine {engine}\b")
    assert server.stop() == 0


@pytest.mark.parametrize("engine", available_engines())
def test_each_engine_serves_upper_over_udp(portico_serve, engine: str) -> None:
    server = portico_serve("upper", "--udp", "--engine", engine, "--bind", LOCAL)
    address = server.addresses[0]
    for number in range(5):
        assert udp_exchange(address, b"datagram %d" % number) == b"DATAGRAM %d" % number
    server.wait_for(r"INFO portico\.cli: handler upper over udp$")
    server.wait_for(rf"INFO portico\.cli: engine {engine}\b")
    assert server.stop() == 0


def test_threads_is_the_default_engine(portico_serve) -> None:
    server = portico_serve("--bind", LOCAL)
    assert converse(server.addresses[0], [b"x\n"]) == [b"X\n"]
    server.wait_for(r"INFO portico\.cli: engine threads$")


def test_the_pool_engine_takes_max_workers_from_the_command_line_or_environment(
    portico_serve,
) -> None:
    server = portico_serve("--engine", "pool", "--max-workers", "3", "--bind", LOCAL)
    assert converse(server.addresses[0], [b"pool\n"]) == [b"POOL\n"]
    server.wait_for(r"INFO portico\.cli: engine pool: at most 3 requests at once$")
    from_env = portico_serve(
        "--bind", LOCAL, env={"PORTICO_ENGINE": "pool", "PORTICO_MAX_WORKERS": "2"}
    )
    assert converse(from_env.addresses[0], [b"env\n"]) == [b"ENV\n"]
    from_env.wait_for(r"INFO portico\.cli: engine pool: at most 2 requests at once$")
    default = portico_serve("--engine", "pool", "--bind", LOCAL)
    default.wait_for(rf"engine pool: at most {default_max_workers()} requests at once$")


# serial runs the handler in the serving thread, which stops only once it returns: its drain
# is tested in process (tests/features/test_drain.py).
CONCURRENT = [
    name for name in ("threads", "fork", "pool", "event", "async") if name in available_engines()
]
DRAINING = r"INFO portico\.server: draining: the listeners are closed"


@pytest.mark.parametrize("engine", CONCURRENT)
def test_sigterm_drains_the_connections_in_flight(portico_serve, engine: str) -> None:
    server = portico_serve("upper", "--engine", engine, "--bind", LOCAL)
    address = server.addresses[0]
    with (
        socket.create_connection(address, timeout=DEADLINE) as held,
        held.makefile("rb") as replies,
    ):
        held.sendall(b"before\n")
        assert replies.readline() == b"BEFORE\n"
        server.popen.send_signal(signal.SIGTERM)
        server.wait_for(DRAINING)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=DEADLINE).close()
        held.sendall(b"during the drain\n")
        assert replies.readline() == b"DURING THE DRAIN\n"
    assert server.wait() == 0  # once the client closed
    server.wait_for(r"INFO portico\.server: drained: every connection finished$")


@pytest.mark.parametrize("engine", CONCURRENT)
def test_the_drain_deadline_closes_what_is_left(portico_serve, engine: str) -> None:
    server = portico_serve("--engine", engine, "--bind", LOCAL, "--drain-timeout", "0.3")
    with socket.create_connection(server.addresses[0], timeout=DEADLINE) as held:
        held.sendall(b"idle next\n")
        assert held.recv(64) == b"IDLE NEXT\n"
        server.popen.send_signal(signal.SIGTERM)
        assert server.wait() == 0
        assert held.recv(64) == b""  # closed by the server, not left hanging
    server.wait_for(r"WARNING portico\.server: drain deadline passed")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_second_signal_stops_at_once(portico_serve, signum: int) -> None:
    server = portico_serve("--bind", LOCAL)  # threads, draining for up to 30 s
    with socket.create_connection(server.addresses[0], timeout=DEADLINE) as held:
        held.sendall(b"held\n")
        assert held.recv(64) == b"HELD\n"
        server.popen.send_signal(signum)
        server.wait_for(DRAINING)
        server.popen.send_signal(signum)
        assert server.wait() == 0
        assert held.recv(64) == b""
    name = signal.Signals(signum).name
    server.wait_for(rf"WARNING portico\.server: stopping at once on a second {name}$")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--engine", "green"], {}, "--engine: unknown engine 'green': use one of serial"),
        ([], {"PORTICO_ENGINE": "green"}, "PORTICO_ENGINE: unknown engine 'green'"),
        (["--engine", "pool", "--max-workers", "0"], {}, "--max-workers: '0' is not a positive"),
        (["--engine", "pool", "--max-workers", "many"], {}, "'many' is not a whole number"),
        (["--max-workers", "4"], {}, "--max-workers needs --engine pool, not threads"),
        (["--engine", "fork"], {"PORTICO_MAX_WORKERS": "4"}, "--max-workers needs --engine pool"),
    ],
)
def test_bad_engine_settings_are_usage_errors(portico_run, args, env, message) -> None:
    result = portico_run("serve", *args, "--bind", LOCAL, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_the_engines(portico_run) -> None:
    result = portico_run("serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines where it likes
    assert "how requests run: serial, threads, fork, pool, event, async" in text
    assert "--max-workers N" in text
