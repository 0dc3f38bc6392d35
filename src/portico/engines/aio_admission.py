"""The async engine's side of the admission limits (see :mod:`portico.server.admission`).

The loop accepts connections itself, many per wake-up, so "stop accepting"
cannot happen between two accepts as in the serving loop of the other
engines.  Under the ``pause`` policy a connection that finds the server
full (or over its accept rate) is not turned away: it waits here, already
accepted, costing a descriptor and no handler, and the listeners stop
until a slot frees (or the rate allows) again.  The waiting ones are served
first, in arrival order.  Per-client refusals, and every refusal under the
``reject`` policy, go to the server's ``handle_overload()``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from portico.server.admission import PER_CLIENT

__all__ = ["AsyncAdmission"]


class AsyncAdmission:
    """Admits the connections of one async engine, pausing its listeners while full."""

    def __init__(
        self,
        server: Any,
        loop: asyncio.AbstractEventLoop,
        serve: Callable[[Any, Any], None],
        stop_listening: Callable[[], None],
        listen_again: Callable[[], None],
    ) -> None:
        self.server = server
        self.loop = loop
        self._serve = serve
        self._stop_listening = stop_listening
        self._listen_again = listen_again
        self.waiting: deque[tuple[Any, Any]] = deque()
        self.paused = False
        self._timer: asyncio.TimerHandle | None = None

    def admit(self, stream: Any, address: Any) -> None:
        """A new connection: serve it, keep it waiting, or turn it away."""
        admission = self.server._portico_admission
        if admission is None:
            self._serve(stream, address)
            return
        if self.waiting:  # earlier arrivals first
            self._wait(stream, address)
            return
        refused = admission.admit(stream, address)
        if refused is None:
            self._serve(stream, address)
            self._pause_if_needed()
        elif admission.limits.pauses and refused != PER_CLIENT:
            self._wait(stream, address)
        else:
            self.server._portico_turn_away(stream, address, refused)

    def slot_freed(self) -> None:
        """A connection ended, or the accept rate allows one more: serve who waits, then listen."""
        self._timer = None
        admission = self.server._portico_admission
        if admission is None:
            return
        while self.waiting:
            stream, address = self.waiting[0]
            if stream.transport is None or stream.transport.is_closing():
                self.waiting.popleft()  # its client gave up waiting
                continue
            if admission.admit(stream, address) is not None:
                self._pause_if_needed()
                return
            self.waiting.popleft()
            self._serve(stream, address)
        self._pause_if_needed()
        if self.paused and not self._must_pause():
            self.paused = False
            self._listen_again()

    def pause(self) -> None:
        """Stop listening until a slot frees (the engine's own accept path found no room)."""
        self._pause_if_needed(force=True)

    def _wait(self, stream: Any, address: Any) -> None:
        self.waiting.append((stream, address))
        self._pause_if_needed(force=True)

    def _must_pause(self) -> bool:
        server = self.server
        return (
            bool(self.waiting)
            or server._portico_admission_full()
            or bool(server._portico_accept_delay())
        )

    def _pause_if_needed(self, *, force: bool = False) -> None:
        if not (force or self._must_pause()):
            return
        if not self.paused:
            self.paused = True
            self._stop_listening()
        delay = self.server._portico_accept_delay()
        if delay and self._timer is None:
            # Nothing ends to wake us when the rate is what stops us: a timer does.
            self._timer = self.loop.call_later(delay, self.slot_freed)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.waiting.clear()
