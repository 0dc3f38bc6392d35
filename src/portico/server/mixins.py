"""The stdlib concurrency mixins: a thread, or a child process, per request.

Both keep their exact stdlib behaviour (attributes, hooks, reaping), because
programs tune them: ``daemon_threads``, ``block_on_close``, ``max_children``.
portico's bounded engines arrive as separate mixins and never change these.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
import weakref
from typing import Any

from portico.errors import stops_the_process

__all__ = ["ThreadingMixIn"]


class _NoThreads:
    """What ``_threads`` is when nothing needs joining (``block_on_close`` is false)."""

    def append(self, thread: threading.Thread) -> None:
        pass

    def join(self) -> None:
        pass


class _Threads(list[threading.Thread]):
    """The request threads to join on server_close(); finished ones are dropped as we go."""

    def append(self, thread: threading.Thread) -> None:
        self.reap()
        if thread.daemon:
            return
        super().append(thread)

    def pop_all(self) -> list[threading.Thread]:
        self[:], result = [], self[:]
        return result

    def join(self) -> None:
        for thread in self.pop_all():
            thread.join()

    def reap(self) -> None:
        self[:] = [thread for thread in self if thread.is_alive()]


class ThreadingMixIn:
    """Mix-in class to handle each request in a new thread."""

    # Decides how threads will act upon termination of the
    # main process
    daemon_threads = False
    # If true, server_close() waits until all non-daemonic threads terminate.
    block_on_close = True
    # Threads object
    # used by server_close() to wait for all threads completion.
    _threads: Any = _NoThreads()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Same as in BaseServer but as a thread.

        In addition, exception handling is done here.
        """
        try:
            self.finish_request(request, client_address)  # type: ignore[attr-defined]
        except BaseException as exc:
            # portico: a BaseException that need not stop the process is the request's
            # failure too, logged with its client (the stdlib let the thread print it).
            if stops_the_process(exc):
                raise
            self.handle_error(request, client_address)  # type: ignore[attr-defined]
        finally:
            self.shutdown_request(request)  # type: ignore[attr-defined]

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a new thread to process the request."""
        if self.block_on_close:
            vars(self).setdefault("_threads", _Threads())
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address)
        )
        thread.daemon = self.daemon_threads
        self._threads.append(thread)
        _request_threads(self).add(thread)  # for drain(), daemons too; weakly: no leak
        thread.start()

    def server_close(self) -> None:
        super().server_close()  # type: ignore[misc]
        self._threads.join()

    def _portico_wait_in_flight(self, deadline: float | None) -> bool:
        threads = list(_request_threads(self))
        for thread in threads:
            thread.join(_remaining(deadline))
        return not any(thread.is_alive() for thread in threads)


def _request_threads(server: Any) -> weakref.WeakSet[threading.Thread]:
    """Every request thread of ``server`` still referenced (so, at least every live one)."""
    threads: weakref.WeakSet[threading.Thread] | None = vars(server).get("_portico_threads")
    if threads is None:
        threads = vars(server).setdefault("_portico_threads", weakref.WeakSet())
    return threads


if hasattr(os, "fork"):
    __all__ += ["ForkingMixIn"]

    class ForkingMixIn:
        """Mix-in class to handle each request in a new process."""

        timeout: float | None = 300
        active_children: set[int] | None = None
        max_children = 40
        # If true, server_close() waits until all child processes complete.
        block_on_close = True

        def collect_children(self, *, blocking: bool = False) -> None:
            """Internal routine to wait for children that have exited."""
            if self.active_children is None:
                return
            # Over the limit: wait (blocking) until a child exits, whatever else happens.
            while len(self.active_children) >= self.max_children:
                try:
                    pid, _ = os.waitpid(-1, 0)
                    self.active_children.discard(pid)
                except ChildProcessError:
                    # we don't have any children, we're done
                    self.active_children.clear()
                except OSError:
                    break
            # Then reap, without waiting unless asked, every child that is done.
            for pid in self.active_children.copy():
                try:
                    flags = 0 if blocking else os.WNOHANG
                    reaped, _ = os.waitpid(pid, flags)
                    # 0 while the child still runs, and discard(0) is a no-op.
                    self.active_children.discard(reaped)
                except ChildProcessError:
                    # someone else reaped it
                    self.active_children.discard(pid)
                except OSError:
                    pass
            self._portico_free_children_slots()

        def _portico_free_children_slots(self) -> None:
            """A child's admission slot is free once the child is reaped (portico)."""
            slots = vars(self).get("_portico_child_slots")
            admission = getattr(self, "_portico_admission", None)
            if not slots or admission is None:
                return
            for pid in [pid for pid in slots if pid not in (self.active_children or ())]:
                if admission.free(slots.pop(pid)):
                    self._portico_slot_freed()  # type: ignore[attr-defined]

        def handle_timeout(self) -> None:
            """Wait for zombies after self.timeout seconds of inactivity.

            May be extended, do not override.
            """
            self.collect_children()

        def service_actions(self) -> None:
            """Collect the zombie child processes regularly in the ForkingMixIn.

            service_actions is called in the BaseServer's serve_forever loop.
            """
            self.collect_children()

        def process_request(self, request: Any, client_address: Any) -> None:
            """Fork a new subprocess to process the request."""
            pid = os.fork()
            if pid:
                # Parent process
                if self.active_children is None:
                    self.active_children = set()
                self.active_children.add(pid)
                self._portico_hand_slot_to(pid, request)
                self.close_request(request)  # type: ignore[attr-defined]
                return
            # Child process.  Whatever happens, the child must leave through
            # os._exit(): returning would run the parent's serving loop in it.
            status = 1
            try:
                self.finish_request(request, client_address)  # type: ignore[attr-defined]
                status = 0
            except BaseException as exc:
                # Logged before os._exit(), which would leave no trace of it otherwise.
                if isinstance(exc, SystemExit):
                    status = exc.code if isinstance(exc.code, int) else 1
                else:
                    self.handle_error(request, client_address)  # type: ignore[attr-defined]
            finally:
                try:
                    self.shutdown_request(request)  # type: ignore[attr-defined]
                finally:
                    os._exit(status)

        def _portico_active(self) -> int | None:
            """In flight: the children serving a request (the parent counts no ends)."""
            return len(self.active_children or ())

        def _portico_hand_slot_to(self, pid: int, request: Any) -> None:
            """The child serves ``request`` now: it holds its admission slot until reaped."""
            admission = getattr(self, "_portico_admission", None)
            slot = None if admission is None else admission.detach(request)
            if slot is not None:
                vars(self).setdefault("_portico_child_slots", {})[pid] = slot

        def server_close(self) -> None:
            super().server_close()  # type: ignore[misc]
            self.collect_children(blocking=self.block_on_close)

        def _portico_wait_in_flight(self, deadline: float | None) -> bool:
            while True:
                self.collect_children()
                if not self.active_children:
                    return True
                remaining = _remaining(deadline)
                if remaining == 0.0:
                    return False
                _wait_for_a_child(self.active_children, remaining)

        def _portico_force_in_flight(self) -> None:
            super()._portico_force_in_flight()  # type: ignore[misc]
            # SIGKILL: the deadline has passed, and a child runs with the signal
            # handlers of the parent it was forked from, which may not end it.
            for pid in self.active_children or ():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.collect_children()

    def _wait_for_a_child(pids: set[int], timeout: float | None) -> None:
        """Wait until one of ``pids`` exits or ``timeout`` passes (no reaping)."""
        if not hasattr(os, "pidfd_open"):  # not Linux: look again soon
            time.sleep(0.05 if timeout is None else min(timeout, 0.05))
            return
        poller, fds = select.poll(), []
        try:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    fds.append(os.pidfd_open(pid))
                    poller.register(fds[-1], select.POLLIN)
            if fds:
                poller.poll(None if timeout is None else int(timeout * 1000) + 1)
        finally:
            for fd in fds:
                os.close(fd)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
