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

portico's prefork supervisor has a table of its own, :data:`PREFORK_SERVERS`
(``portico-event-w2``: ``portico serve --engine event --workers 2``), run by
name or by the family ``prefork`` (``--preset prefork`` runs them side by side
with one process): the whole matrix pins every server to one CPU, where more
than one worker means nothing.

Servers that serve TLS list the transport ``tls``: for a TLS cell they are
started with ``--certfile CERT --keyfile KEY`` (the run's certificate, see
``tls.py``): portico's engines (``portico serve --certfile``), the asyncio
peers (``ssl=``), and the C reference built with OpenSSL (``refserver-tls``).
The others are "n/a" there ("no TLS variant").
"""

from __future__ import annotations

import functools
import importlib.util
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.throughput.build import BUILD_DIR, build, build_problem
from bench.throughput.procs import ServerProcess, Transport
from bench.throughput.tls import tls_files
from bench.throughput.workloads import Cell
from portico.cli import serve as portico_serve

__all__ = [
    "ALL_SERVERS",
    "PREFORK_SERVERS",
    "SERVERS",
    "VARIANT_SERVERS",
    "ServerSpec",
    "cli_has_engines",
    "is_prefork",
    "portico_prefork",
    "select_servers",
]

Command = Callable[[Transport, int], list[str]]
# Beyond answering a probe: has the server said it is ready?  (The process, its port.)
Ready = Callable[[ServerProcess, int], bool]
TCP_AND_UDP: frozenset[Transport] = frozenset(("tcp", "udp"))
TCP_UDP_TLS: frozenset[Transport] = frozenset(("tcp", "udp", "tls"))
TCP_AND_TLS: frozenset[Transport] = frozenset(("tcp", "tls"))
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
    ready: Ready | None = None  # said it is ready (before the probe); None: the probe is enough
    # SIGTERM to the process alone (it stops its own children), not to its session.
    stop_leader: bool = False
    # With "tls" in transports: None if it can serve TLS on this machine, else why not.
    tls_available: Callable[[], str | None] = _always_available

    def not_applicable(self, cell: Cell) -> str | None:
        """Why this server cannot serve ``cell`` ("n/a"), or None."""
        if cell.transport not in self.transports:
            return f"no {cell.transport.upper()} variant"
        limit = self.max_connections
        if limit is not None and cell.simultaneous_connections > limit:
            return f"serves {limit} connection{'s' if limit > 1 else ''} at a time"
        return None

    def unavailable(self, cell: Cell | None = None) -> str | None:
        """Why this server cannot run on this machine (``cell``'s TLS included), or None."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install -e '.[peers]')"
        why = self.available()
        if why is None and cell is not None and cell.transport == "tls":
            why = self.tls_available()
        return why


def _transport_flags(transport: Transport) -> list[str]:
    """``--udp``; for TLS, the run's certificate and key; nothing for TCP."""
    if transport == "udp":
        return ["--udp"]
    if transport == "tls":
        files = tls_files()
        return ["--certfile", str(files.certfile), "--keyfile", str(files.keyfile)]
    return []


def _peer_command(module: str, args: tuple[str, ...], transport: Transport, port: int) -> list[str]:
    peer = f"bench.throughput.peers.{module}"
    return [sys.executable, "-m", peer, *args, "--port", str(port), *_transport_flags(transport)]


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
        return [*serve, *address, *_transport_flags(transport)]
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


def _portico_tls_available() -> str | None:
    """None if ``portico serve`` serves TLS (``--certfile``), else why not."""
    if not cli_has_engines():
        return "`portico serve` has no --engine (the stand-in serves no TLS)"
    if not any(setting.flag == "--certfile" for setting in portico_serve.SETTINGS):
        return "`portico serve` has no --certfile"
    return None


def _refserver_command(transport: Transport, port: int) -> list[str]:
    binary = build("refserver-tls" if transport == "tls" else "refserver")
    return [str(binary), "--port", str(port), *_transport_flags(transport)]


def c_reference() -> ServerSpec:
    """bench/c/refserver.c: what the machine allows (over TLS: built with OpenSSL)."""
    return ServerSpec(
        "c-epoll",
        "C epoll reference",
        "c",
        _refserver_command,
        transports=TCP_UDP_TLS,
        tls_available=functools.partial(build_problem, "refserver-tls"),
    )


def portico(
    engine: str,
    *,
    max_connections: int | None = None,
    forks: bool = False,
    options: tuple[str, ...] = (),
    variant: str = "",
) -> ServerSpec:
    """A portico engine, by the name ``portico serve --engine`` takes, with more ``options``.

    A ``variant`` (``portico-event-nodelay``) is the same engine with options that are not
    its defaults: of the family ``variants``, run by name only.
    """
    return ServerSpec(
        f"portico-{engine}" + (f"-{variant}" if variant else ""),
        f"portico {engine}" + (f", {' '.join(options)}" if variant else ""),
        VARIANT_FAMILY if variant else "portico",
        functools.partial(_portico_command, engine, options),
        transports=TCP_UDP_TLS,
        max_connections=max_connections,
        forks=forks,
        available=functools.partial(_portico_available, engine),
        tls_available=_portico_tls_available,
    )


VARIANT_FAMILY = "variants"

# ---------------------------------------------------------------- prefork

PREFORK_FAMILY = "prefork"
PREFORK_NAME = re.compile(
    r"^portico-(?P<engine>[a-z]+)-w(?P<workers>[0-9]+)(?P<reuse>-reuseport)?$"
)
PID_FILES = BUILD_DIR / "run"


def is_prefork(name: str) -> bool:
    """Whether a server name is one of portico's prefork entries (``portico-event-w2``)."""
    return PREFORK_NAME.match(name) is not None


def prefork_pid_file(port: int) -> Path:
    """Where the master on ``port`` writes its pid once every worker serves (``--pid-file``)."""
    return PID_FILES / f"portico-prefork-{port}.pid"


def _prefork_command(
    engine: str,
    workers: int,
    reuse_port: bool,
    options: tuple[str, ...],
    transport: Transport,
    port: int,
) -> list[str]:
    pid_file = prefork_pid_file(port)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.unlink(missing_ok=True)
    serve = [sys.executable, "-m", "portico", "serve", "--engine", engine, *options]
    prefork = ["--workers", str(workers), *(["--reuse-port"] if reuse_port else [])]
    # WARNING: no access log.  At WARNING the master does not log "N workers serving"
    # either, so readiness is its pid file, which it writes at that moment.
    address = ["--bind", f"127.0.0.1:{port}", "--log-level", "WARNING"]
    return [*serve, *prefork, "--pid-file", str(pid_file), *address, *_transport_flags(transport)]


def prefork_ready(workers: int, process: ServerProcess, port: int) -> bool:
    """Every worker serves: the master wrote its pid file, or logged so (at INFO)."""
    try:
        if prefork_pid_file(port).read_text().strip() == str(process.pid):
            return True
    except OSError:
        pass
    return f"master pid {process.pid}: {workers} workers serving" in process.log_tail(50)


def _prefork_available(engine: str) -> str | None:
    if not any(setting.flag == "--workers" for setting in portico_serve.SETTINGS):
        return "`portico serve` has no --workers"
    return _portico_available(engine)


def portico_prefork(
    engine: str,
    workers: int,
    *,
    reuse_port: bool = False,
    options: tuple[str, ...] = (),
) -> ServerSpec:
    """``portico serve --engine ENGINE --workers N [--reuse-port]``: a master and N workers.

    Ready once the master says every worker serves (and a probe is answered); stopped
    with SIGTERM to the master alone, which drains its workers and waits for them.
    CPU and memory are the master's and its workers' together.
    """
    plural = "s" if workers > 1 else ""
    return ServerSpec(
        f"portico-{engine}-w{workers}" + ("-reuseport" if reuse_port else ""),
        f"portico {engine}, {workers} worker{plural}" + (", SO_REUSEPORT" if reuse_port else ""),
        PREFORK_FAMILY,
        functools.partial(_prefork_command, engine, workers, reuse_port, options),
        forks=True,
        available=functools.partial(_prefork_available, engine),
        ready=functools.partial(prefork_ready, workers),
        stop_leader=True,
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
    """asyncio streams or protocols, on the default loop or on uvloop; TLS with ``ssl=``."""
    loop = "uvloop" if uvloop else "default loop"
    return ServerSpec(
        f"asyncio-{api}" + ("-uvloop" if uvloop else ""),
        f"asyncio {'streams' if api == 'streams' else 'Protocol'} ({loop})",
        "asyncio",
        peer("asyncio_upper", "--api", api, *(["--uvloop"] if uvloop else [])),
        transports=TCP_AND_TLS if api == "streams" else TCP_UDP_TLS,
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
# portico's prefork supervisor: not in the whole matrix, which pins each server to one
# CPU (see ``--preset prefork``).  A prefork entry is one line, like an engine.
PREFORK_SERVERS: tuple[ServerSpec, ...] = (
    portico_prefork("event", 1),
    portico_prefork("event", 2),
    portico_prefork("event", 2, reuse_port=True),
    portico_prefork("threads", 1),
    portico_prefork("threads", 2),
    portico_prefork("async", 1),
    portico_prefork("async", 2),
)
# portico with options that are not its defaults, run by name (--preset tls runs the event
# engine with --tcp-nodelay beside its default, see docs/benchmarks.md).
VARIANT_SERVERS: tuple[ServerSpec, ...] = (
    portico("event", options=("--tcp-nodelay",), variant="nodelay"),
    portico("threads", options=("--tcp-nodelay",), variant="nodelay"),
)
ALL_SERVERS: tuple[ServerSpec, ...] = SERVERS + PREFORK_SERVERS + VARIANT_SERVERS


def select_servers(
    names: Iterable[str] | None, table: Iterable[ServerSpec] | None = None
) -> list[ServerSpec]:
    """The servers named, by name (``portico-threads``) or by family (``portico``).

    Without names, the whole matrix (:data:`SERVERS`); names may also pick the prefork
    entries (:data:`PREFORK_SERVERS`, family ``prefork``).
    """
    if not names:
        return list(SERVERS if table is None else table)
    servers = list(ALL_SERVERS if table is None else table)
    wanted = set(names)
    known = {server.name for server in servers} | {server.family for server in servers}
    unknown = wanted - known
    if unknown:
        raise ValueError(
            f"unknown server {', '.join(sorted(unknown))}: choose from {', '.join(sorted(known))}"
        )
    return [s for s in servers if s.name in wanted or s.family in wanted]
