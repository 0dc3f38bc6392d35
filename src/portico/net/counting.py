"""Counting the bytes a connection carries, for its access line.

A :class:`CountingStream` stands between a handler and its connection (a
socket, an engine's cooperative socket, a guarded one) and adds what each
``recv``/``send`` carried to a :class:`~portico.net.context.Connection`: one
Python call next to the system call it wraps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from portico.net.context import Connection
from portico.net.streams import SocketWrapper

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = ["CountingStream"]


class CountingStream(SocketWrapper):
    """A connected socket-like object whose traffic is counted on ``connection``."""

    def __init__(self, raw: Any, connection: Connection) -> None:
        super().__init__(raw)
        self.connection = connection

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        data: bytes = self.raw.recv(bufsize, flags)
        self.connection.bytes_in += len(data)
        return data

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0, /) -> int:
        received: int = self.raw.recv_into(buffer, nbytes, flags)
        self.connection.bytes_in += received
        return received

    def send(self, data: ReadableBuffer, flags: int = 0, /) -> int:
        sent: int = self.raw.send(data, flags)
        self.connection.bytes_out += sent
        return sent

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        self.raw.sendall(data, flags)
        with memoryview(data) as view:
            self.connection.bytes_out += view.nbytes
