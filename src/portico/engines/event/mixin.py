"""EventMixIn and the ready-made ``Event*Server`` classes."""

from __future__ import annotations

import selectors
import socket
from typing import TYPE_CHECKING, Any

from portico.engines.base import created_once, run_request
from portico.engines.event.engine import EventEngine, EventStatistics
from portico.server.inet import TCPServer, UDPServer
from portico.server.protections import Protected

__all__ = ["EventMixIn", "EventTCPServer", "EventUDPServer"]

if TYPE_CHECKING:
    from portico.server.base import BaseServer

    _ServerBase = BaseServer
else:
    _ServerBase = object


class EventMixIn(Protected, _ServerBase):
    """Mix-in class to run each request as a task on an event loop in the serving thread.

    Handlers are ordinary blocking-style handlers: their socket calls
    (``self.request``, ``rfile``, ``wfile``) park the task instead of the
    thread, so one thread holds many thousands of connections.  Call blocking
    code that is not a socket of the request through
    :func:`~portico.engines.event.run_in_thread`.

    ``block_on_close`` means what it means for ``ThreadingMixIn``: after
    ``shutdown()`` the serving thread goes on running the requests in flight,
    and ``server_close()`` waits for them; when false, ``server_close()`` ends
    them (each handler sees GreenletExit where it waits, and its cleanup runs).
    ``loop_block_warning`` (seconds; None: off) is how long a handler may keep
    the loop to itself before a warning is logged.
    """

    block_on_close = True
    loop_block_warning: float | None = 0.1
    # Its requests run on a loop of the serving thread: drain() must run there too.
    _portico_drain_in_serving_thread = True
    # Listeners are non-blocking here, so a readiness may take a burst of
    # connections or datagrams at once; an empty queue ends the batch.
    _portico_accept_batch = 64
    # A task waiting for a client's first byte costs no thread: no need to hold it.
    _portico_holds_for_first_byte = False

    _portico_event: EventEngine | None = None

    @property
    def event_engine(self) -> EventEngine:
        """The engine (created on first use)."""
        return created_once(self, "_portico_event", self._new_engine)

    def _new_engine(self) -> EventEngine:
        return EventEngine(self.process_request_task, block_warning=self.loop_block_warning)

    def _portico_engine_statistics(self) -> EventStatistics:
        """The engine's snapshot, as ``statistics().engine`` (its fields read through too)."""
        return self.event_engine.statistics()

    def process_request_task(self, request: Any, client_address: Any) -> None:
        """Same as in BaseServer but in a task of the event loop.

        In addition, exception handling is done here.
        """
        run_request(self, request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a task for the request; it runs until it first waits."""
        self.event_engine.submit(request, client_address)

    def serve_forever(self, poll_interval: float | None = 0.5) -> None:
        super().serve_forever(poll_interval)
        if self.block_on_close:
            self.event_engine.finish_in_flight()

    def server_close(self) -> None:
        super().server_close()
        engine = self._portico_event
        if engine is not None:
            engine.close(wait=self.block_on_close)

    def _portico_wait_in_flight(self, deadline: float | None) -> bool:
        # In the serving thread this runs the loop; from another, it waits for the
        # serving thread, which goes on running it after serve_forever() if
        # block_on_close (otherwise nothing runs the tasks, and they are closed).
        engine = self._portico_event
        return engine is None or engine.drain(deadline)

    def _portico_force_in_flight(self) -> None:
        super()._portico_force_in_flight()
        engine = self._portico_event
        if engine is not None:
            engine.close(wait=False)

    def _portico_new_selector(self) -> selectors.BaseSelector:
        for _, listener in self._portico_sources():
            sock = getattr(self, "socket", None) if listener is None else listener
            if isinstance(sock, socket.socket):
                sock.setblocking(False)
        return self.event_engine.selector()


class EventTCPServer(EventMixIn, TCPServer):
    pass


class EventUDPServer(EventMixIn, UDPServer):
    pass


if hasattr(socket, "AF_UNIX"):
    from portico.server.inet import UnixDatagramServer, UnixStreamServer

    __all__ += ["EventUnixDatagramServer", "EventUnixStreamServer"]

    class EventUnixStreamServer(EventMixIn, UnixStreamServer):
        pass

    class EventUnixDatagramServer(EventMixIn, UnixDatagramServer):
        pass
