"""Socket addresses: parsing ``HOST:PORT`` text, families, IPv4-mapped peers."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from portico.errors import ConfigurationError

__all__ = [
    "format_address",
    "is_ipv6_literal",
    "parse_host_port",
    "plain_peer_address",
]

_MAPPED_PREFIX = "::ffff:"


def parse_host_port(text: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Parse ``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` or ``PORT`` into a pair.

    Raises :class:`ConfigurationError` with the offending text when it cannot.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = default_host, text
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not is_ipv6_literal(host):
            raise ConfigurationError(f"{text!r}: {host!r} is not an IPv6 address")
    elif ":" in host or text.startswith("["):
        if text.endswith("]"):
            raise ConfigurationError(f"{text!r}: the port is missing, as in [::1]:9999")
        raise ConfigurationError(f"{text!r}: write IPv6 addresses in brackets, as [::1]:9999")
    elif not host:
        host = default_host
    # int() would also take " 80", "+80", "8_0" and non-ASCII digits.
    digits = port_text[1:] if port_text.startswith("-") else port_text
    if not (digits.isascii() and digits.isdigit()):
        raise ConfigurationError(f"{text!r}: port {port_text!r} is not a number")
    port = int(port_text, 10)
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"{text!r}: port {port} is outside 0-65535")
    return host, port


def is_ipv6_literal(host: object) -> bool:
    if not isinstance(host, str) or ":" not in host:
        return False
    try:
        ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def plain_peer_address(address: Any) -> Any:
    """Report an IPv4 peer seen on a dual-stack IPv6 socket as a plain IPv4 pair.

    ``('::ffff:192.0.2.1', 4000, 0, 0)`` becomes ``('192.0.2.1', 4000)``;
    every other address is returned unchanged.
    """
    if type(address) is tuple and len(address) == 4:
        host = address[0]
        if host.startswith(_MAPPED_PREFIX) and "." in host:
            return (host[len(_MAPPED_PREFIX) :], address[1])
    return address


def mapped_ipv6_address(address: Any) -> Any:
    """The inverse of :func:`plain_peer_address`, for replying on an IPv6 socket."""
    if type(address) is tuple and len(address) == 2 and not is_ipv6_literal(address[0]):
        return (_MAPPED_PREFIX + address[0], address[1], 0, 0)
    return address


def format_address(address: Any) -> str:
    """Render an address for logs and messages: ``host:port``, ``[v6]:port`` or a path."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(address, bytes):
        address = address.decode(errors="backslashreplace")
    if isinstance(address, str) and address.startswith("\0"):
        return "@" + address[1:]
    return str(address) if address else "<unnamed>"


def family_of_host(host: object, default: socket.AddressFamily) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 literal, otherwise ``default``."""
    return socket.AF_INET6 if is_ipv6_literal(host) else default
