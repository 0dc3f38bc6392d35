"""Listening sockets handed down by systemd (socket activation) or a parent process.

systemd's protocol (``sd_listen_fds(3)``): the sockets are descriptors 3,
4, ... in order; ``LISTEN_FDS`` says how many, ``LISTEN_PID`` which process
they are for (a child of ours must not take them too), and ``LISTEN_FDNAMES``
optionally names them, colon-separated.  The family, type and protocol of
each descriptor are read from the socket itself, so one unit may pass TCP,
UDP and Unix sockets alike.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import MutableMapping

from portico.errors import ConfigurationError

__all__ = ["LISTEN_FDS_START", "inherit_socket", "listen_fds"]

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START
_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def listen_fds(
    environ: MutableMapping[str, str] | None = None, *, unset: bool = True
) -> list[tuple[str, socket.socket]]:
    """The sockets systemd passed to this process, each with its name.

    Empty when there are none, or when ``LISTEN_PID`` names another
    process.  With ``unset`` the variables are removed from ``environ``
    (``os.environ`` by default), so that processes started later do not
    believe the sockets are theirs.  A name systemd did not give is
    ``"unknown"``, as in ``sd_listen_fds_with_names()``.
    """
    environ = os.environ if environ is None else environ
    pid, count, names = (environ.get(name) for name in _VARIABLES)
    if unset:
        for name in _VARIABLES:
            environ.pop(name, None)
    if count is None or (pid is not None and pid.strip() != str(os.getpid())):
        return []
    try:
        number = int(count)
    except ValueError:
        number = -1
    if number < 0:
        raise ConfigurationError(f"LISTEN_FDS={count!r} is not a number of descriptors")
    labels = names.split(":") if names else []
    if len(labels) != number:
        labels = ["unknown"] * number
    return [(label, inherit_socket(LISTEN_FDS_START + index)) for index, label in enumerate(labels)]


def inherit_socket(fd: int) -> socket.socket:
    """The bound socket at descriptor ``fd``, as a socket object that owns it.

    Raises ConfigurationError when ``fd`` is not open, not a socket, or a
    stream socket that is not listening.
    """
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        if exc.errno == errno.EBADF:
            raise ConfigurationError(f"descriptor {fd} is not open") from exc
        raise
    if not stat.S_ISSOCK(mode):
        raise ConfigurationError(f"descriptor {fd} is not a socket")
    sock = socket.socket(fileno=fd)  # family, type and protocol come from the socket
    sock.set_inheritable(False)
    sock.setblocking(True)
    if sock.type == socket.SOCK_STREAM and not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        sock.detach()  # not ours to close: the caller may still use the descriptor
        raise ConfigurationError(f"descriptor {fd} is a stream socket that is not listening")
    return sock
