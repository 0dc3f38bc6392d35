"""``makefile()`` for socket-like objects that are not sockets (TLS streams, guarded sockets).

``socket.SocketIO`` works over any object with ``recv_into``, ``send``,
``fileno`` and ``_decref_socketios``; this builds the buffered and text
layers on top of it exactly as ``socket.socket.makefile()`` does, so
handlers' ``rfile`` and ``wfile`` behave the same whatever is underneath.
"""

from __future__ import annotations

import io
import socket
from typing import Any

__all__ = ["SocketWrapper", "makefile"]


def makefile(
    owner: Any,
    mode: str = "r",
    buffering: int | None = None,
    *,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
) -> Any:
    """What ``owner.makefile(...)`` returns; ``owner._io_refs`` counts the files made."""
    if not set(mode) <= {"r", "w", "b"}:
        raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
    reading, writing, binary = "r" in mode, "w" in mode, "b" in mode
    raw = socket.SocketIO(owner, ("r" if reading else "") + ("w" if writing else ""))  # type: ignore[arg-type]
    owner._io_refs += 1
    if buffering is None or buffering < 0:
        buffering = io.DEFAULT_BUFFER_SIZE
    if buffering == 0:
        if not binary:
            raise ValueError("unbuffered streams must be binary")
        return raw
    buffered: Any
    if reading and writing:
        buffered = io.BufferedRWPair(raw, raw, buffering)
    elif reading:
        buffered = io.BufferedReader(raw, buffering)
    else:
        buffered = io.BufferedWriter(raw, buffering)
    if binary:
        return buffered
    text = io.TextIOWrapper(buffered, encoding, errors, newline)
    text.mode = mode  # type: ignore[misc]
    return text


class SocketWrapper:
    """What a wrapper around a handler's connection shares (a guard, a byte counter).

    ``makefile()`` builds the files over the wrapper itself, so the handler's
    ``rfile`` and ``wfile`` go through it; ``close()`` leaves the connection to
    the server, which closes it; everything else is the wrapped ``raw``'s.
    """

    raw: Any

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self._io_refs = 0

    def makefile(self, mode: str = "r", buffering: int | None = None, **text: Any) -> Any:
        return makefile(self, mode, buffering, **text)

    def _decref_socketios(self) -> None:
        self._io_refs -= 1

    def close(self) -> None:
        """The handler is done with it; the server closes the socket itself."""

    def __getattr__(self, name: str) -> Any:
        # fileno, settimeout (the handler's own timeout), setsockopt, getpeername, ...
        return getattr(self.raw, name)
