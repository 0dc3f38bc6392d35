"""The server side of the PROXY protocol: which peers may send a header, how it is read.

A server with ``proxy_protocol`` set (``"v1"``, ``"v2"`` or ``"auto"``)
expects every connection to start with a PROXY header.  It is read in
``finish_request()``, off the accept path (as the TLS handshake is), under
``proxy_header_timeout``; the handler then sees the original client as
``self.client_address`` and the header itself through :func:`proxy_header`.

The header decides which address the server believes, so nothing is
guessed: a connection from outside ``proxy_allow`` (loopback by default),
a malformed header, or one that does not come in time closes the
connection with a log line (logger ``portico.proxy``), and the handler
never runs.

Reading takes exactly the header's bytes and not one more: the socket is
peeked (``MSG_PEEK``) and, while the header is incomplete, ``SO_RCVLOWAT``
makes the next wait last until more bytes have arrived.  The bytes after
the header stay in the socket for the handler (or the TLS handshake).
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import logging
import socket
import time
from collections.abc import Iterable, Iterator
from typing import Any

from portico.errors import ConfigurationError
from portico.net.addresses import format_address
from portico.net.proxy_protocol import (
    DEFAULT_MAX_LENGTH,
    ProxyHeader,
    ProxyProtocolError,
    parse,
    parse_datagram,
)

__all__ = [
    "LOOPBACK",
    "PROXY_VERSIONS",
    "dropped",
    "is_trusted",
    "original_address",
    "parse_networks",
    "proxy_header",
    "serving",
    "take_proxy_header",
]

log = logging.getLogger("portico.proxy")

PROXY_VERSIONS = ("v1", "v2", "auto")
LOOPBACK = ("127.0.0.0/8", "::1/128")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_current: contextvars.ContextVar[ProxyHeader | None] = contextvars.ContextVar(
    "portico_proxy_header", default=None
)


def proxy_header() -> ProxyHeader | None:
    """The PROXY header of the connection the calling handler serves (None without one).

    Its ``tlvs`` and properties (``authority``, ``alpn``, ``ssl``,
    ``unique_id``) carry what the proxy knew about the client.
    """
    return _current.get()


def parse_networks(networks: Iterable[str]) -> tuple[Network, ...]:
    """``["10.0.0.0/8", "::1"]`` as networks; a ConfigurationError names a bad one."""
    parsed = []
    for text in networks:
        try:
            parsed.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ConfigurationError(f"{text!r} is not an IP network such as 10.0.0.0/8") from None
    return tuple(parsed)


def take_proxy_header(
    server: Any, request: Any, client_address: Any
) -> tuple[Any, ProxyHeader] | None:
    """Read the PROXY header of ``request``: ``(request, header)``, or None to drop it.

    A dropped connection is logged.  A datagram request comes back without
    its header; a stream's header is consumed from the socket.
    """
    if not is_trusted(client_address, server.proxy_allow):
        dropped(client_address, "not an allowed proxy (proxy_allow)")
        return None
    try:
        if isinstance(request, tuple):  # a datagram: (data, socket)
            header, payload = parse_datagram(request[0])
            return (payload, request[1]), header
        versions = server.proxy_protocol
        return request, _read_stream_header(request, versions, server.proxy_header_timeout)
    except ProxyProtocolError as exc:
        dropped(client_address, f"bad PROXY header: {exc}")
    except TimeoutError:
        dropped(client_address, "no PROXY header in time")
    except OSError as exc:
        dropped(client_address, f"ended before its PROXY header: {exc}")
    return None


def dropped(client_address: Any, reason: str) -> None:
    """Log a connection dropped for its PROXY header (or for coming from elsewhere)."""
    log.warning("connection from %s dropped: %s", format_address(client_address), reason)


def original_address(header: ProxyHeader, request: Any, client_address: Any) -> Any:
    """The client address the handler gets: the original client's, from the header.

    The proxy's own for LOCAL (a health check) or an unknown source, and for
    datagrams: a datagram handler replies to its ``client_address``, and the
    reply must go back through the proxy (the original client is in
    ``proxy_header().source``).
    """
    if isinstance(request, tuple) or header.command != "PROXY" or header.source is None:
        return client_address
    return header.source


@contextlib.contextmanager
def serving(header: ProxyHeader) -> Iterator[None]:
    """Make ``header`` what :func:`proxy_header` answers while the handler runs."""
    token = _current.set(header)
    try:
        yield
    finally:
        _current.reset(token)


def is_trusted(client_address: Any, allowed: tuple[Network, ...]) -> bool:
    """Whether ``client_address`` may send a PROXY header (Unix peers always may)."""
    if not isinstance(client_address, tuple):
        return True  # a Unix socket: the file's mode says who can reach it
    try:
        address = ipaddress.ip_address(client_address[0])
    except ValueError:
        return False
    return any(address in network for network in allowed)


def _read_stream_header(sock: Any, versions: str, timeout: float | None) -> ProxyHeader:
    """Peek until the header is whole, then take exactly its bytes from the socket."""
    deadline = None if timeout is None else time.monotonic() + timeout
    previous = sock.gettimeout()
    try:
        while True:
            _set_remaining(sock, deadline)
            data = sock.recv(DEFAULT_MAX_LENGTH, socket.MSG_PEEK)
            if not data:
                raise ConnectionResetError("closed by the peer")
            header = parse(data, versions=versions)
            if header is not None:
                _take(sock, header.length)
                return header
            # Incomplete: the next peek waits until more than what is here has arrived.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, len(data) + 1)
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
        sock.settimeout(previous)


def _take(sock: Any, length: int) -> None:
    taken = 0
    while taken < length:  # already queued (it was peeked): no waiting
        chunk = sock.recv(length - taken)
        if not chunk:
            raise ConnectionResetError("closed by the peer")
        taken += len(chunk)


def _set_remaining(sock: Any, deadline: float | None) -> None:
    if deadline is None:
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("no PROXY header in time")
    sock.settimeout(remaining)
