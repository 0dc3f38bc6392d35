"""Sockets whose blocking calls cooperate with the hub.

:func:`make_cooperative` turns the connected socket that ``get_request()``
returned into a cooperative one *in place*: its class becomes a subclass of
its own class (``socket.socket``, or whatever subclass the server used) that
overrides the calls that wait.  The handler gets the very object the server
accepted, so attributes set on it in ``get_request()`` survive, and
``rfile``/``wfile`` (built by ``makefile()`` on top of ``recv_into`` and
``send``) cooperate too.  Nothing global changes: other sockets, in this
thread or any other, are untouched.

Underneath, the descriptor is non-blocking.  The timeout the handler sets
(``settimeout()``, as ``StreamRequestHandler.timeout`` does) is kept here and
applied while a call waits in the hub; ``gettimeout()`` reports it, so code
that looks at it sees what it set.  Called outside a task (in the hub's own
greenlet, or from another thread), a call waits the ordinary, blocking way,
with ``poll()``.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from typing import TYPE_CHECKING, Any

import greenlet

from portico.engines.event.hub import CONNECTIONS, Connection, Hub, Task

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = ["CooperativeSocket", "DatagramReplySocket", "make_cooperative"]

_classes: dict[type, type] = {}
# The C methods, called directly: ``super()`` costs a lookup per call on the hot path.
_recv, _recv_into, _send = socket.socket.recv, socket.socket.recv_into, socket.socket.send
_PEEK = socket.MSG_PEEK


def make_cooperative(sock: socket.socket, hub: Hub) -> socket.socket:
    """Make ``sock`` cooperative with ``hub``, in place, and return it."""
    cls = type(sock)
    if issubclass(cls, CooperativeSocket):
        return sock
    timeout = sock.gettimeout()
    sock.setblocking(False)
    sock.__class__ = _cooperative_class(cls)
    CONNECTIONS[sock.fileno()] = Connection(hub, timeout)
    return sock


def _cooperative_class(cls: type) -> type:
    found = _classes.get(cls)
    if found is None:
        if cls is socket.socket:
            found = CooperativeSocket
        else:
            name = f"Cooperative{cls.__name__}"
            found = type(name, (CooperativeSocket, cls), {"__slots__": (), "__module__": __name__})
        _classes[cls] = found
    return found


def _wait(fd: int, *, write: bool, deadline: float | None = None) -> None:
    """Wait until ``fd`` is ready; TimeoutError past its timeout, BlockingIOError at 0."""
    _wait_on(CONNECTIONS.get(fd), fd, write, deadline)


def _wait_on(
    connection: Connection | None, fd: int, write: bool, deadline: float | None = None
) -> None:
    timeout = None if connection is None else connection.timeout
    if timeout is not None:
        if timeout == 0.0:
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        if deadline is not None:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise TimeoutError("timed out")
    task = greenlet.getcurrent()
    if connection is not None and isinstance(task, Task) and task.hub is connection.hub:
        connection.hub.wait(fd, write=write, timeout=timeout)
    else:
        _block(fd, write=write, timeout=timeout)


def _block(fd: int, *, write: bool, timeout: float | None) -> None:
    """Wait the ordinary way: outside a task there is no loop to hand the wait to."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT if write else select.POLLIN)
    if not poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
        raise TimeoutError("timed out")


def _deadline(fd: int) -> float | None:
    connection = CONNECTIONS.get(fd)
    timeout = None if connection is None else connection.timeout
    return None if not timeout else time.monotonic() + timeout


