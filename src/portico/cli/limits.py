"""``portico serve`` time limits per connection, on by default (see portico.net.guard).

The command serves whatever may reach it, so its defaults are an operator's:
a client has 30 s to say something, 5 minutes of silence between requests,
must not trickle its bytes slower than 100 a second (a slowloris client is
dropped within 20 s), and has a minute to take each reply.  0 turns a limit
off.  The stdlib-named server classes keep all of them off until set.
"""

from __future__ import annotations

from typing import Any

from portico.cli.settings import Setting, parse_seconds
from portico.errors import ConfigurationError

__all__ = ["SETTINGS", "apply_limits"]


def parse_rate(text: str) -> float:
    try:
        rate = float(text.strip())
    except ValueError:
        raise ConfigurationError(f"{text!r} is not a number of bytes per second") from None
    if not rate >= 0:
        raise ConfigurationError(f"{text!r} is negative")
    return rate


SETTINGS = (
    Setting(
        "first_byte_timeout",
        parse_seconds,
        flag="--first-byte-timeout",
        metavar="SECONDS",
        default="30",
        env="PORTICO_FIRST_BYTE_TIMEOUT",
        help="close a connection whose client sends nothing this long after connecting (0: off)",
    ),
    Setting(
        "idle_timeout",
        parse_seconds,
        flag="--idle-timeout",
        metavar="SECONDS",
        default="300",
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
        default="100",
        env="PORTICO_MIN_RECEIVE_RATE",
        help="once a client starts sending, close it if it sends fewer bytes a second than "
        "this over --min-receive-rate-window (slowloris; 0: off)",
    ),
    Setting(
        "min_receive_rate_window",
        parse_seconds,
        flag="--min-receive-rate-window",
        metavar="SECONDS",
        default="20",
        env="PORTICO_MIN_RECEIVE_RATE_WINDOW",
        help="the window of --min-receive-rate",
    ),
    Setting(
        "send_timeout",
        parse_seconds,
        flag="--send-timeout",
        metavar="SECONDS",
        default="60",
        env="PORTICO_SEND_TIMEOUT",
        help="close a connection whose client takes none of a reply for this long (0: off)",
    ),
)


def apply_limits(server: Any, config: Any) -> None:
    """Set the server's time limits from a ServeConfig; 0 is off."""
    server.first_byte_timeout = config.first_byte_timeout or None
    server.idle_timeout = config.idle_timeout or None
    server.connection_timeout = config.connection_timeout or None
    server.min_receive_rate = config.min_receive_rate or None
    server.min_receive_rate_window = config.min_receive_rate_window or 20.0
    server.send_timeout = config.send_timeout or None
