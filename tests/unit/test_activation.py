"""systemd's environment (no sockets at descriptor 3 needed), and sd_notify."""

from __future__ import annotations

import os
import socket

import pytest

from portico.errors import ConfigurationError
from portico.net.activation import listen_fds
from portico.net.notify import Watchdog, notify, watchdog_interval

pytestmark = pytest.mark.timeout(10)


def test_sockets_for_another_process_are_not_taken_and_the_variables_go() -> None:
    environ = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    assert listen_fds(environ) == []
    assert environ == {}  # a child started later must not believe they are its own


def test_no_sockets_when_systemd_passed_none() -> None:
    assert listen_fds({}) == []
    assert listen_fds({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0"}) == []


def test_the_variables_may_be_kept() -> None:
    environ = {"LISTEN_PID": "1", "LISTEN_FDS": "1"}
    listen_fds(environ, unset=False)
    assert environ == {"LISTEN_PID": "1", "LISTEN_FDS": "1"}


@pytest.mark.parametrize("count", ["two", "-1", ""])
def test_a_bad_count_is_a_clear_error(count: str) -> None:
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": count}
    with pytest.raises(ConfigurationError, match="is not a number of descriptors"):
        listen_fds(environ)


def test_notify_outside_systemd_sends_nothing() -> None:
    assert notify("READY=1", {}) is False


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"portico-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name)
        systemd.settimeout(5)
        assert notify("READY=1", {"NOTIFY_SOCKET": "@" + name}) is True
        assert systemd.recv(64) == b"READY=1"


def test_notify_to_a_missing_socket_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    assert notify("READY=1", {"NOTIFY_SOCKET": "/nonexistent/notify"}) is False
    assert "could not notify systemd of READY=1" in caplog.text


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "2000000"}, 2.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}, 2.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
    ],
)
def test_the_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(environ) == expected


def test_the_watchdog_pings_at_most_every_half_interval() -> None:
    name = f"portico-watchdog-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name)
        systemd.setblocking(False)
        watchdog = Watchdog(3600.0, {"NOTIFY_SOCKET": "@" + name})
        watchdog.tick()
        watchdog.tick()  # far within half an hour of the first: no second ping
        assert systemd.recv(64) == b"WATCHDOG=1"
        with pytest.raises(BlockingIOError):
            systemd.recv(64)
