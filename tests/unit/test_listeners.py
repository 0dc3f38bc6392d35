"""Opening listeners: the system backlog, bind options, bind errors, socket files.

These tests open real sockets, but only on loopback or in a temporary
directory, and need no serving thread.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import portico
from portico.errors import AddressInUseError, ListenerError, PorticoError
from portico.net import listeners
from portico.net.listeners import (
    UnixSocketFile,
    bind_errors_explained,
    is_wildcard_ipv6,
    open_listener,
    remove_stale_unix_socket,
    system_max_backlog,
    unix_path,
)
from portico.testing import has_ipv6_loopback

SOMAXCONN_FILE = Path("/proc/sys/net/core/somaxconn")
# TEST-NET-2 (RFC 5737): never an address of this machine, so bind() fails locally.
FOREIGN_IPV4 = "198.51.100.7"

linux_only = pytest.mark.skipif(not SOMAXCONN_FILE.exists(), reason="needs Linux /proc")
needs_fd_dir = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd to count descriptors"
)
needs_unix = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1)")


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def sockopt(sock: socket.socket, level: int, option: int) -> int:
    return sock.getsockopt(level, option)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that a live listener holds for the test."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    return str(tmp_path / "s.sock")


# -- system_max_backlog -------------------------------------------------------


@linux_only
def test_system_max_backlog_is_somaxconn() -> None:
    assert system_max_backlog() == int(SOMAXCONN_FILE.read_text().strip())


def test_system_max_backlog_is_the_default_queue_size() -> None:
    assert portico.TCPServer.request_queue_size == system_max_backlog()
    assert system_max_backlog() >= 1


def test_system_max_backlog_without_proc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(listeners, "_SOMAXCONN_PATH", str(tmp_path / "missing"))
    assert system_max_backlog() == socket.SOMAXCONN


@pytest.mark.parametrize(("content", "expected"), [("garbage\n", None), ("0\n", 1), ("-3", 1)])
def test_system_max_backlog_with_odd_content(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str, expected: int | None
) -> None:
    fake = tmp_path / "somaxconn"
    fake.write_text(content)
    monkeypatch.setattr(listeners, "_SOMAXCONN_PATH", str(fake))
    assert system_max_backlog() == (socket.SOMAXCONN if expected is None else expected)


def test_system_max_backlog_reads_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "somaxconn"
    fake.write_text("65535\n")
    monkeypatch.setattr(listeners, "_SOMAXCONN_PATH", str(fake))
    assert system_max_backlog() == 65535


# -- is_wildcard_ipv6 and unix_path ------------------------------------------


@pytest.mark.parametrize(
    ("family", "address", "expected"),
    [
        (socket.AF_INET6, ("::", 0), True),
        (socket.AF_INET6, ("", 0), True),
        (socket.AF_INET6, ("::", 0, 0, 0), True),
        (socket.AF_INET6, ("::1", 0), False),
        (socket.AF_INET, ("0.0.0.0", 0), False),
        (socket.AF_INET, ("", 0), False),
        (socket.AF_INET6, "::", False),
    ],
)
def test_is_wildcard_ipv6(family: int, address: Any, expected: bool) -> None:
    assert is_wildcard_ipv6(family, address) is expected


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("/run/app.sock", "/run/app.sock"),
        ("relative.sock", "relative.sock"),
        (b"/run/app.sock", "/run/app.sock"),
        ("\0abstract", None),
        (b"\0abstract", None),
        ("", None),
        (b"", None),
        (("127.0.0.1", 0), None),
    ],
)
def test_unix_path(address: Any, expected: str | None) -> None:
    assert unix_path(address) == expected


# -- open_listener: what it opens ----------------------------------------------


def test_open_listener_tcp_listens_with_reuse_address() -> None:
    sock, owned = open_listener(("127.0.0.1", 0), family=socket.AF_INET)
    with sock:
        assert owned is None
        assert sock.getsockname()[0] == "127.0.0.1"
        assert sock.type == socket.SOCK_STREAM
        assert sockopt(sock, socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        assert sockopt(sock, socket.SOL_SOCKET, socket.SO_REUSEADDR)
        with socket.create_connection(sock.getsockname(), timeout=5):
            conn, _ = sock.accept()
            conn.close()


def test_open_listener_options_off() -> None:
    sock, _ = open_listener(("127.0.0.1", 0), family=socket.AF_INET, reuse_address=False)
    with sock:
        assert not sockopt(sock, socket.SOL_SOCKET, socket.SO_REUSEADDR)


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_open_listener_reuse_port_shares_a_port() -> None:
    first, _ = open_listener(("127.0.0.1", 0), family=socket.AF_INET, reuse_port=True)
    with first:
        assert sockopt(first, socket.SOL_SOCKET, socket.SO_REUSEPORT)
        second, _ = open_listener(first.getsockname(), family=socket.AF_INET, reuse_port=True)
        with second:
            assert second.getsockname() == first.getsockname()


def test_open_listener_udp_does_not_listen() -> None:
    sock, owned = open_listener(
        ("127.0.0.1", 0), family=socket.AF_INET, socket_type=socket.SOCK_DGRAM
    )
    with sock:
        assert owned is None
        assert sock.type == socket.SOCK_DGRAM
        assert not sockopt(sock, socket.SOL_SOCKET, socket.SO_ACCEPTCONN)


@needs_ipv6
def test_open_listener_wildcard_ipv6_is_dual_stack() -> None:
    sock, _ = open_listener(("::", 0), family=socket.AF_INET6)
    with sock:
        assert sockopt(sock, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        port = sock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            conn, peer = sock.accept()
            conn.close()
        assert peer[0] == "::ffff:127.0.0.1"


@needs_unix
def test_open_listener_unix_returns_the_socket_file(sock_path: str) -> None:
    sock, owned = open_listener(sock_path, family=socket.AF_UNIX, unix_mode=0o600)
    with sock:
        assert owned is not None
        info = os.stat(sock_path)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600
        assert (owned.path, owned.pid) == (sock_path, os.getpid())
        assert (owned.device, owned.inode) == (info.st_dev, info.st_ino)
        assert sockopt(sock, socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    owned.remove_if_ours()
    assert not os.path.exists(sock_path)


@needs_unix
def test_open_listener_abstract_unix_owns_no_file() -> None:
    name = f"\0portico-test-listeners-{os.getpid()}"
    sock, owned = open_listener(name, family=socket.AF_UNIX)
    with sock:
        assert owned is None
        assert sock.getsockname() == name.encode()


# -- bind errors ------------------------------------------------------------


def test_port_in_use_is_address_in_use_error(busy_port: int) -> None:
    with pytest.raises(AddressInUseError) as info:
        open_listener(("127.0.0.1", busy_port), family=socket.AF_INET)
    exc = info.value
    assert isinstance(exc, ListenerError)
    assert isinstance(exc, OSError)
    assert isinstance(exc, PorticoError)
    assert exc.errno == errno.EADDRINUSE
    assert f"127.0.0.1:{busy_port}" in str(exc)
    assert exc.hint
    assert exc.hint in str(exc)
    assert isinstance(exc.__cause__, OSError)
    assert exc.__cause__.errno == errno.EADDRINUSE


def test_port_in_use_is_caught_by_except_oserror(busy_port: int) -> None:
    try:
        open_listener(("127.0.0.1", busy_port), family=socket.AF_INET)
    except OSError as exc:
        caught: OSError = exc
    else:  # pragma: no cover - the assertion below reports it
        pytest.fail("bind on a busy port did not raise")
    assert caught.errno == errno.EADDRINUSE
    assert caught.strerror is not None
    assert str(busy_port) in caught.strerror


def test_server_on_port_in_use_raises_address_in_use(busy_port: int) -> None:
    with pytest.raises(OSError) as info:
        portico.TCPServer(("127.0.0.1", busy_port), portico.BaseRequestHandler)
    assert isinstance(info.value, AddressInUseError)
    assert info.value.errno == errno.EADDRINUSE
    assert f"127.0.0.1:{busy_port}" in str(info.value)


@needs_ipv6
def test_ipv6_address_in_use_is_named_in_brackets() -> None:
    with socket.socket(socket.AF_INET6) as holder:
        holder.bind(("::1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(AddressInUseError, match=rf"\[::1\]:{port}"):
            open_listener(("::1", port), family=socket.AF_INET6)


def test_foreign_address_is_listener_error_with_hint() -> None:
    with pytest.raises(ListenerError) as info:
        open_listener((FOREIGN_IPV4, 0), family=socket.AF_INET)
    exc = info.value
    assert not isinstance(exc, AddressInUseError)
    assert exc.errno == errno.EADDRNOTAVAIL
    assert FOREIGN_IPV4 in str(exc)
    assert "does not belong to this machine" in str(exc)


def explain(address: Any, error: BaseException) -> BaseException:
    """What bind_errors_explained turns ``error`` into."""
    with pytest.raises(BaseException) as info, bind_errors_explained(address):
        raise error
    return info.value


def test_permission_denied_hint() -> None:
    exc = explain(("0.0.0.0", 80), PermissionError(errno.EACCES, "Permission denied"))
    assert type(exc) is ListenerError
    assert exc.errno == errno.EACCES
    assert str(exc).startswith("cannot listen on 0.0.0.0:80: permission denied")
    assert "CAP_NET_BIND_SERVICE" in str(exc)


def test_other_bind_errors_keep_errno_without_hint() -> None:
    exc = explain("/no/such/dir/s.sock", FileNotFoundError(errno.ENOENT, "No such file"))
    assert type(exc) is ListenerError
    assert exc.errno == errno.ENOENT
    assert exc.hint == ""
    assert str(exc) == "cannot listen on /no/such/dir/s.sock: no such file"


def test_bind_error_without_errno() -> None:
    exc = explain(("bad host", 1), OSError("something odd"))
    assert type(exc) is ListenerError
    assert exc.errno is None
    assert "bad host:1" in str(exc)
    assert "something odd" in str(exc)


def test_listener_errors_and_other_exceptions_pass_through() -> None:
    already = AddressInUseError(errno.EADDRINUSE, "already explained")
    assert explain(("h", 1), already) is already
    odd = TypeError("not an OSError")
    assert explain(("h", 1), odd) is odd


# -- open_listener closes what it opened --------------------------------------

FAILING_BINDS: list[tuple[str, Callable[[int], Any], type[BaseException]]] = [
    ("address in use", lambda port: ("127.0.0.1", port), AddressInUseError),
    ("foreign address", lambda port: (FOREIGN_IPV4, 0), ListenerError),
    ("malformed address", lambda port: 12345, TypeError),
]


@needs_fd_dir
@pytest.mark.parametrize(
    ("make_address", "error"),
    [(make, error) for _, make, error in FAILING_BINDS],
    ids=[case for case, _, _ in FAILING_BINDS],
)
def test_open_listener_closes_its_socket_when_bind_fails(
    busy_port: int, make_address: Callable[[int], Any], error: type[BaseException]
) -> None:
    address = make_address(busy_port)
    before = open_descriptors()
    for _ in range(20):
        with pytest.raises(error):
            open_listener(address, family=socket.AF_INET)
    assert open_descriptors() == before


@needs_fd_dir
def test_server_constructor_closes_its_socket_when_bind_fails(busy_port: int) -> None:
    before = open_descriptors()
    for _ in range(20):
        with pytest.raises(AddressInUseError):
            portico.TCPServer(("127.0.0.1", busy_port), portico.BaseRequestHandler)
    assert open_descriptors() == before


@needs_fd_dir
@needs_unix
def test_open_listener_closes_its_socket_when_a_live_unix_server_holds_the_path(
    sock_path: str,
) -> None:
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(sock_path)
        live.listen()
        before = open_descriptors()
        for _ in range(20):
            with pytest.raises(AddressInUseError):
                open_listener(sock_path, family=socket.AF_UNIX)
        assert open_descriptors() == before


# -- Unix socket files: stale, live, foreign ------------------------------------


def make_stale_socket_file(path: str, kind: int = socket.SOCK_STREAM) -> None:
    """Bind a socket to ``path`` and close it without unlinking: a dead socket file."""
    with socket.socket(socket.AF_UNIX, kind) as dead:
        dead.bind(path)


@needs_unix
def test_missing_path_is_fine(sock_path: str) -> None:
    remove_stale_unix_socket(sock_path, socket.SOCK_STREAM)
    assert not os.path.exists(sock_path)


@needs_unix
@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM], ids=["stream", "dgram"])
def test_stale_socket_file_is_removed(sock_path: str, kind: int) -> None:
    make_stale_socket_file(sock_path, kind)
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    remove_stale_unix_socket(sock_path, kind)
    assert not os.path.exists(sock_path)


@needs_unix
def test_live_stream_socket_is_refused_and_kept(sock_path: str) -> None:
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(sock_path)
        live.listen()
        with pytest.raises(AddressInUseError) as info:
            remove_stale_unix_socket(sock_path, socket.SOCK_STREAM)
        assert info.value.errno == errno.EADDRINUSE
        assert sock_path in str(info.value)
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)


@needs_unix
def test_live_datagram_socket_is_refused_and_kept(sock_path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as live:
        live.bind(sock_path)
        with pytest.raises(AddressInUseError):
            remove_stale_unix_socket(sock_path, socket.SOCK_DGRAM)
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)


@needs_unix
def test_live_socket_of_the_other_type_is_kept(sock_path: str) -> None:
    # The probe cannot tell (EPROTOTYPE): the file stays and bind() will report.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as live:
        live.bind(sock_path)
        remove_stale_unix_socket(sock_path, socket.SOCK_STREAM)
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)


@needs_unix
@pytest.mark.parametrize("kind", ["file", "directory", "symlink"])
def test_non_socket_paths_are_left_alone(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "thing"
    if kind == "file":
        path.write_text("user data")
    elif kind == "directory":
        path.mkdir()
    else:
        target = tmp_path / "target.sock"
        make_stale_socket_file(str(target))
        path.symlink_to(target)
    with pytest.raises(AddressInUseError, match="not a socket is in the way"):
        remove_stale_unix_socket(str(path), socket.SOCK_STREAM)
    assert os.path.lexists(path)
    if kind == "file":
        assert path.read_text() == "user data"


# -- UnixSocketFile: only the owner removes, and only its own file --------------


@needs_unix
def test_socket_file_is_removed_by_its_owner(sock_path: str) -> None:
    make_stale_socket_file(sock_path)
    owned = UnixSocketFile.after_bind(sock_path)
    owned.remove_if_ours()
    assert not os.path.exists(sock_path)
    owned.remove_if_ours()  # already gone: no error


@needs_unix
def test_socket_file_of_another_process_is_kept(sock_path: str) -> None:
    make_stale_socket_file(sock_path)
    owned = UnixSocketFile.after_bind(sock_path)
    owned.pid = os.getpid() + 1  # as a forked child sees its parent's record
    owned.remove_if_ours()
    assert os.path.exists(sock_path)


@needs_unix
def test_socket_file_replaced_since_bind_is_kept(sock_path: str) -> None:
    make_stale_socket_file(sock_path)
    owned = UnixSocketFile.after_bind(sock_path)
    # Moved aside rather than unlinked, so the new file cannot reuse its inode number.
    os.rename(sock_path, sock_path + ".old")
    with socket.socket(socket.AF_UNIX) as newcomer:
        newcomer.bind(sock_path)
        owned.remove_if_ours()
        assert os.path.exists(sock_path)
