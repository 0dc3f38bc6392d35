"""The hub: one thread's event loop, running handlers as greenlets.

A handler runs in a greenlet of its own (a *task*).  When its socket would
block, the task parks itself on the descriptor (:meth:`Hub.wait`) and
switches to the hub; the hub's ``epoll`` reports the descriptor ready and
the hub switches back.  Nothing global is patched: only the sockets that the
engine hands to handlers know about the hub (see ``sockets.py``).

Descriptors are registered edge-triggered, once, on their first wait, and
stay registered until the socket closes: a wait costs no ``epoll_ctl``.
Edge-triggering is safe because a task always tries the system call first
and parks only after ``EAGAIN``; any data that arrives after that makes a
new edge.  An edge with nobody waiting is dropped: whoever reads next tries
the call first anyway.

The serving loop's own descriptors (listeners, the wake-up socket) are
*sources*: level-triggered, and reported back to the caller of
:meth:`Hub.run_once` instead of being handled here, so the stdlib accept
path (``get_request()``, ``verify_request()``, ...) stays the server's.

The hub greenlet is whichever greenlet created the hub, in the thread that
calls ``serve_forever()``; tasks are its children, so a finished
task returns to it.  A task that keeps the hub from running for longer than
``block_warning`` seconds (a ``time.sleep()``, heavy CPU) is logged with the
time it held the loop.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import greenlet

from portico.net.addresses import format_address
from portico.net.wakeup import Wakeup

__all__ = ["CONNECTIONS", "Connection", "Hub", "Task", "current_task"]

if not hasattr(select, "epoll"):
    raise ImportError("the event engine needs epoll, which only Linux has", name="select")

server_log = logging.getLogger("portico.server")

_T = TypeVar("_T")

_IN = select.EPOLLIN | select.EPOLLPRI | select.EPOLLERR | select.EPOLLHUP | select.EPOLLRDHUP
_OUT = select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP
_EDGE = select.EPOLLET
MAX_IDLE = 256  # idle tasks kept for reuse; each holds a data stack of its own
_ENDING = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_TIMED_OUT = object()  # what a timer passes to a task whose wait ran out


def current_task() -> Task | None:
    """The task running now, if the current greenlet is one."""
    current = greenlet.getcurrent()
    return current if isinstance(current, Task) else None


class Task(greenlet.greenlet):  # type: ignore[misc]  # greenlet ships no type information
    """A greenlet that runs request handlers, one after another (see :meth:`Hub.start`)."""

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub._work, hub.greenlet)
        self.hub = hub
        self.client_address: Any = None  # of the request it runs now

    @property
    def label(self) -> str:
        """How logs name the task (formatted only when a log needs it)."""
        return f"the handler for {format_address(self.client_address)}"


class Connection:
    """What the hub knows of a cooperative socket's descriptor."""

    __slots__ = ("ending", "hub", "peeked", "quiet", "timeout")

    def __init__(self, hub: Hub, timeout: float | None) -> None:
        self.hub = hub
        self.timeout = timeout  # the one its owner set: None blocks, 0.0 never waits
        # Read to the end since the hub last saw it become readable: the next read
        # may park at once, without a system call that would fail with EAGAIN.
        self.quiet = False
        # The peer closed or failed (the hub saw it): end of file or an error waits
        # to be read, and no new edge will come, so reads must never park first.
        self.ending = False
        # A MSG_PEEK read left data queued: the next plain read takes it without
        # parking (a next peek still waits for new data: it wants more than it saw).
        self.peeked = False


# Every cooperative socket's descriptor (descriptors are unique in a process at any time).
CONNECTIONS: dict[int, Connection] = {}


