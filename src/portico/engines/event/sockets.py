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

import select
import socket
import time
import weakref
from typing import TYPE_CHECKING, Any

import greenlet

from portico.engines.event.hub import Hub, Task

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = ["CooperativeSocket", "make_cooperative"]

# The timeout each cooperative socket's owner asked for (absent: None, blocking).
_timeouts: weakref.WeakKeyDictionary[socket.socket, float | None] = weakref.WeakKeyDictionary()
# The hub each cooperative socket's descriptor is registered with.
_hubs: weakref.WeakKeyDictionary[socket.socket, Hub] = weakref.WeakKeyDictionary()
_classes: dict[type, type] = {}


def make_cooperative(sock: socket.socket, hub: Hub) -> socket.socket:
    """Make ``sock`` cooperative with ``hub``, in place, and return it."""
    cls = type(sock)
    if issubclass(cls, CooperativeSocket):
        return sock
    timeout = sock.gettimeout()
    sock.setblocking(False)
    sock.__class__ = _cooperative_class(cls)
    if timeout is not None:
        _timeouts[sock] = timeout
    _hubs[sock] = hub
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


def _wait(sock: socket.socket, *, write: bool, deadline: float | None = None) -> None:
    """Wait until ``sock`` is ready; TimeoutError past its timeout, BlockingIOError at 0."""
    timeout = _timeouts.get(sock)
    if timeout is not None:
        if timeout == 0.0:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        if deadline is not None:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise TimeoutError("timed out")
    task = greenlet.getcurrent()
    if isinstance(task, Task) and task.hub is _hubs.get(sock):
        task.hub.wait(sock.fileno(), write=write, timeout=timeout)
    else:
        _block(sock.fileno(), write=write, timeout=timeout)


def _block(fd: int, *, write: bool, timeout: float | None) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLOUT if write else select.POLLIN)
    if not poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
        raise TimeoutError("timed out")


def _deadline(sock: socket.socket) -> float | None:
    timeout = _timeouts.get(sock)
    return None if not timeout else time.monotonic() + timeout


class CooperativeSocket(socket.socket):
    """A socket whose waiting calls park the current task instead of the thread."""

    __slots__ = ()

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        while True:
            try:
                return super().recv(bufsize, flags)
            except BlockingIOError:
                _wait(self, write=False)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0, /) -> int:
        while True:
            try:
                return super().recv_into(buffer, nbytes, flags)
            except BlockingIOError:
                _wait(self, write=False)

    def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Any]:
        while True:
            try:
                return super().recvfrom(bufsize, flags)
            except BlockingIOError:
                _wait(self, write=False)

    def recvfrom_into(
        self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0, /
    ) -> tuple[int, Any]:
        while True:
            try:
                return super().recvfrom_into(buffer, nbytes, flags)
            except BlockingIOError:
                _wait(self, write=False)

    def send(self, data: ReadableBuffer, flags: int = 0, /) -> int:
        while True:
            try:
                return super().send(data, flags)
            except BlockingIOError:
                _wait(self, write=True)

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        deadline = _deadline(self)
        with memoryview(data) as view, view.cast("B") as remaining:
            sent = 0
            total = len(remaining)
            while sent < total:
                try:
                    sent += super().send(remaining[sent:], flags)
                except BlockingIOError:
                    _wait(self, write=True, deadline=deadline)

    def sendto(self, data: ReadableBuffer, *args: Any) -> int:
        while True:
            try:
                return super().sendto(data, *args)
            except BlockingIOError:
                _wait(self, write=True)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        # The stdlib's os.sendfile() path waits in a selector of its own: send() cooperates.
        sent: int = self._sendfile_use_send(file, offset, count)  # type: ignore[attr-defined]
        return sent

    def settimeout(self, value: float | None, /) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        _timeouts[self] = value

    def gettimeout(self) -> float | None:
        return _timeouts.get(self)

    def setblocking(self, flag: bool, /) -> None:
        _timeouts[self] = None if flag else 0.0

    @property
    def timeout(self) -> float | None:
        return _timeouts.get(self)

    def detach(self) -> int:
        _forget(self)
        return super().detach()

    def _real_close(self, *args: Any, **kwargs: Any) -> None:
        _forget(self)
        super()._real_close(*args, **kwargs)  # type: ignore[misc]  # not in typeshed


def _forget(sock: socket.socket) -> None:
    fd = sock.fileno()
    hub = _hubs.pop(sock, None)
    if fd >= 0 and hub is not None:
        hub.forget(fd)
