"""The ``event`` engine: requests as tasks on a hub in the serving thread.

``serve_forever()`` waits on a :class:`HubSelector`, whose ``select()`` runs
one round of the hub: the tasks' sockets are dispatched there, and only the
serving loop's own descriptors (listeners, wake-up) come back to the loop.
So the stdlib accept path is unchanged, and a new connection's task starts
at once, inside ``process_request()``, running until it first waits.

Tasks belong to the thread whose hub runs them.  After ``shutdown()`` the
serving thread keeps running the hub for the tasks still in flight (see
:meth:`EventEngine.finish_in_flight`) until they end or ``server_close()``
stops them; that is what lets ``server_close()``, called from another thread
as it usually is, wait for them the way ``ThreadingMixIn`` joins its threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import greenlet

from portico.engines.base import EngineStatistics
from portico.engines.event.hub import Hub, Task
from portico.engines.event.sockets import DatagramReplySocket, make_cooperative

__all__ = ["EventEngine", "EventStatistics", "HubSelector"]

server_log = logging.getLogger("portico.server")


@dataclass(frozen=True)
class EventStatistics(EngineStatistics):
    """A snapshot of an :class:`EventEngine`."""

    peak_in_flight: int  # the most tasks alive at once
    loop_blocks: int  # times a task held the loop past the warning threshold
    longest_block: float  # seconds: the longest such hold


class EventEngine:
    """Runs ``run(request, client_address)`` for each request as a task on a hub.

    Implements the :class:`~portico.engines.base.Engine` protocol.  ``submit()``
    is called in the serving thread; ``close()`` and ``drain()`` from any.
    """

    name = "event"

    def __init__(
        self, run: Callable[[Any, Any], object], *, block_warning: float | None = 0.1
    ) -> None:
        self._run = run
        self._block_warning = block_warning
        self._hub: Hub | None = None
        self._tasks: dict[Task, Any] = {}  # in flight, with their request
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._completed = 0
        self._peak = 0
        self._serving = False  # the serving loop waits on our selector
        self._running: int | None = None  # the thread running the hub now
        self._closed = False
        self._stop = False  # close(wait=False) from another thread: end the tasks

    # -- the engine protocol ---------------------------------------------

    def submit(self, request: Any, client_address: Any) -> None:
        hub = self._hub_here()
        if isinstance(request, socket.socket):
            make_cooperative(request, hub)
        elif isinstance(request, tuple) and len(request) == 2:
            data, reply_socket = request  # a datagram, and the socket to answer on
            request = (data, DatagramReplySocket(reply_socket))
        task = hub.task(client_address)
        with self._lock:
            self._tasks[task] = request
            self._peak = max(self._peak, len(self._tasks))
        hub.start(task, self._task_body, request, client_address)
        if not self._serving and task in self._tasks:
            # handle_request(): no loop runs the hub, so run it for this task.
            self._run_hub(lambda: task not in self._tasks)

    def can_accept(self) -> bool:
        return True

    def drain(self, deadline: float | None = None) -> bool:
        hub = self._hub
        if hub is not None and hub.thread_id == threading.get_ident():
            return self._run_hub(lambda: not self._tasks, deadline)
        with self._lock:
            return self._changed.wait_for(lambda: not self._tasks, _remaining(deadline))

    def close(self, *, wait: bool = True) -> None:
        """Stop the tasks or wait for them (``wait``), then release the hub.

        In the hub's thread, the tasks are run to their end, or ended with
        GreenletExit (their cleanup runs).  From another thread while the hub
        thread runs them (after ``shutdown()``), ask it and wait.  From another
        thread while nothing runs the hub, their sockets are closed here.
        """
        with self._lock:
            self._closed = True
            hub = self._hub
            if hub is None or hub.closed:
                return
            here = hub.thread_id == threading.get_ident()
            running = self._running
        if here:
            if wait:
                self._run_hub(lambda: not self._tasks)
            self._end_tasks(hub)
        elif running is not None:
            self._stop_elsewhere(hub, wait=wait, serving=self._serving)
        else:
            self._abandon_tasks(hub)

    def statistics(self) -> EventStatistics:
        with self._lock:
            hub = self._hub
            return EventStatistics(
                engine=self.name,
                in_flight=len(self._tasks),
                completed=self._completed,
                peak_in_flight=self._peak,
                loop_blocks=hub.blocked_count if hub else 0,
                longest_block=hub.longest_block if hub else 0.0,
            )

    # -- what the server calls -------------------------------------------

    def selector(self) -> HubSelector:
        """The selector for ``serve_forever()``: waiting on it runs the hub."""
        return HubSelector(self)

    def finish_in_flight(self) -> None:
        """After the serving loop: run the hub until the tasks end or close() stops them."""
        if self._hub is not None and self._tasks:
            self._run_hub(lambda: not self._tasks or self._stop)

    def task_requests(self) -> list[Any]:
        """The requests of the tasks in flight."""
        with self._lock:
            return list(self._tasks.values())

    # -- inside --------------------------------------------------------------

    def _task_body(self, request: Any, client_address: Any) -> None:
        try:
            self._run(request, client_address)
        finally:
            with self._lock:
                del self._tasks[greenlet.getcurrent()]
                self._completed += 1
                if not self._tasks:
                    self._changed.notify_all()

    def _hub_here(self) -> Hub:
        """The hub, for this thread: a new one if there is none, or only an idle one elsewhere."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the event engine is closed")
            hub = self._hub
            if hub is not None and not hub.closed and hub.thread_id != threading.get_ident():
                if self._tasks:
                    raise RuntimeError(
                        "the event engine's tasks run in another thread: serve from one thread"
                    )
                hub.close()
            if hub is None or hub.closed or hub.thread_id != threading.get_ident():
                hub = self._hub = Hub(block_warning=self._block_warning)
            return hub

    def _begin_serving(self) -> Hub:
        hub = self._hub_here()
        with self._lock:
            self._serving = True
            self._running = threading.get_ident()
        return hub

    def _end_serving(self) -> None:
        with self._lock:
            self._serving = False
            self._running = None
        self._after_running()

    def _run_hub(self, done: Callable[[], bool], deadline: float | None = None) -> bool:
        """Run the hub in this thread until ``done()`` or ``deadline``; returns ``done()``."""
        hub = self._hub_here() if self._hub is None else self._hub
        with self._lock:
            outer = self._running
            self._running = threading.get_ident()
        try:
            while not done():
                timeout = _remaining(deadline)
                if timeout == 0.0:
                    break
                hub.run_once(timeout)
            return done()
        finally:
            with self._lock:
                self._running = outer
            if outer is None:
                self._after_running()

    def _after_running(self) -> None:
        """In the hub's thread, once nothing runs the hub: release it if closed and done."""
        with self._lock:
            hub = self._hub
            release = (
                self._closed
                and hub is not None
                and not hub.closed
                and (self._stop or not self._tasks)
            )
        if release and hub is not None:
            self._end_tasks(hub)
        with self._lock:
            self._changed.notify_all()

    def _end_tasks(self, hub: Hub) -> None:
        """In the hub's thread: end every task still in flight, then close the hub."""
        for task in list(self._tasks):
            hub.kill(task)
        hub.close()

    def _stop_elsewhere(self, hub: Hub, *, wait: bool, serving: bool) -> None:
        with self._lock:
            if not wait:
                self._stop = True
        if serving:
            return  # the serving loop still runs: it releases the hub when it ends
        hub.call_soon_threadsafe(_nothing)  # wake it, to look at _stop
        with self._lock:
            self._changed.wait_for(lambda: hub.closed or self._running is None)

    def _abandon_tasks(self, hub: Hub) -> None:
        """From another thread, nothing running the hub: close what the tasks hold."""
        requests = self.task_requests()
        if requests:
            server_log.warning(
                "closing %d connection(s) whose handlers wait in a thread that no longer "
                "runs the event loop",
                len(requests),
            )
        for request in requests:
            if isinstance(request, socket.socket):
                _close_now(request)
        with self._lock:
            self._tasks.clear()
        hub.close()


class HubSelector(selectors.BaseSelector):
    """A selector for the serving loop whose ``select()`` runs a round of the hub."""

    def __init__(self, engine: EventEngine) -> None:
        self._engine = engine
        self._hub = engine._begin_serving()
        self._keys: dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._hub.add_source(fd, key)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = self._keys.pop(fd)
        self._hub.remove_source(fd)
        return key

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        return [(key, selectors.EVENT_READ) for key, _ in self._hub.run_once(timeout)]

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return {key.fileobj: key for key in self._keys.values()}

    def close(self) -> None:
        for fd in list(self._keys):
            self._hub.remove_source(fd)
        self._keys.clear()
        self._engine._end_serving()


def _close_now(sock: socket.socket) -> None:
    """Close ``sock``'s descriptor now, even while the handler's files still refer to it."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    fd = sock.detach()
    if fd >= 0:
        os.close(fd)


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def _nothing() -> None:
    pass
