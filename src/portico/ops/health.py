"""A health listener: ``GET /healthz`` and ``GET /readyz`` over HTTP, on a socket of its own.

``/healthz`` answers 200 while the process runs (liveness).  ``/readyz``
answers 200 ``ready`` while the server serves, and 503 ``starting`` before
and ``draining`` from the moment a stop signal arrives: a load balancer that
checks it stops sending new clients before the data listeners close (give
it time with a drain delay).

The listener never blocks whoever drives it: every socket is non-blocking,
a request is answered once its header has arrived (4 KiB at most, within
2 s), then the connection is closed.  It runs in a thread of its own
(:meth:`HealthListener.serve_in_thread`), or inside another selector loop
(:meth:`attach` and :meth:`on_ready`), as in a prefork master, which must
start no thread.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from portico.net.addresses import format_address

__all__ = ["DRAINING", "READY", "STARTING", "HealthListener"]

log = logging.getLogger("portico.health")

STARTING, READY, DRAINING = "starting", "ready", "draining"
_MAX_REQUEST = 4096
_REQUEST_TIMEOUT = 2.0
_TICK = 0.5

# A route answers (status, reason, content type, body).
Route = Callable[[], tuple[int, str, str, bytes]]


class HealthListener:
    """Answers health checks for one server; ``state`` is what ``/readyz`` reports."""

    def __init__(self, address: tuple[str, int], routes: dict[str, Route] | None = None) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.sock = socket.create_server(address, family=family, backlog=64)
        self.sock.setblocking(False)
        self.state = STARTING
        self.routes: dict[str, Route] = {"/healthz": self._alive, "/readyz": self._ready}
        self.routes.update(routes or {})
        self._clients: dict[socket.socket, tuple[bytearray, float]] = {}
        self._selector: selectors.BaseSelector | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def address(self) -> Any:
        return self.sock.getsockname()

    # -- driven by another loop ------------------------------------------------

    def attach(self, selector: selectors.BaseSelector) -> None:
        """Be served by ``selector``'s loop: call :meth:`on_ready` for keys whose data is self."""
        self._selector = selector
        selector.register(self.sock, selectors.EVENT_READ, self)

    def on_ready(self, key: selectors.SelectorKey) -> None:
        if key.fileobj is self.sock:
            self._accept()
        else:
            self._read(key.fileobj)  # type: ignore[arg-type]
        self.expire()

    def expire(self) -> None:
        """Drop the clients that did not send a whole request in time."""
        now = time.monotonic()
        for client, (_, deadline) in list(self._clients.items()):
            if now >= deadline:
                self._forget(client)

    # -- in a thread of its own ------------------------------------------------

    def serve_in_thread(self) -> None:
        """Answer checks from a daemon thread until :meth:`close`."""
        selector = selectors.DefaultSelector()
        self.attach(selector)

        def run() -> None:
            while not self._closed:
                try:
                    ready = selector.select(_TICK)
                except (OSError, ValueError):
                    return  # closed under us
                for key, _ in ready:
                    self.on_ready(key)
                self.expire()

        self._thread = threading.Thread(target=run, name="portico-health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop answering; a forked worker calls it too, to let go of the inherited socket."""
        self._closed = True
        for client in list(self._clients):
            self._forget(client)
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(self.sock)
        self.sock.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(_TICK * 4)

    # -- HTTP ---------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("health listener: accept failed: %s", exc)
                return
            client.setblocking(False)
            self._clients[client] = (bytearray(), time.monotonic() + _REQUEST_TIMEOUT)
            if self._selector is not None:
                self._selector.register(client, selectors.EVENT_READ, self)

    def _read(self, client: socket.socket) -> None:
        buffer, _ = self._clients.get(client, (None, 0.0))
        if buffer is None:
            return
        try:
            data = client.recv(_MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        buffer += data
        if b"\r\n\r\n" in buffer or b"\n\n" in buffer:
            self._answer(client, bytes(buffer))
        elif not data or len(buffer) >= _MAX_REQUEST:
            self._forget(client)

    def _answer(self, client: socket.socket, request: bytes) -> None:
        method, _, rest = request.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0].decode("latin-1")
        route = self.routes.get(path)
        if method not in (b"GET", b"HEAD"):
            status, reason, kind, body = 405, "Method Not Allowed", "text/plain", b"GET only\n"
        elif route is None:
            status, reason, kind, body = 404, "Not Found", "text/plain", b"not found\n"
        else:
            try:
                status, reason, kind, body = route()
            except Exception:
                log.exception("health listener: %s failed", path)
                status, reason, kind, body = 500, "Internal Server Error", "text/plain", b"error\n"
        head = (
            f"HTTP/1.0 {status} {reason}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        try:
            client.send(head + (b"" if method == b"HEAD" else body))  # small: fits the buffer
        except OSError as exc:
            log.debug("health check from %s: %s", format_address(client.getpeername()), exc)
        self._forget(client)

    def _forget(self, client: socket.socket) -> None:
        self._clients.pop(client, None)
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(client)
        client.close()

    def _alive(self) -> tuple[int, str, str, bytes]:
        return 200, "OK", "text/plain", b"ok\n"

    def _ready(self) -> tuple[int, str, str, bytes]:
        if self.state == READY:
            return 200, "OK", "text/plain", b"ready\n"
        return 503, "Service Unavailable", "text/plain", self.state.encode() + b"\n"
