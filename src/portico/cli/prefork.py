"""``portico serve --workers N``: the settings of the prefork supervisor, and building it.

The master builds the server as a single-process ``portico serve`` would
(bound, or around inherited sockets), then :class:`portico.prefork.Supervisor`
forks the workers that serve it.  With ``--reuse-port`` each worker builds
and binds a server of its own instead.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from portico.cli.handlers import load_callable
from portico.cli.settings import (
    Setting,
    parse_bool,
    parse_count,
    parse_positive_int,
    parse_positive_seconds,
)
from portico.errors import ConfigurationError
from portico.prefork import Supervisor

__all__ = ["PREFORK_ONLY", "SETTINGS", "build_supervisor"]


def parse_init_spec(text: str) -> str:
    module, sep, name = text.partition(":")
    if not (sep and module and name):
        raise ConfigurationError(f"{text!r} is not module:function")
    return text


SETTINGS = (
    Setting(
        "workers",
        parse_positive_int,
        flag="--workers",
        metavar="N",
        env="PORTICO_WORKERS",
        help="serve from N worker processes under a supervising master (prefork); "
        "without it, one process serves",
    ),
    Setting(
        "reuse_port",
        parse_bool,
        flag="--reuse-port",
        default="no",
        env="PORTICO_REUSE_PORT",
        switch=True,
        help="bind with SO_REUSEPORT; with --workers, each worker binds its own socket and "
        "the kernel spreads the connections, instead of every worker sharing the master's",
    ),
    Setting(
        "worker_timeout",
        parse_positive_seconds,
        flag="--worker-timeout",
        metavar="SECONDS",
        default="30",
        env="PORTICO_WORKER_TIMEOUT",
        help="a worker whose serving loop is silent this long (or that takes this long to "
        "boot) is killed and replaced",
    ),
    Setting(
        "max_requests",
        parse_count,
        flag="--max-requests",
        metavar="N",
        default="0",
        env="PORTICO_MAX_REQUESTS",
        help="a worker that has served N connections (or datagrams) is replaced; 0: never",
    ),
    Setting(
        "max_requests_jitter",
        parse_count,
        flag="--max-requests-jitter",
        metavar="N",
        default="0",
        env="PORTICO_MAX_REQUESTS_JITTER",
        help="add a random 0..N to each worker's --max-requests, so that they do not all "
        "retire together",
    ),
    Setting(
        "worker_init",
        parse_init_spec,
        flag="--worker-init",
        metavar="MODULE:FUNCTION",
        env="PORTICO_WORKER_INIT",
        help="call FUNCTION(server) in each worker before it serves (open per-process "
        "resources there); if it raises, the worker failed to boot",
    ),
)

# Settings that mean nothing without --workers (--reuse-port alone lets other processes
# bind the same port).
PREFORK_ONLY = tuple(
    setting.name for setting in SETTINGS if setting.name not in ("workers", "reuse_port")
)


def build_supervisor(config: Any, make_server: Callable[[], Any]) -> Supervisor:
    """The supervisor for ``config`` (a ServeConfig), serving ``make_server()``'s server."""
    worker_init = None
    if config.worker_init is not None:
        worker_init = load_callable(config.worker_init, what="--worker-init", expected="a function")
    return Supervisor(
        make_server,
        workers=config.workers,
        reuse_port=config.reuse_port,
        drain_timeout=config.drain_timeout,
        worker_timeout=config.worker_timeout,
        max_requests=config.max_requests,
        max_requests_jitter=config.max_requests_jitter,
        worker_init=worker_init,
        # The master reloads the certificates on SIGHUP; the new workers inherit them.
        on_reload=None if config.tls is None else _reload_tls,
        pid_file=config.pid_file,
    )


def check_reuse_port(
    addresses: tuple[Any, ...], *, inherited: bool, unix: bool, per_worker: bool
) -> None:
    """--reuse-port binds TCP/UDP addresses (fixed ones, when each worker binds its own)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigurationError("--reuse-port: SO_REUSEPORT is not available here")
    if inherited or unix:
        raise ConfigurationError(
            "--reuse-port is an option of the sockets portico binds: it cannot apply to "
            "inherited sockets or a Unix socket"
        )
    if not per_worker:
        return
    for address in addresses:
        if address[1] == 0:
            raise ConfigurationError(
                "--reuse-port needs fixed ports: with port 0 each worker would get another"
            )


def _reload_tls(server: Any) -> None:
    server.reload_tls()
