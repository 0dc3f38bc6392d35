"""``portico serve``: serve a handler on TCP, UDP or a Unix socket until a signal stops it.

The first address builds the server and the others are added with
``add_listener()``.  Sockets handed down instead (systemd's ``LISTEN_FDS``,
or ``--fd N``) are served as they are, their family and type read from the
socket.  Under systemd (``NOTIFY_SOCKET``) the server says READY=1 once it
listens, STOPPING=1 when it stops, and pings the watchdog if asked to.

SIGINT and SIGTERM drain the server (``serve_until_signalled``): the
listeners close, the connections in flight get ``--drain-timeout`` seconds,
a second signal closes them at once.  With ``--workers N`` the process is a
prefork master instead (:mod:`portico.cli.prefork`): it builds the same
server, then forks N workers that serve it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from portico.cli import limits, listening, prefork, proxy, tls
from portico.cli.builtin import BUILTINS, DEFAULT_HANDLER
from portico.cli.handlers import load_handler, parse_handler_spec
from portico.cli.logs import LOG_FORMATS, configure_logging
from portico.cli.servers import Transport, transport_for
from portico.cli.settings import (
    Command,
    Resolved,
    Setting,
    parse_access_level,
    parse_bool,
    parse_choice,
    parse_count,
    parse_log_level,
    parse_octal_mode,
    parse_positive_int,
    parse_seconds,
)
from portico.engines import DEFAULT_ENGINE, ENGINES, choose_engine, default_max_workers
from portico.errors import ConfigurationError
from portico.net import activation, notify
from portico.net.addresses import format_address, parse_host_port
from portico.net.listeners import TCPKeepalive, bind_errors_explained
from portico.ops.health import DRAINING, READY, HealthListener
from portico.ops.metrics import MetricsRoute, read_statistics, snapshot_dict
from portico.prefork.upgrade import UPGRADE_VARIABLE, remove_pid_file, write_pid_file
from portico.server.handlers import StreamRequestHandler
from portico.server.inet import TCPServer
from portico.server.lifecycle import serve_until_signalled
from portico.server.proxy import LOOPBACK, parse_networks

if TYPE_CHECKING:
    from portico.tls.config import TLSConfig

__all__ = ["COMMAND", "SETTINGS", "ServeConfig", "run"]

log = logging.getLogger("portico.cli")


def parse_unix_path(text: str) -> str:
    """A socket file's path, or ``@name`` for a Linux abstract socket (no file)."""
    if not text or "\0" in text or text == "@":
        raise ConfigurationError(f"{text!r} is not a usable socket path")
    return "\0" + text[1:] if text.startswith("@") else text


def parse_descriptor(text: str) -> int:
    try:
        fd = int(text.strip())
    except ValueError:
        raise ConfigurationError(f"{text!r} is not a descriptor number") from None
    if fd < 0:
        raise ConfigurationError(f"{text!r} is not a descriptor number")
    return fd


def parse_engine(text: str) -> str:
    """An engine name that can run here."""
    return choose_engine(text.strip()).name


