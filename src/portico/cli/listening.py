"""``portico serve`` listener settings: backlog, TCP options, IPv6-only, Unix socket owner.

Each maps to a server attribute of the same meaning (``request_queue_size``,
``tcp_nodelay``, ``tcp_keepalive``, ``ipv6_only``, ``unix_socket_owner``,
``unix_socket_group``), set before the server binds, so that every listener
it opens (``--bind`` given several times included) gets them.
"""

from __future__ import annotations

from typing import Any

from portico.cli.settings import Setting, parse_bool, parse_positive_int
from portico.errors import ConfigurationError
from portico.net.listeners import TCPKeepalive

__all__ = ["SETTINGS", "apply_listener_settings", "parse_keepalive"]


def parse_keepalive(text: str) -> TCPKeepalive:
    """``IDLE,INTERVAL,COUNT`` in seconds, seconds and probes: ``60,10,6``."""
    parts = [part.strip() for part in text.split(",")]
    try:
        idle, interval, count = (int(part) for part in parts)
    except ValueError:
        raise ConfigurationError(f"{text!r} is not IDLE,INTERVAL,COUNT (e.g. 60,10,6)") from None
    if min(idle, interval, count) < 1:
        raise ConfigurationError(f"{text!r}: every keep-alive number must be at least 1")
    return TCPKeepalive(idle, interval, count)


def parse_user(text: str) -> str | int:
    """A user or group name, or a number."""
    name = text.strip()
    if not name:
        raise ConfigurationError("an empty user or group")
    return int(name) if name.isdigit() else name


SETTINGS = (
    Setting(
        "backlog",
        parse_positive_int,
        flag="--backlog",
        metavar="N",
        env="PORTICO_BACKLOG",
        help="connections the kernel queues before accept (default: the system maximum)",
    ),
    Setting(
        "tcp_nodelay",
        parse_bool,
        flag="--tcp-nodelay",
        default="no",
        env="PORTICO_TCP_NODELAY",
        switch=True,
        help="disable Nagle's algorithm on every connection (small replies go out at once)",
    ),
    Setting(
        "tcp_keepalive",
        parse_keepalive,
        flag="--tcp-keepalive",
        metavar="IDLE,INTERVAL,COUNT",
        env="PORTICO_TCP_KEEPALIVE",
        help="probe silent connections: after IDLE seconds, every INTERVAL, drop after "
        "COUNT unanswered probes",
    ),
    Setting(
        "ipv6_only",
        parse_bool,
        flag="--ipv6-only",
        default="no",
        env="PORTICO_IPV6_ONLY",
        switch=True,
        help="IPv6 listeners serve IPv6 clients only ([::] then leaves IPv4 to another "
        "--bind 0.0.0.0:PORT)",
    ),
    Setting(
        "unix_owner",
        parse_user,
        flag="--unix-owner",
        metavar="USER",
        env="PORTICO_UNIX_OWNER",
        help="owner of the --unix socket file (name or uid)",
    ),
    Setting(
        "unix_group",
        parse_user,
        flag="--unix-group",
        metavar="GROUP",
        env="PORTICO_UNIX_GROUP",
        help="group of the --unix socket file (name or gid)",
    ),
)


def apply_listener_settings(server: Any, config: Any) -> None:
    """Set the listener attributes of ``server`` (not bound yet) from a ServeConfig."""
    if config.backlog is not None:
        server.request_queue_size = config.backlog
    server.tcp_nodelay = config.tcp_nodelay
    server.tcp_keepalive = config.tcp_keepalive
    server.ipv6_only = True if config.ipv6_only else None
    server.unix_socket_owner = config.unix_owner
    server.unix_socket_group = config.unix_group
