"""The accept-error policy is data: each errno set decides one action.

Pure tests, no sockets: ``classify_accept_error`` sorts an ``OSError`` by its
errno, and ``AcceptBackoff`` turns a run of capacity errors into a doubling
delay with a ceiling, a count of what it absorbed, and counts by errno name.
"""

from __future__ import annotations

import errno
import itertools
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portico.net.accept import (
    CAPACITY_ERRNOS,
    FATAL_ERRNOS,
    AcceptAction,
    AcceptBackoff,
    classify_accept_error,
)

# What the policy promises (STYLE.md, shape 5), written out independently of
# the module's own sets so that dropping one from a set fails here.
EXPECTED_CAPACITY = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
EXPECTED_FATAL = {errno.EBADF, errno.EINVAL, errno.ENOTSOCK, errno.EOPNOTSUPP}
# Errors about one connection (or a signal), which accept() may raise and
# which must never stop or pause a server.
PER_CONNECTION = sorted(
    {
        getattr(errno, code_name)
        for code_name in (
            "ECONNABORTED",
            "EPROTO",
            "EPERM",
            "ECONNRESET",
            "EAGAIN",
            "EINTR",
            "ETIMEDOUT",
            "EHOSTUNREACH",
            "ENETDOWN",
            "ENETUNREACH",
            "ENOPROTOOPT",
            "EHOSTDOWN",
            "ENONET",  # Linux only
        )
        if hasattr(errno, code_name)
    }
)
UNKNOWN_ERRNO = 99_999


def name(code: int) -> str:
    return errno.errorcode[code]


def test_the_sets_are_the_documented_ones() -> None:
    assert set(CAPACITY_ERRNOS) == EXPECTED_CAPACITY
    assert set(FATAL_ERRNOS) == EXPECTED_FATAL


def test_the_sets_are_disjoint() -> None:
    assert not CAPACITY_ERRNOS & FATAL_ERRNOS


@pytest.mark.parametrize("code", sorted(CAPACITY_ERRNOS), ids=name)
def test_capacity_errors_back_off(code: int) -> None:
    assert classify_accept_error(OSError(code, "capacity")) is AcceptAction.BACK_OFF


@pytest.mark.parametrize("code", sorted(FATAL_ERRNOS), ids=name)
def test_fatal_errors_stop(code: int) -> None:
    assert classify_accept_error(OSError(code, "broken listener")) is AcceptAction.STOP


@pytest.mark.parametrize("code", PER_CONNECTION, ids=name)
def test_per_connection_errors_retry(code: int) -> None:
    assert classify_accept_error(OSError(code, "one connection")) is AcceptAction.RETRY


def test_builtin_subclasses_are_classified_by_errno() -> None:
    # socket.accept() raises these subclasses; only the errno matters.
    assert classify_accept_error(ConnectionAbortedError(errno.ECONNABORTED, "x")) is (
        AcceptAction.RETRY
    )
    assert classify_accept_error(BlockingIOError(errno.EAGAIN, "x")) is AcceptAction.RETRY
    assert classify_accept_error(PermissionError(errno.EPERM, "x")) is AcceptAction.RETRY


def test_unknown_errno_retries() -> None:
    assert UNKNOWN_ERRNO not in errno.errorcode
    assert classify_accept_error(OSError(UNKNOWN_ERRNO, "mystery")) is AcceptAction.RETRY


def test_missing_errno_retries() -> None:
    assert OSError("no errno").errno is None
    assert classify_accept_error(OSError("no errno")) is AcceptAction.RETRY


def test_ssl_error_without_errno_retries() -> None:
    # What a get_request() that wraps sockets in TLS raises on a bad handshake.
    exc = ssl.SSLError("handshake failed")
    assert exc.errno is None
    assert classify_accept_error(exc) is AcceptAction.RETRY


@given(st.integers(min_value=-1000, max_value=200_000))
def test_every_errno_gets_exactly_the_action_of_its_set(code: int) -> None:
    action = classify_accept_error(OSError(code, "any"))
    if code in EXPECTED_CAPACITY:
        assert action is AcceptAction.BACK_OFF
    elif code in EXPECTED_FATAL:
        assert action is AcceptAction.STOP
    else:
        assert action is AcceptAction.RETRY


