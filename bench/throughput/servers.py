"""Every server under test, registered by name in one table: :data:`SERVERS`.

Each entry says how to start the server for TCP or UDP on a given port, what
it can serve (transports; how many connections at once), and what it needs.
A cell a server cannot serve is reported "n/a" with the reason, never run.

Adding a portico engine is one line in the table, ``portico("event")``: the
entry runs ``portico serve --engine event --log-level WARNING``, and is
reported "n/a" (with portico's reason) while the engine cannot run here.  On
a tree whose CLI has no ``--engine`` yet, the engines that exist as classes
(``serial``, ``threads``, ``fork``) are served by
``peers/socketserver_upper.py`` with portico's classes and built-in handler.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bench.throughput.build import build
from bench.throughput.procs import Transport
from bench.throughput.workloads import Cell
from portico.cli import serve as portico_serve

__all__ = ["SERVERS", "ServerSpec", "cli_has_engines", "select_servers"]

Command = Callable[[Transport, int], list[str]]
TCP_AND_UDP: frozenset[Transport] = frozenset(("tcp", "udp"))
TCP_ONLY: frozenset[Transport] = frozenset(("tcp",))
FORK_LIMIT = 40  # ForkingMixIn.max_children: past it, the server waits for a child to exit
# The pool's size, given explicitly: its default (16 per CPU the process may use) would
# see one CPU in a server pinned to CPU 0.  32 is that default for this 2-CPU machine.
POOL_WORKERS = 32
# The portico engines that exist as server classes today (see peers/socketserver_upper.py).
CLASS_ENGINES = ("serial", "threads", "fork")
STDLIB_LABELS = {
    "serial": "stdlib TCPServer / UDPServer",
    "threads": "stdlib ThreadingTCPServer / ThreadingUDPServer",
    "fork": "stdlib ForkingTCPServer / ForkingUDPServer",
}


def _always_available() -> str | None:
    return None


@dataclass(frozen=True)
class ServerSpec:
    """One server under test."""

    name: str  # as given to --servers
    label: str  # as shown in tables
    family: str  # c, portico, stdlib, asyncio, gevent (also accepted by --servers)
    command: Command
    transports: frozenset[Transport] = TCP_AND_UDP
    max_connections: int | None = None  # connections served at once; None: no limit
    forks: bool = False  # children do the work: memory is summed over the process tree
    requires: tuple[str, ...] = ()  # Python modules it needs (optional extras)
    available: Callable[[], str | None] = _always_available  # None, or why not here

    def not_applicable(self, cell: Cell) -> str | None:
        """Why this server cannot serve ``cell`` ("n/a"), or None."""
        if cell.transport not in self.transports:
            return f"no {cell.transport.upper()} variant"
        limit = self.max_connections
        if limit is not None and cell.simultaneous_connections > limit:
            return f"serves {limit} connection{'s' if limit > 1 else ''} at a time"
        return None

    def unavailable(self) -> str | None:
        """Why this server cannot run on this machine, or None."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install -e '.[peers]')"
        return self.available()


def _udp_flag(transport: Transport) -> list[str]:
    return ["--udp"] if transport == "udp" else []


def _peer_command(module: str, args: tuple[str, ...], transport: Transport, port: int) -> list[str]:
    peer = f"bench.throughput.peers.{module}"
    return [sys.executable, "-m", peer, *args, "--port", str(port), *_udp_flag(transport)]


def peer(module: str, *args: str) -> Command:
    """Run ``python -m bench.throughput.peers.MODULE ARGS --port N [--udp]``."""
    return functools.partial(_peer_command, module, args)


@functools.cache
def cli_has_engines() -> bool:
    """Whether ``portico serve`` takes ``--engine`` yet."""
    return any(setting.flag == "--engine" for setting in portico_serve.SETTINGS)


def _portico_command(
    engine: str, options: tuple[str, ...], transport: Transport, port: int
) -> list[str]:
    if cli_has_engines():
        serve = [sys.executable, "-m", "portico", "serve", "--engine", engine, *options]
        # WARNING: no access log (at INFO it would wrap and time every connection).
        address = ["--bind", f"127.0.0.1:{port}", "--log-level", "WARNING"]
        return [*serve, *address, *_udp_flag(transport)]
    return _peer_command(
        "socketserver_upper", ("--module", "portico", "--engine", engine), transport, port
    )


