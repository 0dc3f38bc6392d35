"""Serving one connection over TLS: handshake off the accept path, then the handler.

``TCPServer.finish_request()`` calls :func:`finish_over_tls` when the server
has an ``ssl_context``.  ``finish_request()`` runs where the engine runs the
request (a request thread, a pool thread, a forked child, an event task),
so a client that connects and never speaks, or speaks garbage, holds only
its own request, and for at most ``tls_handshake_timeout`` seconds.  A
failed handshake is logged (logger ``portico.tls``) and the handler never
runs.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from portico.net.addresses import format_address
from portico.net.context import note
from portico.tls.stream import TLSStream

__all__ = ["finish_over_tls", "following_reloads"]

log = logging.getLogger("portico.tls")


def finish_over_tls(
    server: Any,
    request: Any,
    client_address: Any,
    finish: Callable[[Any, Any], None],
) -> None:
    """Handshake on ``request``, then ``finish(stream, client_address)`` with the TLS stream."""
    if request.family in (socket.AF_INET, socket.AF_INET6):
        # TLS writes whole records: Nagle would only hold a small reply back until the
        # client acknowledged the session tickets sent before it (40 ms of delayed ACK).
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stream = TLSStream(request, server.ssl_context)  # read once: a reload swaps it whole
    try:
        stream.handshake(server.tls_handshake_timeout)
    except (ssl.SSLError, OSError) as exc:  # TimeoutError and resets included
        log.info("TLS handshake with %s failed: %s", format_address(client_address), _reason(exc))
        return
    note(tls_version=stream.version())  # for the access line
    try:
        finish(stream, client_address)
    finally:
        stream.close_notify()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no handshake within the time allowed"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"{exc.reason} ({type(exc).__name__})"
    return str(exc) or type(exc).__name__


def following_reloads(server: Any) -> ssl.SSLContext:
    """The server's context, made to follow ``server.ssl_context`` as reloads replace it.

    For listeners that keep the context they were given (asyncio's
    ``create_server(ssl=...)``): each handshake switches to the server's
    current context, then runs that context's own name callback (SNI).
    """
    initial: ssl.SSLContext = server.ssl_context
    own = initial.sni_callback

    def follow(tls: Any, name: str | None, context: ssl.SSLContext) -> None:
        current: ssl.SSLContext = server.ssl_context
        callback = own
        if current is not initial:
            tls.context = current
            callback = current.sni_callback
        if callback is not None:
            callback(tls, name, current)  # type: ignore[arg-type]  # typeshed: name may be None

    initial.sni_callback = follow
    return initial