class _Timer:
    """A call scheduled on the hub's clock; cancelling marks it, the heap drops it later."""

    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Hub:
    """An epoll loop in this thread that parks and resumes :class:`Task` greenlets."""

    def __init__(self, *, block_warning: float | None = 0.1) -> None:
        self.greenlet = greenlet.getcurrent()
        self.thread_id = threading.get_ident()
        self.block_warning = block_warning
        self.blocked_count = 0  # tasks that held the loop past block_warning
        self.longest_block = 0.0  # seconds
        self._epoll = select.epoll()
        self._registered: dict[int, int] = {}  # descriptor -> event mask
        self._readers: dict[int, Task] = {}
        self._writers: dict[int, Task] = {}
        self._sources: dict[int, Any] = {}  # descriptor -> what run_once() reports for it
        self._idle: list[Task] = []  # tasks waiting for their next job
        self._ready: deque[tuple[Task, Any]] = deque()  # tasks to resume, with their value
        self._timers: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()  # ties in the timer heap: first scheduled, first run
        self._calls: deque[Callable[[], object]] = deque()  # from other threads
        self._wakeup = Wakeup()
        self._epoll.register(self._wakeup.fileno(), select.EPOLLIN)
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self.closed = False

    # -- what tasks call -------------------------------------------------

    def wait(self, fd: int, *, write: bool, timeout: float | None) -> None:
        """Park the current task until ``fd`` is ready; TimeoutError after ``timeout``."""
        task = greenlet.getcurrent()
        waiters, events = (self._writers, _OUT) if write else (self._readers, _IN)
        if fd in waiters:
            doing = "write" if write else "read"
            raise RuntimeError(f"another task is already waiting to {doing} descriptor {fd}")
        mask = self._registered.get(fd)
        if mask is None or mask & events != events:
            self._watch(fd, events)
        waiters[fd] = task
        if timeout is None:
            try:
                self.greenlet.switch()  # the hub takes us out of waiters before it wakes us
            except BaseException:  # killed (GreenletExit) where we wait
                if waiters.get(fd) is task:
                    del waiters[fd]
                raise
            return
        timer = self.call_later(timeout, self._time_out, waiters, fd, task)
        try:
            value = self.greenlet.switch()
        finally:
            if waiters.get(fd) is task:
                del waiters[fd]
            timer.cancel()
        if value is _TIMED_OUT:
            raise TimeoutError("timed out")

    def sleep(self, seconds: float) -> None:
        """Park the current task for ``seconds`` (0: let every other ready task run first)."""
        task = greenlet.getcurrent()
        if seconds <= 0:
            self._ready.append((task, None))
        else:
            self.call_later(seconds, self._resume, task, None)
        self.greenlet.switch()

    def run_in_thread(self, func: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run ``func`` in a worker thread; park the current task until it returns."""
        task = greenlet.getcurrent()
        future = self._thread_pool().submit(func, *args, **kwargs)
        future.add_done_callback(lambda done: self.call_soon_threadsafe(self._resume, task, done))
        done: Future[_T] = self.greenlet.switch()
        return done.result()

    # -- what the engine calls -------------------------------------------

    def task(self, client_address: Any) -> Task:
        """A task to run the request from ``client_address``: an idle one, or a new one."""
        task = self._idle.pop() if self._idle else Task(self)
        task.client_address = client_address
        return task

    def start(self, task: Task, job: Callable[..., object], *args: Any) -> None:
        """Run ``job(*args)`` in ``task`` now; returns when the job ends or first parks."""
        started = time.monotonic()
        task.switch(job, args)
        self._measure(task, started)

    def _work(self, job: Callable[..., object], args: tuple[Any, ...]) -> None:
        """A task's life: run a job, wait idle for the next one, up to MAX_IDLE waiting.

        Starting a greenlet costs a fresh Python data stack (an mmap, ~8 us);
        switching to an idle one, a fraction of a microsecond.
        """
        me, idle = greenlet.getcurrent(), self._idle
        while True:
            job(*args)
            # Let the request go while idle (the address stays: a log may still name it).
            job = args = None  # type: ignore[assignment]
            if self.closed or len(idle) >= MAX_IDLE:
                return
            idle.append(me)
            job, args = self.greenlet.switch()

    def kill(self, task: Task) -> None:
        """End ``task`` by raising GreenletExit where it is parked (its cleanup runs)."""
        if task.dead:
            return
        started = time.monotonic()
        task.throw(greenlet.GreenletExit)
        self._measure(task, started)

    def add_source(self, fd: int, report: Any) -> None:
        """Watch ``fd`` for reading, level-triggered; run_once() reports ``report`` for it."""
        self._epoll.register(fd, select.EPOLLIN)
        self._sources[fd] = report

    def remove_source(self, fd: int) -> None:
        if self._sources.pop(fd, None) is not None:
            with contextlib.suppress(OSError):  # a listener that drain() closed already
                self._epoll.unregister(fd)

    def forget(self, fd: int, *, closing: bool) -> None:
        """``fd`` leaves the hub (``closing``: it is about to close); wake whoever waits on it.

        May be called from any thread (a server closing its connections).
        Closing a descriptor takes it out of the epoll set by itself, so then
        there is no system call to make.
        """
        if self.closed:
            return
        if self._registered.pop(fd, None) is not None and not closing:
            try:
                self._epoll.unregister(fd)
            except OSError:  # closed already, behind our back
                pass
        for waiters in (self._readers, self._writers):
            task = waiters.pop(fd, None)
            if task is not None:
                self._ready.append((task, None))  # it retries, and meets the closed socket
                if threading.get_ident() != self.thread_id:
                    self._wakeup.set()

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> _Timer:
        timer = _Timer(time.monotonic() + delay, callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` in the hub's thread, from any thread (a signal handler too)."""
        self._calls.append(lambda: callback(*args))
        self._wakeup.set()

    def run_once(self, timeout: float | None) -> list[tuple[Any, int]]:
        """One round: run what is due, wait up to ``timeout`` for events, dispatch them.

        Returns the sources that are ready, with their events.
        """
        self._run_due()
        if self._ready or self._calls:
            timeout = 0.0
        elif self._timers:
            until_timer = max(0.0, self._timers[0][0] - time.monotonic())
            timeout = until_timer if timeout is None else min(timeout, until_timer)
        events = self._epoll.poll(-1 if timeout is None else timeout)
        sources = []
        readers, writers, connections = self._readers, self._writers, CONNECTIONS
        clock, threshold, wakeup = time.monotonic, self.block_warning, self._wakeup.fileno()
        for fd, mask in events:
            if mask & _IN:
                connection = connections.get(fd)
                if connection is not None:
                    connection.quiet = False
                    if mask & _ENDING:
                        connection.ending = True
                task = readers.pop(fd, None)
                if task is not None:  # inline _switch(): this is the hottest path
                    started = clock()
                    task.switch()
                    if threshold is not None and clock() - started > threshold:
                        self._blocked(task, clock() - started)
            if mask & _OUT and (task := writers.pop(fd, None)) is not None:
                self._switch(task, None)
            if fd in self._sources:
                sources.append((self._sources[fd], mask))
            elif fd == wakeup:
                self._wakeup.drain()
        self._run_due()
        return sources

    def close(self) -> None:
        """Release the loop's descriptors and threads; tasks still parked are abandoned."""
        if self.closed:
            return
        self.closed = True
        idle, self._idle = self._idle, []
        if threading.get_ident() == self.thread_id:
            for task in idle:
                task.throw(greenlet.GreenletExit)
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._epoll.close()
        self._wakeup.close()

    # -- inside ------------------------------------------------------------

    def _watch(self, fd: int, events: int) -> None:
        mask = self._registered.get(fd)
        if mask is None:
            self._epoll.register(fd, events | _EDGE)
            self._registered[fd] = events | _EDGE
        elif mask & events != events:
            mask |= events
            self._epoll.modify(fd, mask)
            self._registered[fd] = mask

    def _switch(self, task: Task, value: Any) -> None:
        started = time.monotonic()
        task.switch(value)
        self._measure(task, started)

    def _measure(self, task: Task, started: float) -> None:
        held = time.monotonic() - started
        if self.block_warning is not None and held > self.block_warning:
            self._blocked(task, held)

    def _blocked(self, task: Task, held: float) -> None:
        self.blocked_count += 1
        self.longest_block = max(self.longest_block, held)
        server_log.warning(
            "%s blocked the event loop for %.3f s (warning threshold %.3f s): "
            "move blocking calls to run_in_thread()",
            task.label,
            held,
            self.block_warning,
        )

    def _resume(self, task: Task, value: Any) -> None:
        if not task.dead:
            self._switch(task, value)

    def _time_out(self, waiters: dict[int, Task], fd: int, task: Task) -> None:
        if waiters.get(fd) is task:
            del waiters[fd]
            self._switch(task, _TIMED_OUT)

    def _run_due(self) -> None:
        calls = self._calls
        while calls:
            calls.popleft()()
        ready = self._ready
        for _ in range(len(ready)):  # not those that become ready meanwhile: they wait a round
            task, value = ready.popleft()
            self._resume(task, value)
        timers, now = self._timers, time.monotonic()
        while timers and timers[0][0] <= now:
            _, _, timer = heapq.heappop(timers)
            if not timer.cancelled:
                timer.callback(*timer.args)

    def _thread_pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self.closed:
                raise RuntimeError("the event loop is closed")
            if self._executor is None:
                self._executor = ThreadPoolExecutor(thread_name_prefix="portico-event-blocking")
            return self._executor