def _portico_available(engine: str) -> str | None:
    """None if ``portico serve --engine ENGINE`` runs here, else why not (portico says)."""
    if not cli_has_engines():
        return None if engine in CLASS_ENGINES else f"`portico serve` has no --engine {engine}"
    try:
        from portico.engines import ENGINES  # noqa: PLC0415 (a tree without engines/ works)
    except ImportError:
        return None
    spec = ENGINES.get(engine)
    if spec is None:
        return f"portico has no engine {engine!r}"
    return f"engine {engine!r} is {spec.unavailable}" if spec.unavailable else None


def _refserver_command(transport: Transport, port: int) -> list[str]:
    return [str(build("refserver")), "--port", str(port), *_udp_flag(transport)]


def c_reference() -> ServerSpec:
    """bench/c/refserver.c: what the machine allows."""
    return ServerSpec("c-epoll", "C epoll reference", "c", _refserver_command)


def portico(
    engine: str,
    *,
    max_connections: int | None = None,
    forks: bool = False,
    options: tuple[str, ...] = (),
) -> ServerSpec:
    """A portico engine, by the name ``portico serve --engine`` takes, with more ``options``."""
    return ServerSpec(
        f"portico-{engine}",
        f"portico {engine}",
        "portico",
        functools.partial(_portico_command, engine, options),
        max_connections=max_connections,
        forks=forks,
        available=functools.partial(_portico_available, engine),
    )


def stdlib(engine: str, *, max_connections: int | None = None, forks: bool = False) -> ServerSpec:
    """The stdlib's socketserver class for one of portico's class engines."""
    return ServerSpec(
        f"stdlib-{engine}",
        STDLIB_LABELS[engine],
        "stdlib",
        peer("socketserver_upper", "--module", "socketserver", "--engine", engine),
        max_connections=max_connections,
        forks=forks,
    )


def asyncio_peer(api: str, *, uvloop: bool = False) -> ServerSpec:
    """asyncio streams or protocols, on the default loop or on uvloop."""
    loop = "uvloop" if uvloop else "default loop"
    return ServerSpec(
        f"asyncio-{api}" + ("-uvloop" if uvloop else ""),
        f"asyncio {'streams' if api == 'streams' else 'Protocol'} ({loop})",
        "asyncio",
        peer("asyncio_upper", "--api", api, *(["--uvloop"] if uvloop else [])),
        transports=TCP_ONLY if api == "streams" else TCP_AND_UDP,
        requires=("uvloop",) if uvloop else (),
    )


def gevent_peer() -> ServerSpec:
    return ServerSpec(
        "gevent",
        "gevent StreamServer / DatagramServer",
        "gevent",
        peer("gevent_upper"),
        requires=("gevent",),
    )


# The table.  One line per server; the order is the order of the report's rows.
SERVERS: tuple[ServerSpec, ...] = (
    c_reference(),
    portico("serial", max_connections=1),
    portico("threads"),
    portico("fork", max_connections=FORK_LIMIT, forks=True),
    portico("pool", max_connections=POOL_WORKERS, options=("--max-workers", str(POOL_WORKERS))),
    portico("event"),
    portico("async"),
    stdlib("serial", max_connections=1),
    stdlib("threads"),
    stdlib("fork", max_connections=FORK_LIMIT, forks=True),
    asyncio_peer("streams"),
    asyncio_peer("streams", uvloop=True),
    asyncio_peer("protocol"),
    asyncio_peer("protocol", uvloop=True),
    gevent_peer(),
)


def select_servers(
    names: Iterable[str] | None, table: Iterable[ServerSpec] = SERVERS
) -> list[ServerSpec]:
    """The servers named, by name (``portico-threads``) or by family (``portico``)."""
    servers = list(table)
    if not names:
        return servers
    wanted = set(names)
    known = {server.name for server in servers} | {server.family for server in servers}
    unknown = wanted - known
    if unknown:
        raise ValueError(
            f"unknown server {', '.join(sorted(unknown))}: choose from {', '.join(sorted(known))}"
        )
    return [s for s in servers if s.name in wanted or s.family in wanted]
