"""Zero-downtime restart: a new master takes the listening sockets over from the running one.

On SIGUSR2 the running master forks a child that ``exec``s the same command
line (new code, same settings), passing the listening sockets the way
systemd does (descriptors 3, 4, ... with ``LISTEN_FDS``, ``LISTEN_PID``,
``LISTEN_FDNAMES``) plus ``PORTICO_UPGRADE_FROM`` naming the old master.
The sockets are the same kernel sockets, so they never stop listening.  Once
the new master's workers serve, it sends SIGTERM to the old master, which
drains its workers and leaves.  If the new master fails, the old one goes
on serving.

The pid file, when asked for, always names the master that serves.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
from collections.abc import MutableMapping, Sequence
from pathlib import Path

__all__ = [
    "UPGRADE_VARIABLE",
    "default_command",
    "remove_pid_file",
    "start_successor",
    "take_upgrade_from",
    "write_pid_file",
]

UPGRADE_VARIABLE = "PORTICO_UPGRADE_FROM"
_FIRST_FD = 3  # SD_LISTEN_FDS_START


def default_command() -> list[str]:
    """This program's command line, interpreter options included."""
    return [sys.executable, *sys.orig_argv[1:]]


def start_successor(
    command: Sequence[str], listeners: Sequence[socket.socket], names: Sequence[str]
) -> int:
    """Fork and exec ``command`` with ``listeners`` as its systemd-style sockets; its pid."""
    environ = dict(os.environ)
    environ[UPGRADE_VARIABLE] = str(os.getpid())
    environ["LISTEN_FDS"] = str(len(listeners))
    environ["LISTEN_FDNAMES"] = ":".join(names)
    fds = [sock.fileno() for sock in listeners]
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: only system calls from here to exec
        environ["LISTEN_PID"] = str(os.getpid())
        # Out of the way first: a socket may already sit where another must go.
        above = max([*fds, _FIRST_FD + len(fds)]) + 1
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, above) for fd in fds]
        for index, fd in enumerate(moved):
            os.dup2(fd, _FIRST_FD + index, inheritable=True)
        os.execve(command[0], list(command), environ)
    finally:
        os._exit(127)  # exec failed; the parent logs the exit status


def take_upgrade_from(environ: MutableMapping[str, str] | None = None) -> int | None:
    """The old master's pid when this process is its successor (and forget it)."""
    environ = os.environ if environ is None else environ
    value = environ.pop(UPGRADE_VARIABLE, None)
    if value is None or not value.strip().isdigit():
        return None
    pid = int(value)
    return pid if pid == os.getppid() else None


def write_pid_file(path: str | os.PathLike[str]) -> None:
    """Write this process's pid atomically: a reader sees the old pid or the new one."""
    target = Path(path)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    partial.write_text(f"{os.getpid()}\n", encoding="ascii")
    os.replace(partial, target)


def remove_pid_file(path: str | os.PathLike[str]) -> None:
    """Remove the pid file if it still names this process (a successor may own it now)."""
    target = Path(path)
    with contextlib.suppress(OSError, ValueError):
        if int(target.read_text(encoding="ascii").strip()) == os.getpid():
            target.unlink()
