"""Opening listening sockets: backlog, dual-stack, reuse options, Unix socket files.

Every listener portico opens goes through here, so the rules live in one
place: the backlog defaults to the system maximum, a wildcard IPv6 address
serves IPv4 too, a Unix socket file left by a dead server is replaced (a live
one never is), and bind errors become :class:`~portico.errors.ListenerError`
with a hint, still ``OSError`` with the same ``errno``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from portico.errors import AddressInUseError, ListenerError
from portico.net.addresses import format_address

__all__ = [
    "TCPKeepalive",
    "UnixSocketFile",
    "bind_errors_explained",
    "is_wildcard_ipv6",
    "open_listener",
    "system_max_backlog",
    "tune_stream_listener",
]

_SOMAXCONN_PATH = "/proc/sys/net/core/somaxconn"


def system_max_backlog() -> int:
    """The largest listen backlog the kernel grants (Linux reads it from /proc).

    The stdlib's default of 5 drops connections under any burst; Python 3.15
    moves to the system maximum too.  The kernel clamps larger values anyway.
    """
    try:
        with open(_SOMAXCONN_PATH, encoding="ascii") as file:
            return max(int(file.read().strip()), 1)
    except (OSError, ValueError):
        return socket.SOMAXCONN


def is_wildcard_ipv6(family: int, address: Any) -> bool:
    return family == socket.AF_INET6 and isinstance(address, tuple) and address[0] in ("::", "")


@contextlib.contextmanager
def bind_errors_explained(address: Any) -> Iterator[None]:
    """Turn a bind ``OSError`` into a ListenerError that names the address and a remedy."""
    try:
        yield
    except ListenerError:
        raise
    except OSError as exc:
        where = format_address(address)
        reason = exc.strerror or str(exc)
        message = f"cannot listen on {where}: {reason.lower()}"
        if exc.errno == errno.EADDRINUSE:
            hint = "another process is listening there; stop it or pick another port"
            raise AddressInUseError(exc.errno, message, hint=hint) from exc
        if exc.errno == errno.EACCES:
            raise ListenerError(
                exc.errno, message, hint="ports below 1024 need root or CAP_NET_BIND_SERVICE"
            ) from exc
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ListenerError(
                exc.errno, message, hint="that address does not belong to this machine"
            ) from exc
        raise ListenerError(exc.errno, message) from exc


@dataclass
class UnixSocketFile:
    """The file behind a bound Unix socket, so that only its owner removes it."""

    path: str
    pid: int
    device: int
    inode: int

    @classmethod
    def after_bind(cls, path: str) -> UnixSocketFile:
        info = os.stat(path)
        return cls(path, os.getpid(), info.st_dev, info.st_ino)

    def remove_if_ours(self) -> None:
        """Unlink the file if this process bound it and nobody replaced it since."""
        if os.getpid() != self.pid:
            return
        with contextlib.suppress(OSError):
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == (self.device, self.inode):
                os.unlink(self.path)


def unix_path(address: Any) -> str | None:
    """The filesystem path of a Unix address, or None for abstract and unnamed ones."""
    if isinstance(address, bytes):
        address = os.fsdecode(address)
    if isinstance(address, str) and address and not address.startswith("\0"):
        return address
    return None


def remove_stale_unix_socket(path: str, socket_type: int) -> None:
    """Remove ``path`` if it is a socket nobody listens on; refuse if somebody does.

    A file that is not a socket is never deleted: that could be user data.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise AddressInUseError(
            errno.EADDRINUSE,
            f"cannot listen on {path}: something that is not a socket is in the way",
            hint="remove it or choose another path",
        )
    probe = socket.socket(socket.AF_UNIX, socket_type)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError:
        return  # cannot tell (a permission error, say): leave it and let bind() report
    finally:
        probe.close()
    raise AddressInUseError(
        errno.EADDRINUSE,
        f"cannot listen on {path}: a live server is listening there",
        hint="stop that server first, or choose another path",
    )


