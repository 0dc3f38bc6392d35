"""Closing a shared TCP listener without resetting the connections queued on it.

When the last descriptor of a listening socket closes, the kernel resets
every connection still waiting in its accept queue: clients that connected,
sent a request and now read a reset.  A prefork master avoids that in two
steps before it stops its workers:

1. :func:`stop_new_connections` attaches a socket filter that drops every
   packet reaching the listener, so no new connection completes its
   handshake (the client's SYN goes unanswered; its retry, a second later,
   finds the socket closed and is refused);
2. :func:`accept_queue_length` tells when the workers, still accepting,
   have taken every connection that was already queued.

Both are Linux-only and answer False / None elsewhere; the caller then
closes at once, as any server would.
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct
import sys

__all__ = ["accept_queue_length", "allow_new_connections", "stop_new_connections"]

_SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>
_SO_DETACH_FILTER = 27
_BPF_RET_K = 0x06  # BPF_RET | BPF_K: "return k", with k = 0 bytes kept: drop the packet
_TCP_INFO_UNACKED = 24  # offset of tcpi_unacked: a listener's accept-queue length


class _Instruction(ctypes.Structure):  # struct sock_filter
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _Program(ctypes.Structure):  # struct sock_fprog
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Instruction)))


def stop_new_connections(sock: socket.socket) -> bool:
    """Make a TCP listener drop every new connection attempt; True if it now does.

    Connections already in its accept queue are untouched and can still be
    accepted.  The filter lives on the socket, so it applies to every
    process that shares it.
    """
    if not sys.platform.startswith("linux") or sock.type != socket.SOCK_STREAM:
        return False
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    drop_all = (_Instruction * 1)(_Instruction(_BPF_RET_K, 0, 0, 0))
    program = _Program(1, drop_all)
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(program))
    except OSError:
        return False
    return True


def allow_new_connections(sock: socket.socket) -> None:
    """Take :func:`stop_new_connections`' filter off again (a socket that outlives us).

    A socket held by systemd, or by a process taking over, goes on
    listening after this process closes its copy: it must not keep
    dropping every connection attempt.
    """
    if sys.platform.startswith("linux") and sock.fileno() != -1:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_DETACH_FILTER, 0)
        except OSError:
            pass  # no filter on it: nothing to take off


def accept_queue_length(sock: socket.socket) -> int | None:
    """How many connections wait in a TCP listener's accept queue (None: unknown here)."""
    if not sys.platform.startswith("linux") or sock.type != socket.SOCK_STREAM:
        return None
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    with contextlib.suppress(OSError):
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_UNACKED + 4)
        if len(info) >= _TCP_INFO_UNACKED + 4:
            (queued,) = struct.unpack_from("I", info, _TCP_INFO_UNACKED)
            return int(queued)
    return None
