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


# serial runs the handler in the serving thread and fork in a child it waits for: draining
# those (and the rest) on SIGTERM is the lifecycle work still to come.
CONCURRENT = [name for name in ("threads", "pool", "event", "async") if name in available_engines()]


@pytest.mark.parametrize("engine", CONCURRENT)
def test_the_concurrent_engines_stop_at_once_on_sigterm_with_a_connection_open(
    portico_serve, engine: str
) -> None:
    server = portico_serve("upper", "--engine", engine, "--bind", LOCAL)
    with socket.create_connection(server.addresses[0], timeout=DEADLINE) as held:
        held.sendall(b"still here\n")
        assert held.makefile("rb").readline() == b"STILL HERE\n"
        # The CLI does not drain yet: the open connection must not hold it up.
        assert server.stop(signal.SIGTERM, timeout=DEADLINE) == 0


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
