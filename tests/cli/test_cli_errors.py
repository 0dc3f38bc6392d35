"""Bad arguments and unusable addresses: one line on stderr, a non-zero exit, no traceback."""

from __future__ import annotations

import contextlib
import socket
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(10)

USAGE, FAILURE = 2, 1


def assert_one_line_error(result, code: int, fragment: str) -> None:
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("portico: "), result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--bind", "nonsense"], "--bind: 'nonsense': port 'nonsense' is not a number"),
        (["--bind", "::1:80"], "write IPv6 addresses in brackets"),
        (["--bind", "[nothost]:80"], "is not an IPv6 address"),
        (["--bind", "127.0.0.1:70000"], "port 70000 is outside 0-65535"),
        (["--bind"], "expected one argument"),
        (["--bind", "127.0.0.1:9", "--bind", "127.0.0.1:9"], "--bind 127.0.0.1:9 is given twice"),
        (["nosuch"], "unknown handler 'nosuch': use one of upper, echo, discard, or module:Class"),
        (["no_such_module_for_portico:Handler"], "cannot import 'no_such_module_for_portico'"),
        (["socketserver:NoSuchHandler"], "module 'socketserver' has no attribute 'NoSuchHandler'"),
        (["os:sep"], "handler 'os:sep' is not a request handler class"),
        (["http.server:SimpleHTTPRequestHandler", "--udp"], "serves streams, not datagrams"),
        (["socketserver:DatagramRequestHandler"], "serves datagrams: add --udp"),
        (["--log-level", "LOUD"], "--log-level: 'LOUD' is not one of DEBUG, INFO"),
        (["--unix", "x.sock", "--unix-mode", "9z"], "--unix-mode: '9z' is not an octal mode"),
        (["--unix-mode", "600"], "--unix-mode needs --unix"),
        (["--unix", "x.sock", "--bind", "127.0.0.1:0"], "--unix and --bind cannot be combined"),
        (["--no-such-option"], "unrecognized arguments: --no-such-option"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_usage_errors_exit_2(portico_run, args, fragment):
    assert_one_line_error(portico_run("serve", *args), USAGE, fragment)


def test_missing_command_exits_2(portico_run):
    assert_one_line_error(portico_run(), USAGE, "required: COMMAND")


def test_bad_environment_variable_is_named(portico_run):
    result = portico_run("serve", env={"PORTICO_BIND": "127.0.0.1:0,nonsense"})
    assert_one_line_error(result, USAGE, "PORTICO_BIND: 'nonsense'")


def test_handler_module_that_fails_to_import(portico_run, tmp_path):
    (tmp_path / "broken_handlers.py").write_text("raise RuntimeError('database unreachable')\n")
    result = portico_run("serve", "broken_handlers:Handler", pythonpath=tmp_path)
    assert_one_line_error(
        result, USAGE, "cannot import 'broken_handlers': RuntimeError: database unreachable"
    )


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM], ids=["tcp", "udp"])
def test_address_in_use_exits_1(portico_run, kind):
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            taken.listen()
        port = taken.getsockname()[1]
        args = ["--bind", f"127.0.0.1:{port}"] + (["--udp"] if kind == socket.SOCK_DGRAM else [])
        result = portico_run("serve", *args)
    assert_one_line_error(
        result,
        FAILURE,
        f"cannot listen on 127.0.0.1:{port}: address already in use (another process is listening",
    )


def test_a_later_bind_in_use_exits_1(portico_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = portico_run("serve", "--bind", "127.0.0.1:0", "--bind", f"127.0.0.1:{port}")
    assert_one_line_error(
        result, FAILURE, f"cannot listen on 127.0.0.1:{port}: address already in use"
    )


def test_live_unix_socket_is_not_taken_over(portico_run, short_tmp):
    path = short_tmp / "live.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        result = portico_run("serve", "--unix", str(path))
    assert_one_line_error(
        result, FAILURE, f"cannot listen on {path}: a live server is listening there"
    )


def test_unix_socket_in_missing_directory_exits_1(portico_run, tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "portico.sock"
    result = portico_run("serve", "--unix", str(path))
    assert_one_line_error(result, FAILURE, f"cannot listen on {path}: no such file or directory")


def test_privileged_port_exits_1(portico_run):
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 1))
    except PermissionError:
        pass
    else:
        pytest.skip("this user may bind port 1 (root, or ip_unprivileged_port_start allows it)")
    result = portico_run("serve", "--bind", "127.0.0.1:1")
    assert_one_line_error(result, FAILURE, "cannot listen on 127.0.0.1:1: permission denied")


def unwritable_unix_path(tmp_path: Path) -> Path | None:
    """A socket path this process may not bind: in a read-only directory, else in sysfs."""
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    candidates = [read_only / "portico.sock"]
    if sys.platform.startswith("linux"):
        candidates.append(Path("/sys/portico-test.sock"))  # root cannot create files in sysfs
    for path in candidates:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.bind(str(path))
            except PermissionError:
                return path
            except OSError:
                continue
            with contextlib.suppress(OSError):
                path.unlink()  # root: directory permissions do not apply
    return None


def test_unix_socket_permission_denied_exits_1(portico_run, tmp_path):
    path = unwritable_unix_path(tmp_path)
    if path is None:
        pytest.skip("no directory here refuses this user a socket file")
    result = portico_run("serve", "--unix", str(path))
    assert_one_line_error(result, FAILURE, f"cannot listen on {path}: ")
    assert "permitted" in result.stderr or "permission denied" in result.stderr
