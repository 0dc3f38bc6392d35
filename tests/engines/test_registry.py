"""The engine registry: the names, what each one builds, and the engines not there yet."""

from __future__ import annotations

import inspect
import os
import socketserver
import subprocess
import sys

import pytest

import portico
from portico import engines
from portico.engines import (
    ENGINES,
    Engine,
    EngineSpec,
    PoolMixIn,
    PoolTCPServer,
    PoolUDPServer,
    WorkerPool,
    available_engines,
    choose_engine,
    server_class,
)
from portico.errors import ConfigurationError

pytestmark = pytest.mark.timeout(10)


def test_the_engine_names_are_exactly_those_of_the_command_line() -> None:
    assert tuple(ENGINES) == ("serial", "threads", "fork", "pool", "event", "async")
    # The tests install the ``fast`` extra, so every engine runs here.
    assert "event" in available_engines()
    if hasattr(os, "fork"):
        assert available_engines()[:5] == ("serial", "threads", "fork", "pool", "event")


def test_an_engine_that_cannot_run_here_says_why() -> None:
    spec = EngineSpec("event", "tasks", unavailable="not available: it needs greenlet")
    with pytest.raises(ConfigurationError) as caught:
        spec.server_class(portico.TCPServer)
    message = str(caught.value)
    assert "engine 'event' is not available: it needs greenlet" in message
    assert "choose one of serial, threads" in message


def test_an_unknown_engine_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="unknown engine 'green': use one of serial"):
        choose_engine("green")


def test_the_stdlib_engines_are_the_stdlib_classes() -> None:
    assert server_class("serial", portico.TCPServer) is portico.TCPServer
    assert server_class("serial", portico.UDPServer) is portico.UDPServer
    assert server_class("threads", portico.TCPServer) is portico.ThreadingTCPServer
    assert server_class("threads", portico.UDPServer) is portico.ThreadingUDPServer
    assert server_class("threads", portico.UnixStreamServer) is portico.ThreadingUnixStreamServer
    assert ENGINES["threads"].mixin is portico.ThreadingMixIn
    if hasattr(os, "fork"):
        assert server_class("fork", portico.TCPServer) is portico.ForkingTCPServer
        assert server_class("fork", portico.UDPServer) is portico.ForkingUDPServer
        assert ENGINES["fork"].mixin is portico.ForkingMixIn


def test_the_pool_engine_is_the_pool_servers() -> None:
    assert server_class("pool", portico.TCPServer) is PoolTCPServer
    assert server_class("pool", portico.UDPServer) is PoolUDPServer
    assert server_class("pool", portico.UnixStreamServer) is engines.PoolUnixStreamServer
    assert server_class("pool", portico.UnixDatagramServer) is engines.PoolUnixDatagramServer
    assert ENGINES["pool"].bounded
    assert not any(spec.bounded for name, spec in ENGINES.items() if name != "pool")


def test_any_server_class_is_composed_once_with_the_mixin_first() -> None:
    class Custom(portico.TCPServer):
        pass

    composed = server_class("pool", Custom)
    assert composed.__bases__ == (PoolMixIn, Custom)
    assert composed.__name__ == "PoolCustom"
    assert server_class("pool", Custom) is composed
    threaded = server_class("threads", Custom)
    assert threaded.__bases__ == (portico.ThreadingMixIn, Custom)
    assert threaded.__name__ == "ThreadingCustom"


def test_portico_all_is_still_the_stdlib_all() -> None:
    assert sorted(portico.__all__) == sorted(socketserver.__all__)
    assert not [name for name in portico.__all__ if name.startswith("Pool")]


def test_the_worker_pool_has_every_member_of_the_engine_protocol() -> None:
    members = [name for name in vars(Engine) if not name.startswith("_")]
    assert set(members) >= {"submit", "can_accept", "drain", "close", "statistics"}
    for name in members:
        if name == "name":
            continue
        declared = inspect.signature(getattr(Engine, name))
        implemented = inspect.signature(getattr(WorkerPool, name))
        assert list(declared.parameters) == list(implemented.parameters), name
    assert WorkerPool.name == "pool"


def test_engines_are_imported_only_when_chosen() -> None:
    # asyncio (~10 MiB) and greenlet must not weigh on servers that do not use them:
    # a bigger process forks more slowly, among other things.
    probe = (
        "import sys, portico, portico.engines, portico.cli.main\n"
        "from portico.engines import server_class\n"
        "server_class('pool', portico.TCPServer)\n"
        "print(sorted(m for m in ('asyncio', 'greenlet') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=20, check=True
    )
    assert result.stdout == "[]\n"