SETTINGS = (
    Setting(
        "handler",
        parse_handler_spec,
        metavar="HANDLER",
        default=DEFAULT_HANDLER,
        env="PORTICO_HANDLER",
        help="built-in handler (upper, echo, discard) or module:Class",
    ),
    Setting(
        "bind",
        parse_host_port,
        flag="--bind",
        metavar="HOST:PORT",
        default="127.0.0.1:9999",
        env="PORTICO_BIND",
        repeat=True,
        help="address to listen on; IPv6 in brackets, as [::1]:9999; the variable takes a "
        "comma-separated list",
    ),
    Setting(
        "udp",
        parse_bool,
        flag="--udp",
        default="no",
        env="PORTICO_UDP",
        switch=True,
        help="serve datagrams: UDP, or Unix datagrams with --unix",
    ),
    Setting(
        "unix",
        parse_unix_path,
        flag="--unix",
        metavar="PATH",
        env="PORTICO_UNIX",
        help="serve a Unix socket at PATH instead of TCP/UDP; @NAME is a Linux abstract "
        "socket (no file)",
    ),
    Setting(
        "unix_mode",
        parse_octal_mode,
        flag="--unix-mode",
        metavar="OCTAL",
        env="PORTICO_UNIX_MODE",
        help="permission bits of the --unix socket file, e.g. 660",
    ),
    Setting(
        "fd",
        parse_descriptor,
        flag="--fd",
        metavar="N",
        env="PORTICO_FD",
        repeat=True,
        help="serve the bound socket inherited at descriptor N instead of binding; sockets "
        "that systemd passes (LISTEN_FDS) are served without it",
    ),
    Setting(
        "engine",
        parse_engine,
        flag="--engine",
        metavar="ENGINE",
        default=DEFAULT_ENGINE,
        env="PORTICO_ENGINE",
        help=f"how requests run: {', '.join(ENGINES)} (see docs/engines.md)",
    ),
    Setting(
        "max_workers",
        parse_positive_int,
        flag="--max-workers",
        metavar="N",
        env="PORTICO_MAX_WORKERS",
        # No figure of this machine's here: the settings reference is generated from this.
        help="most requests the pool engine runs at once (default: 16 per CPU, at most 256)",
    ),
    Setting(
        "max_line_length",
        parse_count,
        flag="--max-line-length",
        metavar="BYTES",
        default="65536",
        env="PORTICO_MAX_LINE_LENGTH",
        help="the longest line a handler's rfile returns, newline included; a longer one "
        "closes the connection with a log line (0: unbounded)",
    ),
    Setting(
        "drain_timeout",
        parse_seconds,
        flag="--drain-timeout",
        metavar="SECONDS",
        default="30",
        env="PORTICO_DRAIN_TIMEOUT",
        help="on SIGTERM or SIGINT, how long the connections in flight may take to finish "
        "before they are closed (a second signal closes them at once)",
    ),
    Setting(
        "drain_delay",
        parse_seconds,
        flag="--drain-delay",
        metavar="SECONDS",
        default="0",
        env="PORTICO_DRAIN_DELAY",
        help="on SIGTERM or SIGINT, say draining on --health at once but keep serving this "
        "long before the listeners close, so that a load balancer stops sending clients first",
    ),
    Setting(
        "metrics",
        parse_host_port,
        flag="--metrics",
        metavar="HOST:PORT",
        env="PORTICO_METRICS",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (every worker's, under "
        "--workers); needs portico[metrics]; may share --health's address",
    ),
    Setting(
        "health",
        parse_host_port,
        flag="--health",
        metavar="HOST:PORT",
        env="PORTICO_HEALTH",
        help="answer GET /healthz (alive) and /readyz (200 ready; 503 starting or draining) "
        "over HTTP on this address",
    ),
    *limits.SETTINGS,
    *listening.SETTINGS,
    *proxy.SETTINGS,
    *prefork.SETTINGS,
    *tls.SETTINGS,
    Setting(
        "pid_file",
        str,
        flag="--pid-file",
        metavar="PATH",
        env="PORTICO_PID_FILE",
        help="write the serving (master) process's pid to PATH once it serves; a "
        "zero-downtime restart (SIGUSR2) rewrites it",
    ),
    Setting(
        "log_level",
        parse_log_level,
        flag="--log-level",
        metavar="LEVEL",
        default="INFO",
        env="PORTICO_LOG_LEVEL",
        help="DEBUG, INFO (connections), WARNING, ERROR or CRITICAL",
    ),
    Setting(
        "log_format",
        parse_choice(LOG_FORMATS),
        flag="--log-format",
        metavar="FORMAT",
        default="text",
        env="PORTICO_LOG_FORMAT",
        help="text (one line per record) or json (one object per line)",
    ),
    Setting(
        "access_log_level",
        parse_access_level,
        flag="--access-log-level",
        metavar="LEVEL",
        env="PORTICO_ACCESS_LOG_LEVEL",
        help="the access log's own level (one INFO line per connection): DEBUG, INFO, "
        "WARNING (no access lines), ... or OFF (default: --log-level)",
    ),
)


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``portico serve`` was asked to do."""

    handler: str
    bind: tuple[tuple[str, int], ...]
    udp: bool
    unix: str | None
    unix_mode: int | None
    log_level: str
    # Defaults only so that a config built by hand may leave them out; the
    # command line's defaults are those of the settings above.
    engine: str = DEFAULT_ENGINE
    max_workers: int | None = None
    fd: tuple[int, ...] = ()
    drain_timeout: float = 30.0
    max_line_length: int = 65536
    first_byte_timeout: float = 30.0
    idle_timeout: float = 300.0
    connection_timeout: float = 0.0
    min_receive_rate: float = 100.0
    min_receive_rate_window: float = 20.0
    send_timeout: float = 60.0
    max_connections: int | str = "auto"
    max_connections_per_client: int = 0
    client_prefix: tuple[int, int] = (32, 128)
    max_accept_rate: float = 0.0
    overload: str = "pause"
    busy_reply: bytes | None = None
    backlog: int | None = None
    tcp_nodelay: bool = False
    tcp_keepalive: TCPKeepalive | None = None
    ipv6_only: bool = False
    unix_owner: str | int | None = None
    unix_group: str | int | None = None
    proxy_protocol: str | None = None
    proxy_allow: tuple[Any, ...] = parse_networks(LOOPBACK)
    proxy_timeout: float = 5.0
    workers: int | None = None
    reuse_port: bool = False
    worker_timeout: float = 30.0
    max_requests: int = 0
    max_requests_jitter: int = 0
    worker_init: str | None = None
    pid_file: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    ca_certs: str | None = None
    client_cert: str = "none"
    sni_cert: tuple[tuple[str, str, str | None], ...] = ()
    alpn: tuple[str, ...] = ()
    tls_handshake_timeout: float = 10.0
    log_format: str = "text"
    drain_delay: float = 0.0
    health: tuple[str, int] | None = None
    metrics: tuple[str, int] | None = None
    access_log_level: str | None = None

    @cached_property
    def tls(self) -> TLSConfig | None:
        """What the TLS settings make (None without --certfile); built once."""
        return tls.tls_config(vars(self))

    @classmethod
    def from_settings(cls, resolved: Resolved) -> ServeConfig:
        given = resolved.given
        if "unix" in given and "bind" in given:
            raise ConfigurationError("--unix and --bind cannot be combined")
        for name in proxy.PROXY_ONLY:
            if name in given and "proxy_protocol" not in given:
                raise ConfigurationError(f"--{name.replace('_', '-')} needs --proxy-protocol")
        for name in ("unix_owner", "unix_group"):
            if name in given and "unix" not in given:
                raise ConfigurationError(f"--{name.replace('_', '-')} needs --unix")
        if "unix_mode" in given and "unix" not in given:
            raise ConfigurationError("--unix-mode needs --unix")
        if "fd" in given and given & {"bind", "unix", "udp"}:
            raise ConfigurationError(
                "--fd serves the socket as it is: it cannot be combined with --bind, --unix "
                "or --udp"
            )
        engine = choose_engine(resolved.values["engine"])
        if "max_workers" in given and not engine.bounded:
            raise ConfigurationError(f"--max-workers needs --engine pool, not {engine.name}")
        _check_no_duplicates(resolved.values["bind"])
        for name in prefork.PREFORK_ONLY:
            if name in given and "workers" not in given:
                flag = name.replace("_", "-")
                raise ConfigurationError(f"--{flag} needs --workers")
        tls.check_tls_settings(resolved.values, given)
        config = cls(**resolved.values)
        _ = config.tls  # a bad TLS setting (a wildcard in the middle of a name) fails now
        return config

    @property
    def addresses(self) -> tuple[Any, ...]:
        return (self.unix,) if self.unix is not None else self.bind


def _check_no_duplicates(addresses: tuple[tuple[str, int], ...]) -> None:
    seen: set[tuple[str, int]] = set()
    for address in addresses:
        if address in seen and address[1] != 0:
            raise ConfigurationError(f"--bind {format_address(address)} is given twice")
        seen.add(address)


class Operations:
    """The --health and --metrics listeners (one, when they share an address)."""

    def __init__(self, config: ServeConfig, snapshots: Callable[[], Any]) -> None:
        self.listeners: list[HealthListener] = []
        metrics_route = {} if config.metrics is None else {"/metrics": MetricsRoute(snapshots)}
        if config.health is not None:
            shared = config.metrics == config.health
            self._open(config.health, "--health", metrics_route if shared else {})
            if shared:
                metrics_route = {}
        if metrics_route:
            assert config.metrics is not None
            self._open(config.metrics, "--metrics", metrics_route)

    def _open(self, address: tuple[str, int], flag: str, routes: dict[str, Any]) -> None:
        try:
            listener = HealthListener(address, routes)
        except OSError as exc:
            self.close()
            raise ConfigurationError(
                f"{flag} {format_address(address)}: {exc.strerror or exc}"
            ) from None
        self.listeners.append(listener)
        for path in sorted(listener.routes):
            log.info("%s on http://%s%s", flag[2:], format_address(listener.address), path)

    def set_state(self, state: str) -> None:
        for listener in self.listeners:
            listener.state = state

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()


def run(resolved: Resolved) -> int:
    config = ServeConfig.from_settings(resolved)
    configure_logging(config.log_level, config.log_format, config.access_log_level)
    # A new master taking over from the old one (SIGUSR2) serves the old one's sockets.
    upgrading = UPGRADE_VARIABLE in os.environ
    given_addresses = bool(resolved.given & {"bind", "unix"}) and not upgrading
    inherited = inherited_sockets(config, given_addresses=given_addresses, upgrading=upgrading)
    if config.reuse_port:
        prefork.check_reuse_port(
            config.addresses,
            inherited=bool(inherited),
            unix=config.unix is not None,
            per_worker=config.workers is not None,
        )
    try:
        if inherited:
            transport = transport_of(inherited)
        else:
            transport = transport_for(unix=config.unix is not None, udp=config.udp)
        handler = load_handler(config.handler, datagram=transport.datagram)
        if config.engine == "async" and config.handler in BUILTINS:
            handler = BUILTINS[config.handler].async_variant(datagram=transport.datagram)
        handler = with_line_limit(handler, config.max_line_length)
    except BaseException:
        for _, sock in inherited:
            sock.close()
        raise
    if config.workers is not None:
        return run_prefork(config, transport, handler, inherited)
    if inherited:
        server = adopt_server(transport, handler, config, inherited)
    else:
        server = open_server(transport, handler, config)
    return serve_one_process(config, transport, server)


def serve_one_process(config: ServeConfig, transport: Transport, server: Any) -> int:
    """Serve in this process until a stop signal, then drain; the health listener alongside."""
    operations: Operations | None = None
    try:
        log.info("handler %s over %s", config.handler, transport.name)
        log_engine(server, config.engine)
        # Bound before "serving on" is logged.
        operations = Operations(config, lambda: [({}, snapshot_dict(server.statistics()))])
        for listener in operations.listeners:
            listener.serve_in_thread()
        log_addresses(server)

        def serving() -> None:
            notify.notify("READY=1\nSTATUS=serving")
            if config.pid_file is not None:
                write_pid_file(config.pid_file)
            if operations is not None:
                operations.set_state(READY)

        def draining() -> None:  # in the signal handler: it only records
            if operations is not None:
                operations.set_state(DRAINING)

        # shutdown() wakes the loop at once; the poll interval only bounds how
        # late a signal that the OS delivered to another thread is noticed.
        serve_until_signalled(
            server,
            drain_timeout=config.drain_timeout,
            poll_interval=watch_for_systemd(server),
            serving=serving,
            stopping=lambda: notify.notify("STOPPING=1"),
            reload=None if config.tls is None else server.reload_tls,
            draining=draining,
            drain_delay=config.drain_delay,
        )
    finally:
        if operations is not None:
            operations.close()
        server.server_close()
        if config.pid_file is not None:
            remove_pid_file(config.pid_file)
    return 0


def run_prefork(
    config: ServeConfig,
    transport: Transport,
    handler: Callable[..., Any],
    inherited: list[tuple[str, socket.socket]],
) -> int:
    """Be the master of ``config.workers`` workers; returns once they have all stopped."""

    def make_server() -> TCPServer:
        if inherited:
            return adopt_server(transport, handler, config, inherited)
        return open_server(transport, handler, config)

    supervisor = prefork.build_supervisor(config, make_server)
    server = supervisor.open()
    log.info("handler %s over %s", config.handler, transport.name)
    log_engine(server, config.engine)
    if config.metrics is not None:
        supervisor.statistics_dir = tempfile.mkdtemp(prefix="portico-statistics-")
    directory = supervisor.statistics_dir
    operations = Operations(
        config, lambda: read_statistics(directory or "", supervisor.worker_pids())
    )
    supervisor.listeners = operations.listeners  # answered from the master's own loop
    supervisor.drain_delay = config.drain_delay
    log_addresses(server)
    try:
        supervisor.run()
    finally:
        operations.close()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


def inherited_sockets(
    config: ServeConfig, *, given_addresses: bool, upgrading: bool = False
) -> list[tuple[str, socket.socket]]:
    """The sockets to serve as they are: ``--fd``'s, else systemd's, else none.

    A new master taking over (``upgrading``) serves the ones its old master
    passed, systemd-style, whatever its command line says.
    """
    if config.fd and not upgrading:
        found: list[tuple[str, socket.socket]] = []
        try:
            for fd in config.fd:
                found.append((f"--fd {fd}", activation.inherit_socket(fd)))
        except BaseException:
            for _, sock in found:
                sock.close()
            raise
        return found
    from_systemd = activation.listen_fds()
    if from_systemd and given_addresses:
        for _, sock in from_systemd:
            sock.close()
        raise ConfigurationError(
            "systemd passed sockets (LISTEN_FDS): serve them without --bind or --unix"
        )
    return [(f"systemd {name}", sock) for name, sock in from_systemd]


def transport_of(inherited: list[tuple[str, socket.socket]]) -> Transport:
    """The transport of the inherited sockets, which must all be streams or all datagrams."""
    kinds = {sock.type for _, sock in inherited}
    if len(kinds) > 1:
        raise ConfigurationError("the inherited sockets mix streams and datagrams")
    first = inherited[0][1]
    return transport_for(unix=first.family == socket.AF_UNIX, udp=first.type == socket.SOCK_DGRAM)


def adopt_server(
    transport: Transport,
    handler: Callable[..., Any],
    config: ServeConfig,
    inherited: list[tuple[str, socket.socket]],
) -> TCPServer:
    """Build the server around inherited sockets: the first is its socket, the others added."""
    (_, first), *others = inherited
    server = transport.server_class(config.engine)(
        first.getsockname(), handler, bind_and_activate=False
    )
    if config.max_workers is not None:
        server.max_workers = config.max_workers  # type: ignore[attr-defined]
    server.adopt_socket(first)
    try:
        use_tls(server, config)
    except BaseException:
        server.server_close()
        raise
    for _, sock in others:
        server.add_listener(sock)
    for origin, sock in inherited:
        log.info("inherited %s: %s", origin, format_address(sock.getsockname()))
    return server


def watch_for_systemd(server: TCPServer) -> float:
    """Ping systemd's watchdog from the serving loop if it asks; returns the poll interval."""
    interval = notify.watchdog_interval()
    if interval is None:
        return 0.5
    watchdog = notify.Watchdog(interval)
    service_actions = server.service_actions

    def actions_and_watchdog() -> None:
        service_actions()
        watchdog.tick()

    server.service_actions = actions_and_watchdog  # type: ignore[method-assign]
    return min(0.5, interval / 4)


def open_server(
    transport: Transport, handler: Callable[..., Any], config: ServeConfig
) -> TCPServer:
    """Build the server on the first address, then add the others; close it on failure."""
    first, *others = config.addresses
    server_class = transport.server_class(config.engine)
    with bind_errors_explained(first):
        server = server_class(first, handler, bind_and_activate=False)
    server.unix_socket_mode = config.unix_mode
    listening.apply_listener_settings(server, config)
    if config.reuse_port:
        # Each prefork worker binds its own socket (an instance attribute: 3.10 has no class one).
        server.allow_reuse_port = True  # type: ignore[attr-defined]
    if config.max_workers is not None:
        server.max_workers = config.max_workers  # type: ignore[attr-defined]
    try:
        with bind_errors_explained(first):
            server.server_bind()
            server.server_activate()
        use_tls(server, config)
        for address in others:
            with bind_errors_explained(address):
                server.add_listener(address)
    except BaseException:
        server.server_close()
        raise
    return server


def with_line_limit(handler: Callable[..., Any], maximum: int) -> Callable[..., Any]:
    """``handler``, its rfile lines bounded to ``maximum`` bytes (0: unbounded).

    Only a portico stream handler that sets no limit of its own gets the
    command's: a stdlib handler reads its own way (``http.server`` bounds
    its lines itself), and a handler's own ``max_line_length`` wins.  An
    async handler's default (``AsyncStreamRequestHandler``'s) is not its own.
    """
    if not isinstance(handler, type):
        return handler
    if issubclass(handler, StreamRequestHandler):
        if not maximum or handler.max_line_length is not None:
            return handler
    elif not _keeps_the_async_default(handler):
        return handler
    attributes = {"max_line_length": maximum or None, "__module__": handler.__module__}
    return type(handler.__name__, (handler,), attributes)


def _keeps_the_async_default(handler: type) -> bool:
    """An async stream handler whose classes never set ``max_line_length``."""
    names = [klass.__name__ for klass in handler.__mro__]
    if "AsyncStreamRequestHandler" not in names:
        return False  # asyncio is not even imported unless the async engine serves
    from portico.engines.aio_handlers import AsyncStreamRequestHandler  # noqa: PLC0415

    own = getattr(handler, "max_line_length", None)
    return own == AsyncStreamRequestHandler.max_line_length and not any(
        "max_line_length" in vars(klass)
        for klass in handler.__mro__[: handler.__mro__.index(AsyncStreamRequestHandler)]
    )


def use_tls(server: TCPServer, config: ServeConfig) -> None:
    """Time limits; PROXY headers and TLS (the certificates are read now) if asked."""
    limits.apply_limits(server, config)
    proxy.apply_proxy_settings(server, config)
    if config.tls is not None:
        server.tls_handshake_timeout = config.tls_handshake_timeout
        server.use_tls(config.tls)


def log_engine(server: TCPServer, engine: str) -> None:
    if choose_engine(engine).bounded:
        bound = getattr(server, "max_workers", None) or default_max_workers()
        log.info("engine %s: at most %d requests at once", engine, bound)
    else:
        log.info("engine %s", engine)


def log_addresses(server: TCPServer) -> None:
    for address in server.server_addresses:
        log.info("serving on %s", format_address(address))


COMMAND = Command(
    name="serve",
    summary="serve a handler on TCP, UDP or a Unix socket",
    settings=SETTINGS,
    run=run,
)
