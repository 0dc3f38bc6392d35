"""Unix-domain servers: stale socket files replaced, live ones refused, user files kept.

Also: unix_socket_mode, removal by server_close() of the file this process
bound (and of nothing else), datagram servers, bytes paths, and the Linux
abstract namespace.  Every path lives in the test's temporary directory.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import portico
from portico.errors import AddressInUseError, ListenerError
from portico.testing import serving

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")

TIMEOUT = 10.0
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="abstract sockets are Linux-only")


class Upper(portico.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())


class DatagramUpper(portico.DatagramRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.read().upper())


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "server.sock")


def ask(address: Any, line: bytes = b"hello\n") -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(TIMEOUT)
        client.connect(address)
        client.sendall(line)
        client.shutdown(socket.SHUT_WR)
        return client.makefile("rb").read()


def ask_datagram(address: Any, payload: bytes = b"ping") -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        client.settimeout(TIMEOUT)
        # A datagram client needs a name of its own for the reply to reach it.
        client.bind(f"\0portico-test-client-{uuid.uuid4().hex}")
        client.sendto(payload, address)
        return client.recv(1024)


def make_stale_socket_file(path: str, kind: int = socket.SOCK_STREAM) -> None:
    """Bind a socket to ``path`` and close it without unlinking: a dead socket file."""
    with socket.socket(socket.AF_UNIX, kind) as dead:
        dead.bind(path)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def inode(path: str) -> tuple[int, int]:
    info = os.lstat(path)
    return info.st_dev, info.st_ino


# -- stale files are replaced --------------------------------------------------


def test_stale_socket_file_is_replaced(path: str) -> None:
    make_stale_socket_file(path)
    with serving(portico.UnixStreamServer, Upper, path) as running:
        assert running.address == path
        assert ask(path) == b"HELLO\n"


def test_stale_socket_file_is_replaced_by_a_threading_server(path: str) -> None:
    make_stale_socket_file(path)
    with serving(portico.ThreadingUnixStreamServer, Upper, path):
        assert ask(path) == b"HELLO\n"


def test_stale_datagram_socket_file_is_replaced(path: str) -> None:
    make_stale_socket_file(path, socket.SOCK_DGRAM)
    with serving(portico.UnixDatagramServer, DatagramUpper, path):
        assert ask_datagram(path) == b"PING"


# -- live sockets are refused ---------------------------------------------------


def test_live_socket_is_refused_and_keeps_serving(path: str) -> None:
    with serving(portico.UnixStreamServer, Upper, path):
        before = inode(path)
        with pytest.raises(AddressInUseError) as info:
            portico.UnixStreamServer(path, Upper)
        assert info.value.errno == errno.EADDRINUSE
        assert isinstance(info.value, OSError)
        assert path in str(info.value)
        assert inode(path) == before
        assert ask(path) == b"HELLO\n"
    assert not os.path.exists(path)


def test_refused_server_does_not_remove_the_live_file(path: str) -> None:
    # The failed constructor runs server_close(); that must not unlink the
    # file, which belongs to the live server.
    with serving(portico.UnixStreamServer, Upper, path):
        for _ in range(3):
            with pytest.raises(AddressInUseError):
                portico.UnixStreamServer(path, Upper)
        assert os.path.exists(path)
        assert ask(path) == b"HELLO\n"


def test_live_datagram_socket_is_refused(path: str) -> None:
    with serving(portico.UnixDatagramServer, DatagramUpper, path):
        with pytest.raises(AddressInUseError):
            portico.UnixDatagramServer(path, DatagramUpper)
        assert ask_datagram(path) == b"PING"


def test_live_socket_of_the_other_type_is_refused(path: str) -> None:
    # The probe cannot tell (the types differ); bind() then reports the path as taken.
    with serving(portico.UnixDatagramServer, DatagramUpper, path):
        with pytest.raises(AddressInUseError):
            portico.UnixStreamServer(path, Upper)
        assert ask_datagram(path) == b"PING"


# -- user files are never deleted ------------------------------------------------


def test_regular_file_is_not_deleted(path: str) -> None:
    Path(path).write_text("precious user data")
    with pytest.raises(ListenerError) as info:
        portico.UnixStreamServer(path, Upper)
    assert info.value.errno == errno.EADDRINUSE
    assert path in str(info.value)
    assert Path(path).read_text() == "precious user data"


def test_directory_is_not_deleted(path: str) -> None:
    os.mkdir(path)
    with pytest.raises(OSError):
        portico.UnixStreamServer(path, Upper)
    assert os.path.isdir(path)


def test_symlink_to_a_stale_socket_is_not_followed(tmp_path: Path, path: str) -> None:
    target = str(tmp_path / "target.sock")
    make_stale_socket_file(target)
    os.symlink(target, path)
    with pytest.raises(OSError):
        portico.UnixStreamServer(path, Upper)
    assert os.path.islink(path)
    assert os.path.exists(target)


# -- unix_socket_mode --------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o660, 0o666])
def test_unix_socket_mode(path: str, mode: int) -> None:
    class Server(portico.UnixStreamServer):
        unix_socket_mode = mode

    with serving(Server, Upper, path):
        assert stat.S_IMODE(os.stat(path).st_mode) == mode
        assert ask(path) == b"HELLO\n"


def test_unix_socket_mode_on_a_datagram_server(path: str) -> None:
    class Server(portico.UnixDatagramServer):
        unix_socket_mode = 0o600

    with Server(path, DatagramUpper):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_unix_socket_mode_on_an_extra_listener(tmp_path: Path, path: str) -> None:
    class Server(portico.UnixStreamServer):
        unix_socket_mode = 0o600

    extra = str(tmp_path / "extra.sock")
    with Server(path, Upper) as server:
        server.add_listener(extra)
        assert stat.S_IMODE(os.stat(extra).st_mode) == 0o600


def test_default_mode_is_left_to_the_umask(path: str) -> None:
    old = os.umask(0o077)
    try:
        server = portico.UnixStreamServer(path, Upper)
    finally:
        os.umask(old)
    with server:
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0


# -- server_close removes what this process bound, and only that ----------------


def test_server_close_removes_the_file(path: str) -> None:
    server = portico.UnixStreamServer(path, Upper)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    server.server_close()
    assert not os.path.exists(path)
    server.server_close()  # twice is fine


def test_datagram_server_close_removes_the_file(path: str) -> None:
    server = portico.UnixDatagramServer(path, DatagramUpper)
    server.server_close()
    assert not os.path.exists(path)


def test_bytes_path_is_served_and_removed(path: str) -> None:
    with serving(portico.UnixStreamServer, Upper, os.fsencode(path)) as running:
        assert ask(path) == b"HELLO\n"
        assert os.fsencode(path) in (running.address, os.fsencode(running.address))
    assert not os.path.exists(path)


def test_file_replaced_after_bind_is_not_removed(path: str) -> None:
    server = portico.UnixStreamServer(path, Upper)
    # Someone unlinks ours and binds a new socket at the path, as many servers
    # do at start-up.  (Our open socket keeps its inode allocated meanwhile.)
    os.unlink(path)
    with socket.socket(socket.AF_UNIX) as newcomer:
        newcomer.bind(path)
        newcomer.listen()
        theirs = inode(path)
        server.server_close()
        assert os.path.exists(path)
        assert inode(path) == theirs
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(TIMEOUT)
            client.connect(path)  # still their live socket


def test_file_removed_by_someone_else_is_fine(path: str) -> None:
    server = portico.UnixStreamServer(path, Upper)
    os.unlink(path)
    server.server_close()
    assert not os.path.exists(path)


def test_another_process_does_not_remove_the_file(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a forked child (a ForkingMixIn request, a prefork worker) sees: the
    # server object, but another pid.  Simulated rather than forked, since
    # fork() in a multi-threaded test process may deadlock the child.
    server = portico.UnixStreamServer(path, Upper)
    parent = os.getpid()
    with monkeypatch.context() as patch:
        patch.setattr(os, "getpid", lambda: parent + 1)
        server.server_close()
    assert os.path.exists(path)
    # The process that bound it still removes it.
    server.server_close()
    assert not os.path.exists(path)


def test_extra_unix_listeners_serve_and_are_removed(tmp_path: Path, path: str) -> None:
    extra = str(tmp_path / "extra.sock")
    make_stale_socket_file(extra)
    server = portico.UnixStreamServer(path, Upper)
    server.add_listener(extra)
    assert server.server_addresses == [path, extra]
    with serving(server):
        assert ask(path) == b"HELLO\n"
        assert ask(extra) == b"HELLO\n"
    assert not os.path.exists(path)
    assert not os.path.exists(extra)


# -- the abstract namespace ------------------------------------------------------


@linux_only
def test_abstract_address_serves(tmp_path: Path) -> None:
    name = f"\0portico-test-{uuid.uuid4().hex}"
    before = sorted(os.listdir(tmp_path))
    with serving(portico.UnixStreamServer, Upper, name) as running:
        assert running.address == name.encode()
        assert ask(name) == b"HELLO\n"
        # Another server on the same name is refused by bind() itself.
        with pytest.raises(AddressInUseError) as info:
            portico.UnixStreamServer(name, Upper)
        assert "@portico-test-" in str(info.value)
        assert ask(name) == b"HELLO\n"
    assert sorted(os.listdir(tmp_path)) == before
    # The name is free again once the server is closed.
    portico.UnixStreamServer(name, Upper).server_close()


@linux_only
def test_abstract_datagram_address_serves() -> None:
    name = f"\0portico-test-{uuid.uuid4().hex}"
    with serving(portico.UnixDatagramServer, DatagramUpper, name):
        assert ask_datagram(name) == b"PING"