class CooperativeSocket(socket.socket):
    """A socket whose waiting calls park the current task instead of the thread."""

    __slots__ = ()

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        fd = self.fileno()
        connection = CONNECTIONS.get(fd)
        # A peek left data queued: the next plain read takes it without parking.
        if connection is not None and connection.quiet and (flags & _PEEK or not connection.peeked):
            _wait_on(connection, fd, False)
        while True:
            try:
                data = _recv(self, bufsize, flags)
            except BlockingIOError:
                _wait_on(connection, fd, False)
                continue
            if connection is not None:
                connection.quiet = len(data) < bufsize and not connection.ending
                connection.peeked = bool(flags & _PEEK) and bool(data)
            return data

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0, /) -> int:
        fd = self.fileno()
        connection = CONNECTIONS.get(fd)
        # A peek left data queued: the next plain read takes it without parking.
        if connection is not None and connection.quiet and (flags & _PEEK or not connection.peeked):
            _wait_on(connection, fd, False)
        while True:
            try:
                received = _recv_into(self, buffer, nbytes, flags)
            except BlockingIOError:
                _wait_on(connection, fd, False)
                continue
            if connection is not None:
                # Less than asked for: the kernel had no more, and new data makes an edge.
                asked = nbytes or len(buffer)  # type: ignore[arg-type]
                connection.quiet = received < asked and not connection.ending
                connection.peeked = bool(flags & _PEEK) and received > 0
            return received

    def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Any]:
        while True:
            try:
                return super().recvfrom(bufsize, flags)
            except BlockingIOError:
                _wait(self.fileno(), write=False)

    def recvfrom_into(
        self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0, /
    ) -> tuple[int, Any]:
        while True:
            try:
                return super().recvfrom_into(buffer, nbytes, flags)
            except BlockingIOError:
                _wait(self.fileno(), write=False)

    def send(self, data: ReadableBuffer, flags: int = 0, /) -> int:
        while True:
            try:
                return _send(self, data, flags)
            except BlockingIOError:
                _wait(self.fileno(), write=True)

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        if type(data) is bytes:  # the usual case, in one system call
            try:
                if _send(self, data, flags) == len(data):
                    return
            except BlockingIOError:
                pass
            else:
                # Part of it went; the loop below sends the rest.
                pass
        self._send_all(data, flags)

    def _send_all(self, data: ReadableBuffer, flags: int) -> None:
        fd = self.fileno()
        deadline = _deadline(fd)
        with memoryview(data) as view, view.cast("B") as remaining:
            sent = 0
            total = len(remaining)
            while sent < total:
                try:
                    sent += _send(self, remaining[sent:], flags)
                except BlockingIOError:
                    _wait(fd, write=True, deadline=deadline)

    def sendto(self, data: ReadableBuffer, *args: Any) -> int:
        while True:
            try:
                return super().sendto(data, *args)
            except BlockingIOError:
                _wait(self.fileno(), write=True)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        # The stdlib's os.sendfile() path waits in a selector of its own: send() cooperates.
        sent: int = self._sendfile_use_send(file, offset, count)  # type: ignore[attr-defined]
        return sent

    def settimeout(self, value: float | None, /) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._connection().timeout = value

    def gettimeout(self) -> float | None:
        connection = CONNECTIONS.get(self.fileno())
        return None if connection is None else connection.timeout

    def setblocking(self, flag: bool, /) -> None:
        self._connection().timeout = None if flag else 0.0

    @property
    def timeout(self) -> float | None:
        return self.gettimeout()

    def detach(self) -> int:
        _forget(self.fileno(), closing=False)
        return super().detach()

    def _real_close(self, *args: Any, **kwargs: Any) -> None:
        _forget(self.fileno(), closing=True)
        super()._real_close(*args, **kwargs)  # type: ignore[misc]  # not in typeshed

    def _connection(self) -> Connection:
        fd = self.fileno()
        if fd < 0:
            raise OSError(errno.EBADF, "Bad file descriptor")
        connection = CONNECTIONS.get(fd)
        if connection is None:
            raise RuntimeError(f"descriptor {fd} left its event loop")
        return connection


def _forget(fd: int, *, closing: bool) -> None:
    connection = CONNECTIONS.pop(fd, None)
    if connection is not None:
        connection.hub.forget(fd, closing=closing)


class DatagramReplySocket:
    """A datagram handler's view of the server socket, which the engine made non-blocking.

    ``sendto()`` waits for room when the send buffer is full, as it did while
    blocking.  The wait blocks the loop (the socket is one of the loop's own
    sources, so no task can park on it), but a full datagram send buffer
    drains in microseconds.  Everything else goes to the socket.
    """

    __slots__ = ("_sock",)

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def sendto(self, data: ReadableBuffer, *args: Any) -> int:
        while True:
            try:
                sent: int = self._sock.sendto(data, *args)
            except BlockingIOError:
                _block(self._sock.fileno(), write=True, timeout=None)
            else:
                return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