@dataclass(frozen=True)
class TCPKeepalive:
    """TCP keep-alive probes: after ``idle`` silent seconds, every ``interval`` seconds,
    ``count`` unanswered probes and the connection is dropped."""

    idle: int
    interval: int
    count: int


def prepare_bind(
    sock: socket.socket,
    address: Any,
    *,
    reuse_address: bool,
    reuse_port: bool,
    ipv6_only: bool | None = None,
) -> None:
    """Socket options that must be set before bind(), for any family.

    ``ipv6_only``: None lets a wildcard IPv6 address serve IPv4 clients too
    (dual stack, whatever the OS default); True or False sets it as told.
    """
    if reuse_address and hasattr(socket, "SO_REUSEADDR"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port and hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if sock.family == socket.AF_INET6 and ipv6_only is not None:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(ipv6_only))
    elif is_wildcard_ipv6(sock.family, address):
        # One socket serves IPv6 and IPv4 clients alike, whatever the OS default.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)


def bind_socket(
    sock: socket.socket,
    address: Any,
    *,
    unix_mode: int | None = None,
    unix_owner: str | int | None = None,
    unix_group: str | int | None = None,
) -> UnixSocketFile | None:
    """bind() with the rules above; returns the socket file to clean up, if any."""
    path = unix_path(address) if sock.family == getattr(socket, "AF_UNIX", None) else None
    with bind_errors_explained(address):
        if path is not None:
            remove_stale_unix_socket(path, sock.type)
        sock.bind(address)
        if path is None:
            return None
        owned = UnixSocketFile.after_bind(path)
        # Before listen(), so no client can connect under the default owner and mode.
        try:
            if unix_owner is not None or unix_group is not None:
                shutil.chown(path, unix_owner, unix_group)  # type: ignore[arg-type]
            if unix_mode is not None:
                os.chmod(path, unix_mode)
        except (OSError, LookupError) as exc:
            owned.remove_if_ours()
            code = exc.errno if isinstance(exc, OSError) else None
            raise ListenerError(code, f"cannot set the owner or mode of {path}: {exc}") from exc
        return owned


def tune_stream_listener(
    sock: socket.socket, *, nodelay: bool = False, keepalive: TCPKeepalive | None = None
) -> None:
    """TCP options set on the listener, which Linux passes to every connection it accepts.

    Set once here instead of once per connection: no system call per accept.
    """
    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if keepalive is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (
            ("TCP_KEEPIDLE", keepalive.idle),
            ("TCP_KEEPINTVL", keepalive.interval),
            ("TCP_KEEPCNT", keepalive.count),
        ):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def open_listener(
    address: Any,
    *,
    family: int,
    socket_type: int = socket.SOCK_STREAM,
    backlog: int | None = None,
    reuse_address: bool = True,
    reuse_port: bool = False,
    unix_mode: int | None = None,
    ipv6_only: bool | None = None,
    unix_owner: str | int | None = None,
    unix_group: str | int | None = None,
    nodelay: bool = False,
    keepalive: TCPKeepalive | None = None,
) -> tuple[socket.socket, UnixSocketFile | None]:
    """Open, bind and (for streams) listen; close the socket again if any step fails."""
    with bind_errors_explained(address):
        sock = socket.socket(family, socket_type)
    try:
        prepare_bind(
            sock, address, reuse_address=reuse_address, reuse_port=reuse_port, ipv6_only=ipv6_only
        )
        owned = bind_socket(
            sock, address, unix_mode=unix_mode, unix_owner=unix_owner, unix_group=unix_group
        )
        if socket_type == socket.SOCK_STREAM:
            sock.listen(system_max_backlog() if backlog is None else backlog)
            tune_stream_listener(sock, nodelay=nodelay, keepalive=keepalive)
    except BaseException:
        sock.close()
        raise
    return sock, owned
