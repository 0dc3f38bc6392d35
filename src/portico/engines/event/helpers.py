"""What a handler on the event engine calls to wait without holding the loop.

Both helpers work anywhere: in a task of the event engine they park the
task; anywhere else (a thread of the ``threads`` or ``pool`` engine, plain
code) they simply do the thing, so a handler that uses them runs on every
engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from portico.engines.event.hub import current_task

__all__ = ["run_in_thread", "sleep"]

_T = TypeVar("_T")


def run_in_thread(func: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Call ``func(*args, **kwargs)`` in a worker thread and return its result.

    In a task of the event engine, the task waits for the result while the
    loop serves everyone else; the exception ``func`` raises is raised here.
    Elsewhere, ``func`` is simply called.  Use it for blocking calls that are
    not socket calls on the request: a database driver, a file, DNS, CPU work
    that releases the GIL.
    """
    task = current_task()
    if task is None:
        return func(*args, **kwargs)
    return task.hub.run_in_thread(func, *args, **kwargs)


def sleep(seconds: float) -> None:
    """``time.sleep()`` that lets the event loop serve others meanwhile."""
    task = current_task()
    if task is None:
        time.sleep(seconds)
    else:
        task.hub.sleep(seconds)
