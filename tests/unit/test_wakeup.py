"""The wake-up descriptor: set() from anywhere ends a select() at once.

Each test bounds its waits: a select() that should return at once is given a
long timeout and must come back with the wake-up ready (an empty result
would mean it timed out); a call that must not block runs in a thread that
is joined with a timeout.
"""

from __future__ import annotations

import selectors
import threading
from collections.abc import Callable, Iterator

import pytest

from portico.net.wakeup import Wakeup

# Long enough never to be reached on a loaded machine; a wake-up ends it at once.
LONG_WAIT = 20.0


@pytest.fixture
def wakeup() -> Iterator[Wakeup]:
    wake = Wakeup()
    yield wake
    wake.close()


def ready(wakeup: Wakeup, timeout: float) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(wakeup, selectors.EVENT_READ)
        return bool(selector.select(timeout))


def run_bounded(target: Callable[[], object], timeout: float = LONG_WAIT) -> None:
    """Run ``target()`` in a thread; fail if it has not returned within ``timeout``."""
    errors: list[BaseException] = []

    def call() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the call blocked"
    if errors:
        raise errors[0]


def test_not_ready_until_set(wakeup: Wakeup) -> None:
    assert not ready(wakeup, 0)


def test_set_makes_it_ready(wakeup: Wakeup) -> None:
    wakeup.set()
    assert ready(wakeup, 0)


def test_set_from_another_thread_ends_a_select(wakeup: Wakeup) -> None:
    selecting = threading.Event()
    results: list[list[tuple[selectors.SelectorKey, int]]] = []

    def select_until_woken() -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(wakeup, selectors.EVENT_READ)
            selecting.set()
            results.append(selector.select(LONG_WAIT))

    thread = threading.Thread(target=select_until_woken, daemon=True)
    thread.start()
    assert selecting.wait(LONG_WAIT)
    wakeup.set()
    thread.join(LONG_WAIT)
    assert not thread.is_alive()
    [events] = results
    assert [key.fileobj for key, _ in events] == [wakeup]


def test_set_wakes_a_select_in_this_thread_too(wakeup: Wakeup) -> None:
    # What a signal handler does: set() on the selecting thread itself.
    with selectors.DefaultSelector() as selector:
        selector.register(wakeup, selectors.EVENT_READ)
        wakeup.set()
        assert selector.select(LONG_WAIT)


def test_drain_clears_it(wakeup: Wakeup) -> None:
    for _ in range(5):
        wakeup.set()
    wakeup.drain()
    assert not ready(wakeup, 0)


def test_drain_when_nothing_is_pending_does_not_block(wakeup: Wakeup) -> None:
    run_bounded(wakeup.drain)
    assert not ready(wakeup, 0)


def test_it_wakes_again_after_a_drain(wakeup: Wakeup) -> None:
    for _ in range(3):
        wakeup.set()
        assert ready(wakeup, LONG_WAIT)
        wakeup.drain()
        assert not ready(wakeup, 0)


def test_many_sets_without_drain_do_not_block(wakeup: Wakeup) -> None:
    # Far more bytes than a socketpair buffers: the writer fills up and
    # set() must swallow the "would block" instead of waiting.
    def flood() -> None:
        for _ in range(200_000):
            wakeup.set()

    run_bounded(flood)
    assert ready(wakeup, 0)
    run_bounded(wakeup.drain)
    assert not ready(wakeup, 0)
    wakeup.set()
    assert ready(wakeup, LONG_WAIT)


def test_set_after_close_does_not_raise() -> None:
    wakeup = Wakeup()
    wakeup.close()
    wakeup.set()
    wakeup.set()


def test_drain_after_close_does_not_raise() -> None:
    wakeup = Wakeup()
    wakeup.set()
    wakeup.close()
    wakeup.drain()


def test_close_releases_the_descriptor() -> None:
    wakeup = Wakeup()
    assert wakeup.fileno() >= 0
    wakeup.close()
    assert wakeup.fileno() == -1


def test_set_racing_close_from_another_thread_does_not_raise() -> None:
    # shutdown() may set() while the serving loop closes the wake-up.
    errors: list[BaseException] = []

    def keep_setting(wakeup: Wakeup, started: threading.Event) -> None:
        started.set()
        try:
            for _ in range(1000):
                wakeup.set()
        except BaseException as exc:
            errors.append(exc)

    for _ in range(20):
        wakeup = Wakeup()
        started = threading.Event()
        thread = threading.Thread(target=keep_setting, args=(wakeup, started), daemon=True)
        thread.start()
        assert started.wait(LONG_WAIT)
        wakeup.close()
        thread.join(LONG_WAIT)
        assert not thread.is_alive()
    assert errors == []
