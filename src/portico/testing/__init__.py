"""Helpers for testing code built on portico (and on the stdlib's socketserver).

``serving()`` runs a server's ``serve_forever()`` in a background thread and
hands back its address once the loop is running; on the way out it shuts the
server down and closes it, even when the test body failed, and re-raises any
error the serving loop died with.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from portico.testing.process import ServerProcess

__all__ = ["RunningServer", "ServerProcess", "clean_env", "has_ipv6_loopback", "serving"]

# What systemd tells a service: a test run under systemd must not pass its own on.
SYSTEMD_VARIABLES = frozenset(
    ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
)


def clean_env(
    extra: dict[str, str] | None = None, pythonpath: str | os.PathLike[str] | None = None
) -> dict[str, str]:
    """This environment for a ``portico serve`` under test: no PORTICO_* settings and none of
    systemd's variables, ``pythonpath`` first on PYTHONPATH, then ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PORTICO_") and key not in SYSTEMD_VARIABLES
    }
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


@dataclass
class RunningServer:
    """A server being served in a background thread."""

    server: Any
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)

    @property
    def address(self) -> Any:
        """The address clients connect to (``server.server_address``)."""
        return self.server.server_address


@contextlib.contextmanager
def serving(
    server: Any,
    handler: Callable[..., Any] | None = None,
    address: Any = ("127.0.0.1", 0),
    *,
    poll_interval: float = 0.5,
    ready_timeout: float = 10.0,
) -> Iterator[RunningServer]:
    """Serve ``server`` in a thread for the duration of the ``with`` block.

    ``server`` is a server instance, or a server class to build with
    ``handler`` on ``address`` (port 0 by default, so the kernel picks a free
    port: read it from ``.address``).
    """
    if handler is not None:
        server = server(address, handler)
    running = RunningServer(server, threading.Thread(name="portico-test-server", daemon=True))
    running.thread.run = lambda: _serve(running, poll_interval)  # type: ignore[method-assign]
    try:
        running.thread.start()
        _wait_until_serving(running, ready_timeout)
        yield running
    finally:
        _stop(running, ready_timeout)


def _serve(running: RunningServer, poll_interval: float) -> None:
    try:
        running.server.serve_forever(poll_interval)
    except BaseException as exc:
        running.errors.append(exc)


def _wait_until_serving(running: RunningServer, timeout: float) -> None:
    # portico servers say when their loop runs; a stdlib server listens from
    # construction on, so connections queue in the backlog until it serves.
    started = getattr(running.server, "_portico_serving", None)
    if started is None:
        return
    deadline = time.monotonic() + timeout
    # Wake now and then only to notice a serving thread that died early.
    while not started.wait(0.05):
        if not running.thread.is_alive():
            raise RuntimeError("serve_forever() ended before serving") from _first(running.errors)
        if time.monotonic() > deadline:
            raise TimeoutError("the server did not start serving in time")


def _stop(running: RunningServer, timeout: float) -> None:
    try:
        if running.thread.is_alive():
            running.server.shutdown()
    finally:
        running.server.server_close()
        running.thread.join(timeout)
    if running.thread.is_alive():
        raise TimeoutError("serve_forever() did not return after shutdown()")
    if running.errors:
        raise running.errors[0]


def _first(errors: list[BaseException]) -> BaseException | None:
    return errors[0] if errors else None


def has_ipv6_loopback() -> bool:
    """Whether this machine can bind ``::1`` (containers often have no IPv6)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True