# -- back-off ---------------------------------------------------------------


def test_backoff_starts_unpaused() -> None:
    backoff = AcceptBackoff()
    assert not backoff.paused
    assert backoff.delay == 0.0
    assert backoff.errors_in_pause == 0
    assert not backoff.counts


def test_backoff_defaults() -> None:
    backoff = AcceptBackoff()
    assert (backoff.initial, backoff.maximum) == (0.01, 1.0)


def test_backoff_doubles_from_initial_to_the_ceiling() -> None:
    backoff = AcceptBackoff(initial=0.01, maximum=1.0)
    delays = [backoff.pause() for _ in range(10)]
    assert delays == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0, 1.0])
    assert backoff.paused
    assert backoff.delay == pytest.approx(1.0)


def test_backoff_with_custom_bounds() -> None:
    backoff = AcceptBackoff(initial=0.5, maximum=3.0)
    assert [backoff.pause() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_ceiling_below_initial_doubling() -> None:
    backoff = AcceptBackoff(initial=0.25, maximum=0.3)
    assert [backoff.pause() for _ in range(3)] == [0.25, 0.3, 0.3]


def test_recover_resets_and_counts_absorbed_errors() -> None:
    backoff = AcceptBackoff(initial=0.01, maximum=1.0)
    for _ in range(4):
        backoff.pause()
    assert backoff.errors_in_pause == 4
    assert backoff.recover() == 4
    assert not backoff.paused
    assert backoff.delay == 0.0
    assert backoff.errors_in_pause == 0
    # The next pause starts from the initial delay again.
    assert backoff.pause() == 0.01
    assert backoff.recover() == 1


def test_recover_without_pause_absorbed_nothing() -> None:
    assert AcceptBackoff().recover() == 0


@given(
    initial=st.floats(min_value=1e-4, max_value=10.0),
    factor=st.floats(min_value=1.0, max_value=1000.0),
    pauses=st.integers(min_value=1, max_value=60),
)
def test_backoff_delays_never_decrease_and_stay_bounded(
    initial: float, factor: float, pauses: int
) -> None:
    maximum = initial * factor
    backoff = AcceptBackoff(initial=initial, maximum=maximum)
    delays = [backoff.pause() for _ in range(pauses)]
    assert delays[0] == initial
    assert all(0 < d <= maximum for d in delays)
    assert all(later >= earlier for earlier, later in itertools.pairwise(delays))
    assert all(later in (earlier * 2, maximum) for earlier, later in itertools.pairwise(delays))
    assert backoff.recover() == pauses
    assert not backoff.paused


def test_ceiling_below_initial_caps_the_first_pause_too() -> None:
    backoff = AcceptBackoff(initial=0.5, maximum=0.1)
    assert [backoff.pause() for _ in range(3)] == [0.1, 0.1, 0.1]


def test_counts_by_errno_name() -> None:
    backoff = AcceptBackoff()
    for exc in [
        OSError(errno.EMFILE, "x"),
        OSError(errno.EMFILE, "x"),
        OSError(errno.ENFILE, "x"),
        ConnectionAbortedError(errno.ECONNABORTED, "x"),
    ]:
        backoff.record(exc)
    assert backoff.counts == {"EMFILE": 2, "ENFILE": 1, "ECONNABORTED": 1}


def test_counts_without_a_known_name() -> None:
    backoff = AcceptBackoff()
    backoff.record(OSError("no errno"))
    backoff.record(OSError(UNKNOWN_ERRNO, "mystery"))
    assert backoff.counts == {"unknown": 2}


def test_recording_does_not_pause_and_recover_keeps_counts() -> None:
    backoff = AcceptBackoff()
    backoff.record(OSError(errno.EMFILE, "x"))
    assert not backoff.paused
    backoff.pause()
    backoff.recover()
    # The counts are a lifetime statistic, not the state of one pause.
    assert backoff.counts == {"EMFILE": 1}
