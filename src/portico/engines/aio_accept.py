"""The async engine's own accept path, for a server with a connection limit.

The loop's own listener (``create_server()``) accepts every queued
connection at each wake-up, past any limit, and libuv (under uvloop), out
of descriptors, accepts and closes the rest of the backlog: connections
dropped unanswered.  Near a connection limit under the ``pause`` policy
(closer than a full backlog; always, for a number the operator gave), the
engine accepts itself instead (at about two thirds of the loop's connection
rate): a few at a time, never more than the limit leaves room for, so that
the others wait in the kernel's backlog, and a failed
``accept()`` pauses accepting with the serving loop's back-off
(:mod:`portico.net.accept`) rather than spinning or dropping.  Each accepted
socket becomes a connection of the loop (``connect_accepted_socket``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

__all__ = ["GatedAccept"]

log = logging.getLogger("portico.server")

_BATCH = 16  # accepts per wake-up, at most: the loop's other work goes on between batches


class GatedAccept:
    """Accepts from one listener while the admission limit leaves room."""

    def __init__(
        self,
        engine: Any,
        listener: socket.socket,
        make_stream: Callable[[], asyncio.Protocol],
        tls: dict[str, Any],
    ) -> None:
        self.engine = engine
        self.loop: asyncio.AbstractEventLoop = engine.loop
        self.sock = listener.dup()
        self.sock.setblocking(False)
        self._make_stream = make_stream
        self._tls = tls
        self.loop.add_reader(self.sock.fileno(), self._ready)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _ready(self) -> None:
        engine, server = self.engine, self.engine.server
        for _ in range(_BATCH):
            if engine.no_room():
                engine.admission.pause()
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                server._portico_accept_failed(exc)  # logs; raises if the listener broke
                if server._portico_accept.paused:
                    engine.back_off(server._portico_accept.delay)
                    return
                continue
            if server._portico_accept.paused:
                server._portico_accept_recovered()
            engine.pending_accepts += 1
            engine.keep(self.loop.create_task(self._connect(conn)))

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self._make_stream, sock=conn, **self._tls)
        except Exception as exc:  # a TLS handshake that failed, a client gone: nothing to serve
            conn.close()
            log.info("connection not made: %s", exc or type(exc).__name__)
        finally:
            self.engine.pending_accepts -= 1  # made (and counted by admission), or not at all
