"""A prefork worker: the forked child that serves until its master says stop.

It boots (builds or takes over its server, runs ``worker_init``), tells the
master it is ready, then serves with :func:`serve_until_signalled`: SIGTERM
drains it (a second one stops it at once).  From its serving loop it sends
a heartbeat, and after ``max_requests`` it retires on its own.  It never
returns: it leaves with ``os._exit()`` so that nothing of the master's
(atexit handlers, buffered output) runs twice.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any, NoReturn

from portico.prefork.channel import BEAT, READY, RETIRING, Writer
from portico.server.lifecycle import serve_until_signalled

__all__ = ["EXIT_WORKER_BOOT", "WorkerPlan", "flush_logs", "run_worker"]

log = logging.getLogger("portico.prefork")

EXIT_WORKER_BOOT = 3  # a worker that could not boot exits with this, and so does its master
_EXIT_FAILED = 1
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# The master's signals: a worker leaves them to the master.  SIGINT too, since a
# terminal's Ctrl-C reaches the whole process group and the master drains the workers.
_MASTER_SIGNALS = ("SIGINT", "SIGHUP", "SIGTTIN", "SIGTTOU", "SIGUSR2", "SIGQUIT")


@dataclass(frozen=True)
class WorkerPlan:
    """What every worker of one supervisor does."""

    build: Callable[[], Any]  # the worker's server: the master's, or a new one per worker
    shares_listeners: bool
    worker_init: Callable[[Any], object] | None
    drain_timeout: float | None
    max_requests: int
    max_requests_jitter: int
    heartbeat_interval: float  # well within the master's worker_timeout
    # Called with the server at every heartbeat and once stopped: the worker's
    # statistics, published for the master (portico.ops.metrics).
    publish: Callable[[Any], object] | None = None


def run_worker(
    plan: WorkerPlan, number: int, channel: Writer, master: int, mask: Iterable[int]
) -> NoReturn:
    """Boot, serve until SIGTERM, drain, and leave the process.

    The master forked it with its signals blocked; ``mask`` is the signal
    mask to restore once the worker's own handlers are in place.
    """
    code = EXIT_WORKER_BOOT
    try:
        _leave_signals_to_the_master()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _drain_when_orphaned(master)
        server = plan.build()
        if plan.shares_listeners:
            server.share_listeners()
        if plan.worker_init is not None:
            plan.worker_init(server)
        _send_heartbeats(server, channel, plan.heartbeat_interval, plan.publish)
        if plan.max_requests:
            _retire_after(server, channel, plan, number)
        code = _EXIT_FAILED
        channel.send(READY)
        serve_until_signalled(
            server,
            drain_timeout=plan.drain_timeout,
            poll_interval=min(0.5, plan.heartbeat_interval),
            signals=(signal.SIGTERM,),
        )
        if plan.publish is not None:
            plan.publish(server)  # the final figures, drain included
        code = 0
    except BaseException:
        if code == EXIT_WORKER_BOOT:
            log.exception("worker %d (pid %d) failed to boot", number, os.getpid())
        else:
            log.exception("worker %d (pid %d) failed", number, os.getpid())
    finally:
        flush_logs()
        os._exit(code)


def _leave_signals_to_the_master() -> None:
    """Forget the master's signal handling; ignore its signals until the process ends.

    A Python-level handler, not SIG_IGN: a program a handler starts
    (``subprocess``) gets the default actions back, as it would expect.
    """
    signal.set_wakeup_fd(-1)
    for name in _MASTER_SIGNALS:
        signal.signal(getattr(signal, name), _ignore)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _drain_when_orphaned(master: int) -> None:
    """Ask the kernel for SIGTERM when the master dies, so that no worker serves unsupervised.

    A master that stops normally outlives its workers; this is for one that
    was killed.  Linux only (``prctl(PR_SET_PDEATHSIG)``).
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != master:  # it died before the request took effect
        raise RuntimeError("the master is gone")


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A master's signal, sent to the process group: not for a worker."""


def _send_heartbeats(
    server: Any,
    channel: Writer,
    interval: float,
    publish: Callable[[Any], object] | None = None,
) -> None:
    """Beat from the serving loop, which calls ``service_actions()`` every poll interval.

    A loop stuck in a handler (a serial engine's, or an event loop blocked
    by one) stops beating, and the master replaces the worker.
    """
    service_actions = server.service_actions
    next_beat = 0.0

    def actions_and_heartbeat() -> None:
        nonlocal next_beat
        service_actions()
        now = time.monotonic()
        if now >= next_beat:
            channel.send(BEAT)
            next_beat = now + interval
            if publish is not None:
                publish(server)

    server.service_actions = actions_and_heartbeat


def _retire_after(server: Any, channel: Writer, plan: WorkerPlan, number: int) -> None:
    """After its quota of requests, the worker stops accepting and drains.

    The jitter spreads the quotas so that workers started together do not
    all retire together.  The master hears RETIRING first and starts the
    replacement while this worker finishes what it has.
    """
    quota = plan.max_requests + random.randint(0, plan.max_requests_jitter)
    process_request = server.process_request
    handled = 0

    def counted(request: Any, client_address: Any) -> None:
        nonlocal handled
        handled += 1
        process_request(request, client_address)
        if handled == quota:
            log.info("worker %d (pid %d) retiring after %d requests", number, os.getpid(), quota)
            channel.send(RETIRING)
            server.shutdown()  # from the serving thread: the loop stops after this request

    server.process_request = counted


def flush_logs() -> None:
    """Write out what the log handlers hold: before a fork, or before ``os._exit()``."""
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # a broken log stream must not stop the exit
            pass
