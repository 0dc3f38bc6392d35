"""Serving until a signal, then draining: what a server's main program does.

:func:`serve_until_signalled` runs ``serve_forever()`` with handlers for
SIGTERM and SIGINT that only record the signal and call ``shutdown()`` (the
serving loop does the rest), then drains the server for up to
``drain_timeout`` seconds with :meth:`~portico.server.base.BaseServer.drain`;
a second SIGTERM or SIGINT during the drain closes everything at once.  The
previous signal handlers come back afterwards.  ``portico serve`` is built
on it.
"""

from __future__ import annotations

import logging
import selectors
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from portico.net.wakeup import Wakeup, signals_wake

__all__ = ["STOP_SIGNALS", "drain_on_signals", "serve_until_signalled", "stop_on_signals"]

log = logging.getLogger("portico.server")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve_until_signalled(
    server: Any,
    *,
    drain_timeout: float | None = 30.0,
    poll_interval: float = 0.5,
    serving: Callable[[], object] | None = None,
    stopping: Callable[[], object] | None = None,
    signals: tuple[int, ...] = STOP_SIGNALS,
    reload: Callable[[], object] | None = None,
    draining: Callable[[], object] | None = None,
    drain_delay: float = 0.0,
) -> str:
    """Serve until SIGTERM or SIGINT, then drain; returns the signal's name ("request" if
    something else called ``shutdown()``).  ``serving()`` is called just before serving,
    ``stopping()`` just before draining (systemd's READY and STOPPING, say).

    ``signals`` are the ones that stop it (a prefork worker leaves SIGINT to
    its master).  With ``reload``, SIGHUP calls it from the serving loop
    (``service_actions()``), never from the signal handler.  Signal handlers
    are installed only in the main thread (elsewhere nothing stops the
    server but ``shutdown()``).

    ``draining()`` is called as soon as a stop signal arrives (from the
    signal handler: it must only record it, as a health listener's state
    does), and the server keeps serving ``drain_delay`` seconds more before
    the drain closes its listeners, so that a load balancer that saw the
    health check flip has stopped sending new clients.  A second signal
    meanwhile cuts the delay short.
    """
    stops = stop_on_signals(server, signals, draining=draining, delay=drain_delay)
    with stops as received, _reload_on_hup(server, reload):
        if serving is not None:
            serving()
        server.serve_forever(poll_interval=poll_interval)
    cause = signal.Signals(received[0]).name if received else "request"
    if stopping is not None:
        stopping()
    drain_on_signals(server, drain_timeout, cause, signals)
    return cause


@contextmanager
def stop_on_signals(
    server: Any,
    signals: tuple[int, ...] = STOP_SIGNALS,
    *,
    draining: Callable[[], object] | None = None,
    delay: float = 0.0,
) -> Iterator[list[int]]:
    """Make ``signals`` (SIGINT and SIGTERM) call ``server.shutdown()``; yields those received.

    With ``delay``, the first signal calls ``draining()`` at once and
    ``shutdown()`` only ``delay`` seconds later (from ``service_actions()``);
    a second signal shuts down at once.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    due: list[float] = []
    service_actions = server.service_actions

    def actions_and_delayed_stop() -> None:
        service_actions()
        if due and time.monotonic() >= due[0]:
            server.shutdown()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if draining is not None:
            draining()
        if delay > 0 and len(received) == 1:
            due.append(time.monotonic() + delay)
            return
        server.shutdown()

    if delay > 0:
        server.service_actions = actions_and_delayed_stop
    try:
        with _signal_handlers(on_signal, signals):
            yield received
    finally:
        if delay > 0:
            server.service_actions = service_actions


@contextmanager
def _reload_on_hup(server: Any, reload: Callable[[], object] | None) -> Iterator[None]:
    """SIGHUP records a reload; the serving loop's next ``service_actions()`` does it."""
    if reload is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    service_actions = server.service_actions

    def actions_and_reload() -> None:
        service_actions()
        while pending:
            pending.pop()
            log.info("reloading on SIGHUP")
            reload()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)

    server.service_actions = actions_and_reload
    try:
        with _signal_handlers(on_hup, (signal.SIGHUP,)):
            yield
    finally:
        server.service_actions = service_actions


class _SecondSignal(BaseException):  # not an Exception: no handler may catch it
    portico_stops = True  # nor may the engines take it for a handler's failure
    """A second SIGINT or SIGTERM while draining."""


def drain_on_signals(
    server: Any,
    timeout: float | None,
    cause: str = "request",
    signals: tuple[int, ...] = STOP_SIGNALS,
) -> bool:
    """``server.drain(timeout)``; one of ``signals`` meanwhile closes everything at once.

    A signal may land on any thread, and a main thread blocked joining
    request threads would not notice it: unless the server's requests run on
    a loop of this thread (event, async), drain() runs in a helper thread
    while this one waits on the signal wake-up.  Returns drain()'s answer
    (False when a signal cut it short).
    """
    log.info("stopping on %s: draining for up to %s s", cause, timeout)

    def stop_now(signum: int, frame: FrameType | None) -> None:
        raise _SecondSignal(signal.Signals(signum).name)

    main = threading.current_thread() is threading.main_thread()
    try:
        with _signal_handlers(stop_now, signals) if main else _nothing():
            if getattr(server, "_portico_drain_in_serving_thread", False) or not main:
                drained: bool = server.drain(timeout)
            else:
                drained = _drain_in_a_thread(server, timeout)
    except _SecondSignal as exc:
        log.warning("stopping at once on a second %s", exc)
        server.drain(0)
        return False
    if drained:
        log.info("drained: every connection finished")
    else:
        log.warning("drain deadline passed: the connections left were closed")
    return drained


def _drain_in_a_thread(server: Any, timeout: float | None) -> bool:
    """``server.drain(timeout)`` in a helper thread; this one wakes for signals meanwhile."""
    result: list[bool] = []
    finished = threading.Event()  # set before the wake-up, so that no wake-up is missed
    done = Wakeup()

    def work() -> None:
        try:
            result.append(server.drain(timeout))
        finally:
            finished.set()
            done.set()

    helper = threading.Thread(target=work, name="portico-drain", daemon=True)
    try:
        with signals_wake(done), selectors.DefaultSelector() as selector:
            selector.register(done, selectors.EVENT_READ)
            helper.start()
            while not finished.is_set():
                selector.select()  # a signal's handler runs as this returns
                done.drain()
    finally:
        done.close()
    return bool(result and result[0])


@contextmanager
def _signal_handlers(
    handler: Callable[[int, FrameType | None], None], signals: tuple[int, ...]
) -> Iterator[None]:
    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, signal.SIG_DFL if old is None else old)


@contextmanager
def _nothing() -> Iterator[None]:
    yield
