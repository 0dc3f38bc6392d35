"""The ``pool`` engine: a bounded pool of worker threads, reused across requests.

Workers start on demand, one each time a request would otherwise wait,
until there are ``max_workers``; then they stay and take request after
request, so no thread is created per connection once the pool is warm.

When every worker is busy the server stops accepting: the serving loop's
accept gate (:meth:`PoolMixIn._portico_can_accept`) says no, the listeners
leave the selector, and new connections wait in the kernel's listen backlog
(datagrams in the socket's receive buffer) instead of in a queue of ours.  The
worker that frees a slot wakes the loop through its wake-up descriptor, and
accepting resumes at once.  A request never waits in the pool for a worker
while the loop runs: at most ``max_workers`` requests are in flight.
(``handle_request()`` does not consult the gate; requests it hands over
beyond the bound wait in the pool's queue for a free worker.)

A busy worker holds its connection for the connection's whole life, so size
``max_workers`` to the number of connections to serve at once; the others
wait, connected but unanswered, until one closes.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from portico.engines.base import EngineStatistics, created_once, run_request
from portico.errors import ConfigurationError
from portico.server.inet import TCPServer, UDPServer
from portico.server.protections import Protected

__all__ = [
    "PoolMixIn",
    "PoolStatistics",
    "PoolTCPServer",
    "PoolUDPServer",
    "WorkerPool",
    "default_max_workers",
]

error_log = logging.getLogger("portico.error")

# What the queue carries: a request and its client address; None stops a worker.
_Job = tuple[Any, Any] | None


def default_max_workers() -> int:
    """16 workers per CPU this process may run on, at most 256.

    Requests that hold a worker for a whole connection are mostly waiting on
    the network, so the pool is sized well above the CPU count (the stdlib's
    ``concurrent.futures`` default, ``cpus + 4`` up to 32, suits short tasks,
    not connections); the ceiling bounds memory.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on every platform
        cpus = os.cpu_count() or 1
    return min(256, 16 * max(cpus, 1))


@dataclass(frozen=True)
class PoolStatistics(EngineStatistics):
    """A snapshot of a :class:`WorkerPool`."""

    max_workers: int  # the bound
    workers: int  # worker threads alive now (they start on demand)
    busy: int  # workers running a request now
    pending: int  # requests handed over and waiting for a worker
    peak_busy: int  # the most workers ever busy at once
    accept_pauses: int  # times the server stopped accepting because every worker was busy


def _do_nothing() -> None:
    pass


class WorkerPool:
    """A bounded pool of reusable threads that run ``run(request, client_address)``.

    Implements the :class:`~portico.engines.base.Engine` protocol.  ``wake``
    is called (from a worker) when the pool frees up after ``can_accept()``
    said no.  Every method may be called from any thread, but ``submit()``
    and ``can_accept()`` from one at a time (the serving thread), and
    ``drain()`` not from a worker, which would wait for itself.
    """

    name = "pool"

    def __init__(
        self,
        run: Callable[[Any, Any], object],
        *,
        max_workers: int | None = None,
        wake: Callable[[], object] = _do_nothing,
        daemon: bool = False,
        thread_name: str = "portico-pool",
    ) -> None:
        if max_workers is None:
            max_workers = default_max_workers()
        if max_workers < 1:
            raise ConfigurationError(f"max_workers must be at least 1, not {max_workers}")
        self.max_workers = max_workers
        self._run = run
        self._wake = wake
        self._daemon = daemon
        self._thread_name = thread_name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._all_done = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._submitted = 0
        self._completed = 0
        self._busy = 0
        self._peak_busy = 0
        self._accept_pauses = 0
        self._wake_armed = False
        self._drainers = 0
        self._closed = False

    # -- the engine protocol ---------------------------------------------

    def submit(self, request: Any, client_address: Any) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            self._submitted += 1
            # A request waits only if it outnumbers the workers: start one, up to the bound.
            workers = len(self._threads)
            if workers < self.max_workers and self._submitted - self._completed > workers:
                try:
                    self._start_worker()
                except RuntimeError:  # "can't start new thread": out of memory or a limit
                    if not workers:
                        self._submitted -= 1
                        raise
                    error_log.warning("cannot start another pool worker; the request waits")
            self._jobs.put((request, client_address))

    def can_accept(self) -> bool:
        # Unlocked first: only the caller's thread submits and ``_completed``
        # only grows, so a count below the bound here is below it for sure.
        if self._submitted - self._completed < self.max_workers:
            return True
        with self._lock:
            if self._submitted - self._completed < self.max_workers:
                return True
            if not self._wake_armed:
                self._wake_armed = True
                self._accept_pauses += 1
            return False

    def drain(self, deadline: float | None = None) -> bool:
        with self._lock:
            self._drainers += 1
            try:
                return self._all_done.wait_for(self._nothing_in_flight, _timeout(deadline))
            finally:
                self._drainers -= 1

    def close(self, *, wait: bool = True) -> None:
        with self._lock:
            stopping = not self._closed
            self._closed = True
            threads = list(self._threads)
        if stopping:
            # Behind every job already queued: those still run.
            for _ in threads:
                self._jobs.put(None)
        if wait:
            current = threading.current_thread()
            for thread in threads:
                if thread is not current:  # a handler may close its own server
                    thread.join()

    def statistics(self) -> PoolStatistics:
        with self._lock:
            in_flight = self._submitted - self._completed
            return PoolStatistics(
                engine=self.name,
                in_flight=in_flight,
                completed=self._completed,
                max_workers=self.max_workers,
                workers=sum(thread.is_alive() for thread in self._threads),
                busy=self._busy,
                pending=in_flight - self._busy,
                peak_busy=self._peak_busy,
                accept_pauses=self._accept_pauses,
            )

    # -- beyond the protocol ---------------------------------------------

    def worker_threads(self) -> tuple[threading.Thread, ...]:
        """Every worker thread started so far (alive or, after close, ended)."""
        with self._lock:
            return tuple(self._threads)

    # -- the workers -----------------------------------------------------

    def _start_worker(self) -> None:
        """Called with the lock held."""
        name = f"{self._thread_name}-{len(self._threads) + 1}"
        thread = threading.Thread(target=self._work, name=name, daemon=self._daemon)
        thread.start()
        self._threads.append(thread)

    def _work(self) -> None:
        get, run = self._jobs.get, self._run
        while True:
            job = get()
            if job is None:
                return
            self._begin()
            try:
                run(*job)
            except BaseException:
                # run() reports handler errors itself; this is what escaped it
                # (a failing handle_error(), a SystemExit): log it, keep the worker.
                error_log.exception("unexpected error in %s", threading.current_thread().name)
            finally:
                job = None  # let the request go before waiting for the next one
                self._end()

    def _begin(self) -> None:
        with self._lock:
            self._busy += 1
            self._peak_busy = max(self._peak_busy, self._busy)

    def _end(self) -> None:
        with self._lock:
            self._busy -= 1
            self._completed += 1
            wake, self._wake_armed = self._wake_armed, False
            if self._drainers and self._nothing_in_flight():
                self._all_done.notify_all()
        if wake:
            self._wake()

    def _nothing_in_flight(self) -> bool:
        return self._completed == self._submitted


