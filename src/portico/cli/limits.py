"""``portico serve`` limits per connection and per server, on by default.

The command serves whatever may reach it, so its defaults are an operator's
(portico.server.protections): a client has 30 s to say something, 5 minutes
of silence between requests, must not trickle its bytes slower than 100 a
second (a slowloris client is dropped within 20 s), and has a minute to take
each reply (portico.net.guard); and the server stops accepting before it runs
out of descriptors (portico.server.admission).  0 turns a limit off.  The
stdlib-named server classes keep all of them off until set.
"""

from __future__ import annotations

import codecs
from typing import Any

from portico.cli.settings import Setting, parse_choice, parse_count, parse_seconds
from portico.errors import ConfigurationError
from portico.server.admission import OVERLOAD_POLICIES
from portico.server.protections import (
    FIRST_BYTE_TIMEOUT,
    IDLE_TIMEOUT,
    MIN_RECEIVE_RATE,
    MIN_RECEIVE_RATE_WINDOW,
    SEND_TIMEOUT,
)

__all__ = ["SETTINGS", "apply_limits"]


def parse_rate(text: str) -> float:
    try:
        rate = float(text.strip())
    except ValueError:
        raise ConfigurationError(f"{text!r} is not a number of bytes per second") from None
    if not rate >= 0:
        raise ConfigurationError(f"{text!r} is negative")
    return rate


def parse_max_connections(text: str) -> int | str:
    """``auto`` (from the descriptor limit), or a count (0: no limit)."""
    if text.strip().lower() == "auto":
        return "auto"
    return parse_count(text)


def parse_client_prefix(text: str) -> tuple[int, int]:
    """``V4[,V6]``: the prefix lengths that make addresses one client, e.g. ``24,64``."""
    parts = text.split(",")
    try:
        v4 = int(parts[0])
        v6 = int(parts[1]) if len(parts) > 1 else 128
    except ValueError:
        raise ConfigurationError(f"{text!r} is not V4[,V6] prefix lengths (e.g. 24,64)") from None
    if len(parts) > 2 or not (0 <= v4 <= 32 and 0 <= v6 <= 128):
        raise ConfigurationError(f"{text!r} is not V4[,V6] with V4 in 0-32 and V6 in 0-128")
    return v4, v6


def parse_reply(text: str) -> bytes:
    """Text with backslash escapes (``busy\\r\\n``), as bytes."""
    try:
        return codecs.decode(text, "unicode_escape").encode("latin-1")
    except (UnicodeError, ValueError) as exc:
        raise ConfigurationError(f"{text!r} is not text with backslash escapes: {exc}") from None


SETTINGS = (
    Setting(
        "first_byte_timeout",
        parse_seconds,
        flag="--first-byte-timeout",
        metavar="SECONDS",
        default=f"{FIRST_BYTE_TIMEOUT:g}",
        env="PORTICO_FIRST_BYTE_TIMEOUT",
        help="close a connection whose client sends nothing this long after connecting (0: off)",
    ),
    Setting(
        "idle_timeout",
        parse_seconds,
        flag="--idle-timeout",
        metavar="SECONDS",
        default=f"{IDLE_TIMEOUT:g}",
        env="PORTICO_IDLE_TIMEOUT",
        help="close a connection when the handler waits this long for the client's next "
        "bytes (0: off)",
    ),
    Setting(
        "connection_timeout",
        parse_seconds,
        flag="--connection-timeout",
        metavar="SECONDS",
        default="0",
        env="PORTICO_CONNECTION_TIMEOUT",
        help="close any connection open longer than this (0: off)",
    ),
    Setting(
        "min_receive_rate",
        parse_rate,
        flag="--min-receive-rate",
        metavar="BYTES_PER_SECOND",
        default=f"{MIN_RECEIVE_RATE:g}",
        env="PORTICO_MIN_RECEIVE_RATE",
        help="once a client starts sending, close it if it sends fewer bytes a second than "
        "this over --min-receive-rate-window (slowloris; 0: off)",
    ),
    Setting(
        "min_receive_rate_window",
        parse_seconds,
        flag="--min-receive-rate-window",
        metavar="SECONDS",
        default=f"{MIN_RECEIVE_RATE_WINDOW:g}",
        env="PORTICO_MIN_RECEIVE_RATE_WINDOW",
        help="the window of --min-receive-rate",
    ),
    Setting(
        "send_timeout",
        parse_seconds,
        flag="--send-timeout",
        metavar="SECONDS",
        default=f"{SEND_TIMEOUT:g}",
        env="PORTICO_SEND_TIMEOUT",
        help="close a connection whose client takes none of a reply for this long (0: off)",
    ),
    Setting(
        "max_connections",
        parse_max_connections,
        flag="--max-connections",
        metavar="N",
        default="auto",
        env="PORTICO_MAX_CONNECTIONS",
        help="connections open at once, per process; auto: the descriptor limit less a "
        "reserve, so that accept() never runs out (0: no limit)",
    ),
    Setting(
        "max_connections_per_client",
        parse_count,
        flag="--max-connections-per-client",
        metavar="N",
        default="0",
        env="PORTICO_MAX_CONNECTIONS_PER_CLIENT",
        help="connections open at once from one client (see --client-prefix); more are "
        "turned away (0: no limit)",
    ),
    Setting(
        "client_prefix",
        parse_client_prefix,
        flag="--client-prefix",
        metavar="V4[,V6]",
        default="32,128",
        env="PORTICO_CLIENT_PREFIX",
        help="prefix lengths that make addresses one client for --max-connections-per-client",
    ),
    Setting(
        "max_accept_rate",
        parse_rate,
        flag="--max-accept-rate",
        metavar="PER_SECOND",
        default="0",
        env="PORTICO_MAX_ACCEPT_RATE",
        help="new connections accepted per second, in bursts of one second's worth (0: no limit)",
    ),
    Setting(
        "overload",
        parse_choice(OVERLOAD_POLICIES),
        flag="--overload",
        metavar="POLICY",
        default="pause",
        env="PORTICO_OVERLOAD",
        help="at --max-connections or --max-accept-rate: pause (stop accepting; clients wait "
        "in the backlog) or reject (accept, send --busy-reply, close)",
    ),
    Setting(
        "busy_reply",
        parse_reply,
        flag="--busy-reply",
        metavar="TEXT",
        env="PORTICO_BUSY_REPLY",
        help="what a connection turned away reads before it is closed (backslash escapes: "
        "'busy\\r\\n'); none by default",
    ),
)


def apply_limits(server: Any, config: Any) -> None:
    """Set the server's limits from a ServeConfig; 0 is off."""
    server.first_byte_timeout = config.first_byte_timeout or None
    server.idle_timeout = config.idle_timeout or None
    server.connection_timeout = config.connection_timeout or None
    server.min_receive_rate = config.min_receive_rate or None
    server.min_receive_rate_window = config.min_receive_rate_window or 20.0
    server.send_timeout = config.send_timeout or None
    server.max_connections = config.max_connections or None
    server.max_connections_per_client = config.max_connections_per_client or None
    server.client_prefix = config.client_prefix
    server.max_accept_rate = config.max_accept_rate or None
    server.overload_policy = config.overload
    server.busy_reply = config.busy_reply
