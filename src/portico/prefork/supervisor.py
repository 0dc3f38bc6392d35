"""The prefork master: it opens the listeners, forks the workers and keeps them serving.

The master never touches a request.  It owns the listening sockets (or,
with ``reuse_port``, only checks that they can be bound), forks the
workers, and then waits in one ``select()`` on the workers' pipes and a
signal wake-up.  It starts no thread, ever, so every fork is from a
single-threaded process.

What it does, and when:

- a worker that dies is replaced, at once the first time, then with a
  back-off that doubles while deaths keep coming; a worker that cannot boot
  stops the master (:class:`WorkerBootError`, exit status 3 from the CLI)
  instead of crash-looping;
- a worker whose serving loop sends no heartbeat for ``worker_timeout``
  seconds is killed and replaced;
- SIGTERM or SIGINT drains: new connections are held off the listeners,
  the ones already queued are accepted, then every worker drains for up to
  ``drain_timeout`` and what is left is killed; a second signal (or
  SIGQUIT) stops at once;
- SIGHUP starts a new generation of workers and drains the old one once
  the new one serves; SIGTTIN and SIGTTOU add and remove a worker;
- SIGUSR2 starts a new master on the same sockets (:mod:`.upgrade`); it
  tells this one to drain once its workers serve.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from portico.errors import ConfigurationError, PorticoError
from portico.net import notify
from portico.net.quiesce import (
    accept_queue_length,
    allow_new_connections,
    stop_new_connections,
)
from portico.net.wakeup import Wakeup, signals_wake
from portico.ops.health import DRAINING, HealthListener
from portico.ops.health import READY as HEALTH_READY
from portico.ops.metrics import publish_statistics
from portico.prefork.channel import BEAT, READY, RETIRING, Reader, Writer
from portico.prefork.upgrade import (
    default_command,
    remove_pid_file,
    start_successor,
    take_upgrade_from,
    write_pid_file,
)
from portico.prefork.worker import EXIT_WORKER_BOOT, WorkerPlan, flush_logs, run_worker

__all__ = ["EXIT_WORKER_BOOT", "Supervisor", "WorkerBootError"]

log = logging.getLogger("portico.prefork")

_HANDLED_SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGTTIN", "SIGTTOU", "SIGUSR2")
_KILL_GRACE = 2.0  # after a drain deadline (or a second signal), before SIGKILL
_QUEUE_WAIT = 1.0  # at most this long for the workers to take the queued connections
_QUEUE_POLL = 0.005
_BACKOFF_FIRST = 0.1
_BACKOFF_MOST = 5.0
_DEATH_WINDOW = 10.0  # deaths this close together count towards the back-off
_IDLE_WAIT = 1.0


class WorkerBootError(PorticoError):
    """A worker could not boot, so the master stopped rather than crash-loop."""


@dataclass(eq=False)
class _Worker:
    number: int
    pid: int
    channel: Reader
    generation: int
    started: float
    last_beat: float
    ready: bool = False
    retiring: bool = False
    stopping: bool = False
    kill_at: float | None = None

    @property
    def name(self) -> str:
        return f"worker {self.number} (pid {self.pid})"


class Supervisor:
    """Serve ``server_factory()``'s server from ``workers`` forked processes.

    ``server_factory`` returns a bound, listening server of any class (TCP,
    UDP, Unix, any engine).  By default the master calls it once and every
    worker serves the listening sockets it inherits.  With ``reuse_port``
    each worker calls it for a server of its own, which must set
    ``allow_reuse_port`` and bind fixed addresses; the master calls it once
    first only to check that it can.  ``worker_init(server)`` runs in each
    worker before it serves; if it raises, the worker has failed to boot.
    ``on_reload(server)`` runs in the master on SIGHUP, before the new
    workers are forked, so that they inherit what it reloaded (TLS
    certificates, say).

    Call :meth:`run` from the main thread: it handles the signals, and
    returns once every worker has stopped.
    """

    def __init__(
        self,
        server_factory: Callable[[], Any],
        *,
        workers: int = 1,
        reuse_port: bool = False,
        drain_timeout: float | None = 30.0,
        worker_timeout: float = 30.0,
        max_requests: int = 0,
        max_requests_jitter: int = 0,
        worker_init: Callable[[Any], object] | None = None,
        on_reload: Callable[[Any], object] | None = None,
        pid_file: str | os.PathLike[str] | None = None,
        upgrade_command: Sequence[str] | None = None,
        listeners: Sequence[HealthListener] = (),
        drain_delay: float = 0.0,
    ) -> None:
        _check_positive("workers", workers)
        _check_positive("worker_timeout", worker_timeout)
        if max_requests < 0 or max_requests_jitter < 0:
            raise ConfigurationError("max_requests and max_requests_jitter cannot be negative")
        self._factory = server_factory
        self.workers = workers
        self.reuse_port = reuse_port
        self.drain_timeout = drain_timeout
        self.worker_timeout = worker_timeout
        self.max_requests = max_requests
        self.max_requests_jitter = max_requests_jitter
        self.worker_init = worker_init
        self.on_reload = on_reload
        self.pid_file = pid_file
        self.upgrade_command = upgrade_command
        self.server: Any = None
        self._workers: dict[int, _Worker] = {}
        self._numbers = itertools.count(1)
        self._generation = 1
        self._signals: list[int] = []
        self._selector: selectors.BaseSelector | None = None
        self._wakeup: Wakeup | None = None
        self._announced = False
        self._stopping: str | None = None
        self._boot_failure: str | None = None
        self._queue_wait_until: float | None = None
        self._spawn_not_before = 0.0
        self._deaths: list[float] = []
        self._successor: int | None = None
        self._handed_over = False
        self._listeners_closed = False
        self._upgrade_from: int | None = None
        self._watchdog: notify.Watchdog | None = None
        # The health (and metrics) listeners answer from this loop (no thread in the master);
        # "draining" from the stop signal on, drain_delay seconds before the drain starts.
        self.listeners = list(listeners)
        self.drain_delay = drain_delay
        # Where the workers publish their statistics (portico.ops.metrics); None: they do not.
        self.statistics_dir: str | None = None
        self._delayed_stop: tuple[str, float] | None = None

    # -- the public surface ------------------------------------------------

    def open(self) -> Any:
        """Build the master's server now (``run()`` does it otherwise); returns it.

        With ``reuse_port`` the server is a probe, closed before the first
        worker starts: its addresses are the ones the workers bind.
        """
        if self.server is None:
            self.server = self._factory()
            if self.reuse_port:
                _check_reuse_port(self.server)
        return self.server

    def worker_pids(self) -> list[int]:
        """The pids of the workers alive now, oldest first."""
        return [worker.pid for worker in sorted(self._workers.values(), key=_age)]

    def run(self) -> None:
        """Fork the workers and supervise them until a signal stops them all.

        Raises :class:`WorkerBootError` if a worker could not boot (after
        stopping the others).
        """
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("a Supervisor runs in the main thread: it handles the signals")
        self.open()
        if self.reuse_port:
            self.server.server_close()  # the probe: the workers bind their own
        self._upgrade_from = take_upgrade_from()
        interval = notify.watchdog_interval()
        self._watchdog = None if interval is None else notify.Watchdog(interval)
        log.info("master pid %d: starting %d workers", os.getpid(), self.workers)
        try:
            with self._signal_handling():
                self._step()
                while not self._stopping or self._workers:
                    self._wait()
                    self._step()
        finally:
            self._close()
        if self._boot_failure is not None:
            raise WorkerBootError(self._boot_failure)
        log.info("master pid %d: every worker stopped", os.getpid())

    # -- the loop ----------------------------------------------------------

    def _step(self) -> None:
        self._take_signals()
        self._read_channels()
        self._reap()
        self._check_workers()
        if self._queue_wait_until is not None:
            self._finish_queue_wait()
        self._maintain()
        if self._watchdog is not None:
            self._watchdog.tick()

    def _wait(self) -> None:
        assert self._selector is not None and self._wakeup is not None
        for key, _ in self._selector.select(self._next_timeout()):
            if key.fileobj is self._wakeup:
                self._wakeup.drain()
            elif isinstance(key.data, HealthListener):
                key.data.on_ready(key)
        for listener in self.listeners:
            listener.expire()
        if self._delayed_stop is not None and time.monotonic() >= self._delayed_stop[1]:
            cause, _ = self._delayed_stop
            self._delayed_stop = None
            self._stop(cause, at_once=False)

    def _next_timeout(self) -> float:
        now = time.monotonic()
        if self._queue_wait_until is not None:
            return _QUEUE_POLL
        moments = [now + _IDLE_WAIT]
        if self._spawn_not_before > now:
            moments.append(self._spawn_not_before)
        for worker in self._workers.values():
            if worker.kill_at is not None:
                moments.append(worker.kill_at)
            elif not worker.stopping:
                moments.append(worker.last_beat + self.worker_timeout)
        if self._watchdog is not None:
            moments.append(now + self._watchdog.interval / 4)
        if self._delayed_stop is not None:
            moments.append(self._delayed_stop[1])
        if self.listeners:
            moments.append(now + 0.5)  # their clients' request deadlines
        return max(0.0, min(moments) - now)

    @contextmanager
    def _signal_handling(self) -> Iterator[None]:
        """Handlers that only record the signal; the wake-up ends the wait at once."""
        self._wakeup = Wakeup()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wakeup, selectors.EVENT_READ)
        for listener in self.listeners:
            listener.attach(self._selector)
        previous = {
            signum: signal.signal(signum, self._record) for signum in self._handled_signals()
        }
        try:
            with signals_wake(self._wakeup):
                yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, signal.SIG_DFL if old is None else old)

    @staticmethod
    def _handled_signals() -> list[int]:
        return [getattr(signal, name) for name in _HANDLED_SIGNALS] + [signal.SIGCHLD]

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGCHLD:  # every loop pass reaps anyway
            self._signals.append(signum)

    def _take_signals(self) -> None:
        received, self._signals = self._signals, []
        for signum in received:
            name = signal.Signals(signum).name
            if signum in (signal.SIGTERM, signal.SIGINT):
                self._stop_after_delay(name)
            elif signum == signal.SIGQUIT:
                self._stop(name, at_once=True)
            elif signum == signal.SIGHUP:
                self._reload()
            elif signum == signal.SIGTTIN:
                self._resize(self.workers + 1)
            elif signum == signal.SIGTTOU:
                self._resize(self.workers - 1)
            elif signum == signal.SIGUSR2:
                self._upgrade()

    # -- workers -----------------------------------------------------------

    def _plan(self) -> WorkerPlan:
        build = self._factory if self.reuse_port else (lambda: self.server)
        return WorkerPlan(
            build=build,
            shares_listeners=not self.reuse_port,
            worker_init=self.worker_init,
            drain_timeout=self.drain_timeout,
            max_requests=self.max_requests,
            max_requests_jitter=self.max_requests_jitter,
            # With the poll interval, a beat comes at least every half worker_timeout.
            heartbeat_interval=min(1.0, self.worker_timeout / 4),
            publish=None
            if self.statistics_dir is None
            else functools.partial(publish_statistics, self.statistics_dir),
        )

    def _spawn(self) -> None:
        assert self._selector is not None
        reader, writer = os.pipe()
        number = next(self._numbers)
        master = os.getpid()
        flush_logs()
        # Signals wait while the child still has the master's handlers: a SIGTERM sent
        # to a worker that early would land in the master's handler, in the child, and
        # be lost.  The worker unblocks them once its own handlers are in place.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, self._handled_signals())
        try:
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(reader)
                    self._forget_in_child()
                    run_worker(self._plan(), number, Writer(writer), master, mask)
                finally:
                    os._exit(EXIT_WORKER_BOOT)  # never back into the master's loop
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(writer)
        now = time.monotonic()
        worker = _Worker(number, pid, Reader(reader), self._generation, now, last_beat=now)
        self._workers[pid] = worker
        self._selector.register(worker.channel, selectors.EVENT_READ, worker)
        log.debug("%s started", worker.name)

    def _forget_in_child(self) -> None:
        """In a new worker: drop the master's descriptors, never use its loop."""
        for worker in self._workers.values():
            worker.channel.close()
        if self._selector is not None:
            self._selector.close()
        if self._wakeup is not None:
            self._wakeup.close()
        for listener in self.listeners:
            listener.sock.close()  # the master's: a worker must not hold it open

    def _read_channels(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers.values()):
            messages = worker.channel.receive()
            if messages is None:
                self._unregister(worker)
                continue
            if READY in messages and not worker.ready:
                worker.ready = True
                log.info("%s serving", worker.name)
            if BEAT in messages or READY in messages:
                worker.last_beat = now
            if RETIRING in messages and not worker.retiring:
                # Draining on its own now: its deadline replaces the heartbeat.
                worker.retiring = True
                worker.last_beat = float("inf")
                if self.drain_timeout is not None:
                    worker.kill_at = now + self.drain_timeout + _KILL_GRACE

    def _unregister(self, worker: _Worker) -> None:
        assert self._selector is not None
        if worker.channel.fd in self._selector.get_map():
            self._selector.unregister(worker.channel)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            how = _describe(status)
            if pid == self._successor:
                self._successor_exited(how)
                continue
            worker = self._workers.pop(pid, None)
            if worker is not None:
                self._unregister(worker)
                worker.channel.close()
                self._worker_exited(worker, how)

    def _worker_exited(self, worker: _Worker, how: str) -> None:
        if self.statistics_dir is not None:
            Path(self.statistics_dir, f"{worker.pid}.json").unlink(missing_ok=True)
        if worker.stopping or self._stopping:
            log.info("%s stopped (%s)", worker.name, how)
        elif worker.retiring:
            log.info("%s retired (%s)", worker.name, how)
        elif not worker.ready:
            self._boot_failed(worker, how)
        else:
            log.error("%s died (%s); replacing it", worker.name, how)
            self._back_off()

    def _boot_failed(self, worker: _Worker, how: str) -> None:
        older = [w for w in self._workers.values() if w.generation < worker.generation]
        if any(not w.stopping for w in older):
            log.error(
                "reload failed: %s could not boot (%s); the previous workers go on serving",
                worker.name,
                how,
            )
            for other in self._workers.values():
                if other.generation == worker.generation:
                    self._stop_worker(other)
            self._generation = max(w.generation for w in older)
            return
        self._boot_failure = f"{worker.name} could not boot ({how}); its log above says why"
        log.critical("%s: stopping, not retrying", self._boot_failure)
        self._stop("a worker that could not boot", at_once=False)

    def _back_off(self) -> None:
        """Replace at once after one death; double the wait while deaths keep coming."""
        now = time.monotonic()
        self._deaths = [moment for moment in self._deaths if now - moment < _DEATH_WINDOW]
        self._deaths.append(now)
        if len(self._deaths) > 1:
            delay = min(_BACKOFF_MOST, _BACKOFF_FIRST * 2 ** (len(self._deaths) - 2))
            log.warning(
                "%d workers died within %.0f s: waiting %.1f s before replacing",
                len(self._deaths),
                _DEATH_WINDOW,
                delay,
            )
            self._spawn_not_before = now + delay

    def _check_workers(self) -> None:
        """Kill the workers past a deadline: hung, too slow to boot, or past their drain."""
        now = time.monotonic()
        for worker in self._workers.values():
            if worker.kill_at is not None:
                if now >= worker.kill_at:
                    log.warning("%s still running past its deadline: killing it", worker.name)
                    self._kill(worker)
            elif not worker.stopping and now - worker.last_beat > self.worker_timeout:
                if worker.ready:
                    log.error(
                        "%s is hung: no heartbeat for %.1f s; killing it",
                        worker.name,
                        now - worker.last_beat,
                    )
                else:
                    log.error(
                        "%s did not boot within %.1f s; killing it",
                        worker.name,
                        self.worker_timeout,
                    )
                self._kill(worker)

    def _kill(self, worker: _Worker) -> None:
        worker.kill_at = None
        worker.last_beat = float("inf")  # killed once; the exit is reaped next
        try:
            os.kill(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _stop_worker(self, worker: _Worker, *, at_once: bool = False) -> None:
        """SIGTERM: the worker drains; past the drain deadline (plus grace), SIGKILL.

        ``at_once``: a second SIGTERM for a worker already draining (which
        then closes its connections at once); a first one gets only the grace.
        """
        if worker.stopping and not at_once:
            return
        again = worker.stopping
        worker.stopping = True
        now = time.monotonic()
        if at_once:
            worker.kill_at = now + _KILL_GRACE
        elif self.drain_timeout is not None:
            worker.kill_at = now + self.drain_timeout + _KILL_GRACE
        if worker.retiring and not again:
            return  # it is draining already, on its own
        try:
            os.kill(worker.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def _maintain(self) -> None:
        """Keep ``workers`` of the current generation serving; finish a reload."""
        if self._stopping:
            return
        current = [
            w
            for w in self._workers.values()
            if w.generation == self._generation and not (w.stopping or w.retiring)
        ]
        if len(current) > self.workers:
            for worker in sorted(current, key=_age)[: len(current) - self.workers]:
                log.info("%s stopped: %d workers wanted", worker.name, self.workers)
                self._stop_worker(worker)
        elif len(current) < self.workers and time.monotonic() >= self._spawn_not_before:
            for _ in range(self.workers - len(current)):
                self._spawn()
        serving = sum(w.ready for w in current)
        if serving < self.workers:
            return
        old = [w for w in self._workers.values() if w.generation < self._generation]
        if any(not w.stopping for w in old):
            log.info("reload: the new workers serve; draining the old ones")
            for worker in old:
                self._stop_worker(worker)
        if not self._announced:
            self._announce()

    def _announce(self) -> None:
        """Every first worker serves: tell systemd, the pid file and an old master."""
        self._announced = True
        for listener in self.listeners:
            listener.state = HEALTH_READY
        if self.pid_file is not None:
            write_pid_file(self.pid_file)
        log.info("master pid %d: %d workers serving", os.getpid(), self.workers)
        if self._upgrade_from is not None:
            notify.notify(f"MAINPID={os.getpid()}\nREADY=1\nSTATUS=serving")
            log.info(
                "upgrade: serving; asking the old master (pid %d) to drain", self._upgrade_from
            )
            try:
                os.kill(self._upgrade_from, signal.SIGTERM)
            except ProcessLookupError:
                pass
        else:
            notify.notify("READY=1\nSTATUS=serving")

    # -- what the signals ask ----------------------------------------------

    def _stop_after_delay(self, cause: str) -> None:
        """TERM or INT: "draining" on the health listener now; the drain after drain_delay."""
        for listener in self.listeners:
            listener.state = DRAINING
        first = self._stopping is None and self._delayed_stop is None
        if first and self.drain_delay > 0 and self._successor is None:
            log.info("stopping on %s: draining in %s s", cause, self.drain_delay)
            self._delayed_stop = cause, time.monotonic() + self.drain_delay
            return
        self._delayed_stop = None
        self._stop(cause, at_once=not first)

    def _stop(self, cause: str, *, at_once: bool) -> None:
        if self._stopping is not None:
            if at_once:
                log.warning("stopping at once on %s", cause)
                self._queue_wait_until = None
                self._close_listeners()
                for worker in self._workers.values():
                    self._stop_worker(worker, at_once=True)
            return
        self._stopping = cause
        self._handed_over = self._successor is not None
        if self._handed_over:
            log.info(
                "stopping on %s: the new master serves; draining %d workers",
                cause,
                len(self._workers),
            )
        else:
            notify.notify("STOPPING=1")
            log.info(
                "stopping on %s: draining %d workers for up to %s s",
                cause,
                len(self._workers),
                self.drain_timeout,
            )
        if at_once:
            self._close_listeners()
            for worker in self._workers.values():
                self._stop_worker(worker, at_once=True)
        elif self._hold_off_new_connections():
            self._queue_wait_until = time.monotonic() + _QUEUE_WAIT
        else:
            self._stop_all()

    def _hold_off_new_connections(self) -> bool:
        """Drop new connection attempts, so that closing resets nobody; True if done."""
        if self._handed_over or self.reuse_port or self._boot_failure is not None:
            return False
        return any([stop_new_connections(sock) for sock in self._listeners()])

    def _finish_queue_wait(self) -> None:
        """Stop the workers once they have accepted every queued connection."""
        assert self._queue_wait_until is not None
        queued = [accept_queue_length(sock) for sock in self._listeners()]
        if any(queued) and time.monotonic() < self._queue_wait_until:
            return
        self._queue_wait_until = None
        self._stop_all()

    def _stop_all(self) -> None:
        self._close_listeners()
        for worker in self._workers.values():
            self._stop_worker(worker)

    def _listeners(self) -> list[Any]:
        if self.reuse_port or self.server is None:
            return []
        return [sock for sock in self.server.listeners if sock.fileno() != -1]

    def _close_listeners(self) -> None:
        """The master's copies: once the workers' close too, the sockets are gone."""
        if self.reuse_port or self.server is None or self._listeners_closed:
            return
        self._listeners_closed = True
        if self._handed_over:
            self.server.share_listeners()  # the new master serves them: keep their files
        if getattr(self.server, "_portico_listeners_shared", False):
            # systemd (or the process that passed them) keeps listening on them after us:
            # the filter that held new connections off for our drain must not stay.
            for sock in self._listeners():
                allow_new_connections(sock)
        self.server.server_close()

    def _reload(self) -> None:
        if self._stopping:
            return
        if self.on_reload is not None and not self.reuse_port:
            self.on_reload(self.server)  # the new workers inherit what it reloads
        self._generation += 1
        log.info("reloading on SIGHUP: starting %d new workers", self.workers)

    def _resize(self, wanted: int) -> None:
        if self._stopping:
            return
        if wanted < 1:
            log.warning("SIGTTOU ignored: one worker is the fewest")
            return
        self.workers = wanted
        log.info("now %d workers wanted", wanted)

    def _upgrade(self) -> None:
        if self._stopping:
            return
        if self._successor is not None:
            log.warning(
                "SIGUSR2 ignored: the new master (pid %d) is still starting", self._successor
            )
            return
        command = list(self.upgrade_command or default_command())
        listeners = self._listeners()
        flush_logs()
        self._successor = start_successor(command, listeners, ["portico"] * len(listeners))
        log.info(
            "upgrading on SIGUSR2: new master pid %d started; this one drains once it serves",
            self._successor,
        )

    def _successor_exited(self, how: str) -> None:
        if self._handed_over:
            log.warning("the new master (pid %d) exited (%s)", self._successor, how)
        else:
            log.error(
                "upgrade failed: the new master (pid %d) exited (%s); this one goes on serving",
                self._successor,
                how,
            )
        self._successor = None

    def _close(self) -> None:
        for worker in list(self._workers.values()):
            self._kill(worker)
        self._close_listeners()
        if self._selector is not None:
            self._selector.close()
        if self._wakeup is not None:
            self._wakeup.close()
        if self.pid_file is not None:
            remove_pid_file(self.pid_file)


def _age(worker: _Worker) -> int:
    return worker.number


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigurationError(f"{name} must be positive, not {value!r}")


def _check_reuse_port(server: Any) -> None:
    reuse = getattr(socket, "SO_REUSEPORT", None)
    for sock in server.listeners:
        if reuse is None or not sock.getsockopt(socket.SOL_SOCKET, reuse):
            server.server_close()
            raise ConfigurationError(
                "reuse_port: the server's listeners must be bound with SO_REUSEPORT "
                "(set allow_reuse_port = True on the server before it binds)"
            )