def _timeout(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


if TYPE_CHECKING:
    from portico.server.base import BaseServer

    _ServerBase = BaseServer
else:
    _ServerBase = object


class PoolMixIn(Protected, _ServerBase):
    """Mix-in class to handle each request on a bounded pool of reused threads.

    ``max_workers`` bounds the pool (None: :func:`default_max_workers`); while
    every worker is busy, ``serve_forever()`` stops accepting and resumes as
    soon as one frees.  ``daemon_threads`` and ``block_on_close`` mean what
    they mean for ``ThreadingMixIn``: ``server_close()`` waits for the
    requests in flight and joins every worker unless ``block_on_close`` is
    false.  All three may be set on the instance until the pool is first
    used (the first request, or ``statistics()``).  A handler's exception goes to ``handle_error()``
    and its worker carries on.
    """

    max_workers: int | None = None
    daemon_threads = False
    block_on_close = True

    _portico_pool: WorkerPool | None = None

    @property
    def worker_pool(self) -> WorkerPool:
        """The pool (created on first use; its workers start with the requests)."""
        return created_once(self, "_portico_pool", self._new_pool)

    def _new_pool(self) -> WorkerPool:
        return WorkerPool(
            self.process_request_thread,
            max_workers=self.max_workers,
            wake=self._portico_wake,
            daemon=self.daemon_threads,
        )

    def _portico_engine_statistics(self) -> PoolStatistics:
        """The engine's snapshot, as ``statistics().engine`` (its fields read through too)."""
        return self.worker_pool.statistics()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Same as in BaseServer but in a pool worker.

        In addition, exception handling is done here.
        """
        run_request(self, request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand the request to a worker of the pool."""
        self.worker_pool.submit(request, client_address)

    def server_close(self) -> None:
        super().server_close()
        pool = self._portico_pool
        if pool is not None:
            pool.close(wait=self.block_on_close)

    def _portico_wait_in_flight(self, deadline: float | None) -> bool:
        pool = self._portico_pool
        return pool is None or pool.drain(deadline)

    def _portico_can_accept(self) -> bool:
        pool = self._portico_pool
        return pool is None or pool.can_accept()

    def _portico_wake(self) -> None:
        wakeup = self._portico_wakeup
        if wakeup is not None:
            wakeup.set()


class PoolTCPServer(PoolMixIn, TCPServer):
    pass


class PoolUDPServer(PoolMixIn, UDPServer):
    pass


if hasattr(socket, "AF_UNIX"):
    from portico.server.inet import UnixDatagramServer, UnixStreamServer

    __all__ += ["PoolUnixDatagramServer", "PoolUnixStreamServer"]

    class PoolUnixStreamServer(PoolMixIn, UnixStreamServer):
        pass

    class PoolUnixDatagramServer(PoolMixIn, UnixDatagramServer):
        pass
