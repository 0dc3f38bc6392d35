"""``portico serve --proxy-protocol``: serving behind a load balancer that sends PROXY headers.

Only peers in ``--proxy-allow`` (loopback unless given) may send a header:
the header decides which client address the handler believes.
"""

from __future__ import annotations

from typing import Any

from portico.cli.settings import Setting, parse_positive_seconds
from portico.errors import ConfigurationError
from portico.server.proxy import LOOPBACK, PROXY_VERSIONS, parse_networks

__all__ = ["PROXY_ONLY", "SETTINGS", "apply_proxy_settings"]


def parse_version(text: str) -> str:
    version = text.strip().lower()
    if version not in PROXY_VERSIONS:
        raise ConfigurationError(f"{text!r} is not one of {', '.join(PROXY_VERSIONS)}")
    return version


def parse_network(text: str) -> Any:
    return parse_networks([text])[0]


SETTINGS = (
    Setting(
        "proxy_protocol",
        parse_version,
        flag="--proxy-protocol",
        metavar="VERSION",
        env="PORTICO_PROXY_PROTOCOL",
        help="every connection starts with a PROXY header: v1, v2 or auto (HAProxy's "
        "send-proxy, send-proxy-v2); the handler sees the original client's address",
    ),
    Setting(
        "proxy_allow",
        parse_network,
        flag="--proxy-allow",
        metavar="NETWORK",
        default=",".join(LOOPBACK),
        env="PORTICO_PROXY_ALLOW",
        repeat=True,
        help="a network the proxies connect from (others are dropped); needs --proxy-protocol",
    ),
    Setting(
        "proxy_timeout",
        parse_positive_seconds,
        flag="--proxy-timeout",
        metavar="SECONDS",
        default="5",
        env="PORTICO_PROXY_TIMEOUT",
        help="a connection whose PROXY header has not arrived by then is dropped",
    ),
)

PROXY_ONLY = ("proxy_allow", "proxy_timeout")


def apply_proxy_settings(server: Any, config: Any) -> None:
    """Make ``server`` expect PROXY headers if the settings say so."""
    if config.proxy_protocol is None:
        return
    server.proxy_protocol = config.proxy_protocol
    server.proxy_allow = config.proxy_allow
    server.proxy_header_timeout = config.proxy_timeout
