"""What the ``async`` engine drives: handler tasks, and connections that are protocols.

A handler's coroutine is not an :class:`asyncio.Task`: a :class:`HandlerTask`
steps it.  When the handler awaits data from its own connection and the data
is already buffered, nothing suspends at all; when it is not, the coroutine
yields a marker, and the connection's ``data_received()`` resumes it directly
(``coro.send(None)``), with no Future, no callback and no trip through the
loop's ready queue.  Anything else the handler awaits (``asyncio.sleep()``, a
lock, a Future, another task) is waited for as a Task would: a done-callback
resumes it.  While a step runs, :func:`asyncio.current_task` returns the
HandlerTask, which offers what ``asyncio.timeout()`` and ``wait_for()`` need
(``cancel``, ``cancelling``, ``uncancel``, ``done``).

:class:`AsyncStream` is the protocol of one connection and, at the same time,
what the handler sees as ``self.request``, ``self.reader`` and
``self.writer``: one object per connection, so that an idle one costs little.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import types
from asyncio import CancelledError, IncompleteReadError, LimitOverrunError
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

from portico.errors import ConnectionTimeoutError, LineTooLongError
from portico.net.guard import RECEIVING, SENDING, ConnectionClock

# What asyncio.current_task() reads; typed for Tasks, they take any task-like object.
_enter_task: Callable[[Any, Any], None] = asyncio.tasks._enter_task
_leave_task: Callable[[Any, Any], None] = asyncio.tasks._leave_task

__all__ = ["AsyncStream", "DatagramReply", "HandlerTask"]

# Yielded by a coroutine that waits for its own connection, driven by its own HandlerTask.
_WAITING: Any = object()

# A connection's buffer above 2 x limit pauses reading, as asyncio's StreamReader does.
DEFAULT_LIMIT = 64 * 1024


class HandlerTask:
    """Drives one handler's coroutine; Task-like enough for ``asyncio.timeout()``.

    ``owner.task_done(task)`` is called once the coroutine has ended,
    however it ended; ``owner.task_failed(task)`` before that, from inside the
    ``except`` block, when it raised (so that ``sys.exc_info()`` is the
    handler's exception).
    """

    __slots__ = (
        "_blocked",
        "_cancel_requests",
        "_context",
        "_coro",
        "_done",
        "_loop",
        "_must_cancel",
        "_owner",
        "_running",
        "client_address",
        "handler",
        "request",
        "started",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        owner: Any,
        handler: Any,
        request: Any,
        client_address: Any,
    ) -> None:
        self._loop = loop
        self._owner = owner
        self.handler = handler
        self.request = request
        self.started = 0.0  # time.monotonic() when the engine started it
        self.client_address = client_address
        self._coro = handler.handle() if handler._portico_plain else handler._portico_run()
        self._context = contextvars.copy_context()
        self._blocked: Any = None  # _WAITING, a Future, or None (running or scheduled)
        self._running = False
        self._done = False
        self._must_cancel = False
        self._cancel_requests = 0

    def step(self, exc: BaseException | None = None) -> None:
        """Run the coroutine until it next waits (or ends)."""
        if self._done:
            return
        if self._must_cancel:
            self._must_cancel = False
            exc = CancelledError()
        if exc is None:
            self._advance(self._coro.send, None)
        else:
            self._advance(self._coro.throw, exc)

    def resume(self) -> None:
        """Send None into the coroutine: step() without a pending cancellation.

        The connection calls it directly when the data the handler waits for arrives.
        """
        if self._must_cancel:
            self.step()
        else:
            self._advance(self._coro.send, None)

    def _advance(self, how: Callable[[Any], Any], value: Any) -> None:
        """``how(value)`` (the coroutine's send or throw) as this task, in its context."""
        self._blocked = None
        loop = self._loop
        _enter_task(loop, self)
        self._running = True
        try:
            result = self._context.run(how, value)
        except (StopIteration, CancelledError):
            self._finish()
        except (KeyboardInterrupt, SystemExit):
            self._finish()
            raise
        except BaseException:
            self._owner.task_failed(self)
            self._finish()
        else:
            if result is _WAITING:
                self._blocked = _WAITING
            else:
                self._park(result)
        finally:
            self._running = False
            _leave_task(loop, self)

    def _park(self, result: Any) -> None:
        """The coroutine yielded something other than _WAITING: wait as a Task would."""
        loop = self._loop
        if result is None:  # a bare yield: asyncio.sleep(0)
            loop.call_soon(self.step)
        elif getattr(result, "_asyncio_future_blocking", None):
            result._asyncio_future_blocking = False
            self._blocked = result
            result.add_done_callback(self._wakeup)
            if self._must_cancel and result.cancel():
                self._must_cancel = False
        else:
            error = RuntimeError(f"a handler coroutine yielded {result!r}, not a Future")
            loop.call_soon(self.step, error)

    def _wakeup(self, future: asyncio.Future[Any]) -> None:
        if future is not self._blocked:
            return  # cancelled while waiting: the step is already scheduled
        try:
            future.result()
        except BaseException as exc:
            self.step(exc)
        else:
            self.step()

    def _finish(self) -> None:
        self._done = True
        self._blocked = None
        self._owner.task_done(self)

    # -- what asyncio.timeout(), wait_for() and current_task() users need ----

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False

    def cancel(self, msg: Any = None) -> bool:
        """Throw CancelledError into the handler where it waits (as Task.cancel does)."""
        if self._done:
            return False
        self._cancel_requests += 1
        blocked = self._blocked
        if blocked is _WAITING:
            self._blocked = None  # the connection must no longer resume it
            self._must_cancel = True
            self._loop.call_soon(self.step)
        elif blocked is not None:
            if not blocked.cancel(msg):
                self._must_cancel = True
        else:
            self._must_cancel = True
        return True

    def cancelling(self) -> int:
        return self._cancel_requests

    def uncancel(self) -> int:
        if self._cancel_requests > 0:
            self._cancel_requests -= 1
        return self._cancel_requests

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def get_coro(self) -> Any:
        return self._coro

    def get_name(self) -> str:
        return f"portico-handler-{id(self):x}"

    def __repr__(self) -> str:
        state = "done" if self._done else "pending"
        return f"<HandlerTask {state} coro={self._coro!r}>"


@types.coroutine
def _wait(stream: AsyncStream, kind: int = RECEIVING) -> Generator[Any, None, None]:
    """Suspend until the connection has news: data, end of file, drained, lost.

    ``kind`` (RECEIVING, SENDING, or 0) is what the connection's time limits
    count the wait as; when one fires, the wait raises its ConnectionTimeoutError.
    """
    if stream._waiting or stream._waiter is not None:
        raise RuntimeError("another coroutine is already waiting on this connection")
    clock = stream._clock
    if clock is not None:
        if clock.fired is not None:
            raise clock.fired
        clock.begin(kind)
    task = stream._task
    try:
        if task is not None and task._running:
            # Driven by the connection's own task: data_received() resumes it directly.
            stream._waiting = True
            try:
                yield _WAITING
            finally:
                stream._waiting = False
        else:  # another task reads (or drains): a Future it can wait on
            waiter = stream._waiter = stream._loop.create_future()
            try:
                yield from waiter
            finally:
                stream._waiter = None
    finally:
        if clock is not None:
            clock.end()
    if clock is not None and clock.fired is not None:
        raise clock.fired


class AsyncStream(asyncio.Protocol):
    """One connection: the protocol, the handler's reader and writer, and its request.

    Reading (``readline``, ``read``, ``read1``, ``readexactly``,
    ``readuntil``, ``async for line in reader``) follows the stdlib's
    ``rfile``: at end of file, reads return what is left and then ``b""``.
    Writing is ``write()`` (buffered in the transport, never blocks),
    ``await drain()`` (waits while the transport's buffer is above its
    high-water mark), ``write_eof()`` and ``close()``.  As a request it has
    the socket calls the server's hooks make: ``shutdown()``, ``close()``,
    ``fileno()``, ``getpeername()``, ``getsockname()``.

    Memory is bounded: reading pauses while more than twice ``limit`` bytes
    wait unread (unless the handler waits for more, as for a long line), and
    while the transport's write buffer is above its high-water mark (a client
    that does not read its replies stops being read).
    """

    __slots__ = (
        "_before_handler",
        "_buffer",
        "_clock",
        "_eof",
        "_limit",
        "_loop",
        "_lost",
        "_lost_exc",
        "_owner",
        "_paused",
        "_start",
        "_task",
        "_waiter",
        "_waiting",
        "_write_paused",
        "bytes_in",
        "bytes_out",
        "client_address",
        "max_line",
        "proxy_header",
        "transport",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        owner: Any,
        limit: int = DEFAULT_LIMIT,
        client_address: Any = None,
    ) -> None:
        self._loop = loop
        self._owner = owner  # its stream_made(stream) and stream_lost(stream) are called
        self._limit = limit
        self._buffer = b""  # bytes, not bytearray: a whole line is handed over uncopied
        # Where the unread data starts in _buffer.  readline() only moves it, so a
        # buffer of many lines is not copied again for each line it hands over; any
        # other reader, and new data, first drops what was read (_compact()).
        self._start = 0
        self._eof = False
        self._lost = False
        self._lost_exc: BaseException | None = None
        self._paused = False
        self._write_paused = False
        self._waiting = False
        self._waiter: asyncio.Future[None] | None = None
        self._task: HandlerTask | None = None
        self.transport: Any = None
        self.client_address = client_address
        self.bytes_in = 0
        self.bytes_out = 0
        # Set while something must be read before the handler starts (a PROXY header):
        # called with the stream on each arrival instead of waking a handler.
        self._before_handler: Callable[[AsyncStream], None] | None = None
        self.proxy_header: Any = None  # the PROXY header, when the server expects one
        # The time limits' clock (see portico.net.guard), when the server sets limits.
        self._clock: ConnectionClock | None = None
        # readline() raises LineTooLongError past this many bytes (the handler's setting).
        self.max_line: int | None = None

    # -- the protocol ------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._owner.stream_made(self)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        clock = self._clock
        if clock is not None:
            too_slow = clock.received(len(data))
            if too_slow is not None:
                self.fire(too_slow)
        buffer = self._buffer
        if self._start:
            buffer = buffer[self._start :]
            self._start = 0
        self._buffer = buffer + data if buffer else data
        if self._before_handler is not None:
            self._before_handler(self)
            return
        if self._waiting:
            task = self._task
            if task is not None and task._blocked is _WAITING:
                task.resume()
        elif self._waiter is not None:
            self._wake()
        if len(self._buffer) > 2 * self._limit and not self._paused and not self._waiting:
            self._pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        if self._before_handler is not None:
            self._before_handler(self)  # it sees the end of file
            return True
        self._wake()
        return True  # keep the transport open: the handler may still answer

    def unread(self) -> bytes:
        """The bytes received and not yet read (before the handler starts: all of them)."""
        return self._buffer[self._start :]

    def skip(self, count: int) -> None:
        """Drop ``count`` received bytes (a PROXY header) before the handler reads."""
        self._start += count

    @property
    def eof_seen(self) -> bool:
        """The peer finished sending (whatever is left unread)."""
        return self._eof

    def fire(self, error: ConnectionTimeoutError) -> None:
        """A time limit passed: end the connection; the handler's wait raises ``error``."""
        clock = self._clock
        if clock is not None and clock.fire(error) and self.transport is not None:
            self.transport.abort()  # connection_lost() wakes the handler

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._lost = True
        self._lost_exc = exc
        self._wake()
        self._owner.stream_lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()
        if self._paused and len(self._buffer) - self._start <= self._limit:
            self._resume_reading()

    def _wake(self) -> None:
        if self._waiting:
            task = self._task
            if task is not None and task._blocked is _WAITING:
                task.step()
        else:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _pause_reading(self) -> None:
        if not self._paused and not self._lost:
            self._paused = True
            try:
                self.transport.pause_reading()
            except (AttributeError, RuntimeError):  # closing already
                pass

    def _resume_reading(self) -> None:
        if self._paused and not self._lost:
            self._paused = False
            try:
                self.transport.resume_reading()
            except (AttributeError, RuntimeError):
                pass

    async def _more(self) -> None:
        """Wait for more data (the caller checked there is not enough, and no EOF)."""
        if self._paused and not self._write_paused:
            self._resume_reading()  # the handler needs more than the limit: let it come
        await _wait(self)

    def _compact(self) -> bytes:
        """Drop what readline() already handed over; returns the unread data."""
        if self._start:
            self._buffer = self._buffer[self._start :]
            self._start = 0
        return self._buffer

    def _keep(self, rest: bytes) -> None:
        self._buffer = rest
        self._start = 0
        if self._paused and not self._write_paused and len(rest) <= self._limit:
            self._resume_reading()

    # -- reading, like the stdlib's rfile ------------------------------------

    async def readline(self, size: int = -1) -> bytes:
        """One line with its ``\\n``; a partial line at end of file, then ``b""``.

        With ``size`` >= 0, at most ``size`` bytes (the rest of the line comes next).
        """
        buffer, start = self._buffer, self._start
        end = buffer.find(b"\n", start) + 1
        maximum = self.max_line
        if not end or 0 <= size < end - start or (maximum is not None and end - start > maximum):
            return await self._readline_slowly(size)
        if end == len(buffer):
            self._buffer, self._start = b"", 0
            if self._paused:
                self._keep(b"")
            return buffer if not start else buffer[start:]
        self._start = end
        if self._paused and not self._write_paused and len(buffer) - end <= self._limit:
            self._resume_reading()
        return buffer[start:end]

    async def _readline_slowly(self, size: int) -> bytes:
        """readline() when the buffer holds no whole line, or it is longer than ``size``."""
        buffer = self._compact()
        end = buffer.find(b"\n") + 1
        while not end:
            if 0 <= size <= len(buffer) or self._eof:
                end = len(buffer) if size < 0 else min(size, len(buffer))
                break
            if self.max_line is not None and len(buffer) >= self.max_line:
                raise LineTooLongError(self.max_line)
            start = len(buffer)
            if self._paused and not self._write_paused:
                self._resume_reading()  # the line is longer than the limit: let it come
            await _wait(self)
            buffer = self._compact()
            end = buffer.find(b"\n", start) + 1
        if 0 <= size < end:
            end = size
        maximum = self.max_line
        if maximum is not None and end > maximum and not 0 <= size <= maximum:
            raise LineTooLongError(maximum)
        if end == len(buffer):
            self._buffer = b""
            if self._paused:
                self._keep(b"")
            return buffer
        self._keep(buffer[end:])
        return buffer[:end]

    async def read(self, n: int = -1) -> bytes:
        """``n`` bytes, fewer only at end of file; all until end of file if ``n`` < 0."""
        while not self._eof and (n < 0 or len(self._compact()) < n):
            await self._more()
        return self._take(len(self._compact()) if n < 0 else n)

    async def read1(self, n: int = -1) -> bytes:
        """Whatever is available (waiting for at least one byte), at most ``n`` if ``n`` >= 0.

        ``b""`` only at end of file.
        """
        while not self._compact() and not self._eof and n != 0:
            await self._more()
        return self._take(len(self._buffer) if n < 0 else n)

    recv = read1

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; :class:`asyncio.IncompleteReadError` if the stream ends first."""
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        while len(self._compact()) < n:
            if self._eof:
                partial = self._take(n)
                raise IncompleteReadError(partial, n)
            await self._more()
        return self._take(n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Data up to and including ``separator``.

        :class:`asyncio.IncompleteReadError` at end of file without it;
        :class:`asyncio.LimitOverrunError` once more than twice ``limit``
        bytes came without it (they stay buffered).
        """
        if not separator:
            raise ValueError("separator should be at least one-byte string")
        start = 0
        while True:
            buffer = self._compact()
            found = buffer.find(separator, start)
            if found >= 0:
                return self._take(found + len(separator))
            if self._eof:
                raise IncompleteReadError(self._take(len(buffer)), None)
            if len(buffer) > 2 * self._limit:
                raise LimitOverrunError("separator is not found, and chunk exceed the limit", 0)
            start = max(0, len(buffer) - len(separator) + 1)
            await self._more()

    def at_eof(self) -> bool:
        """True once the peer finished sending and everything was read."""
        return self._eof and not self._compact()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    def _take(self, n: int) -> bytes:
        buffer = self._compact()
        if n >= len(buffer):
            self._keep(b"")
            return buffer
        self._keep(buffer[n:])
        return buffer[:n]

    # -- writing ---------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for sending; never blocks (``await drain()`` to wait for room).

        Raises ConnectionResetError once the connection is lost.
        """
        if self._lost:
            raise ConnectionResetError("connection lost")
        self.bytes_out += len(data)
        if self._clock is not None:
            self._clock.replied()
        self.transport.write(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    async def drain(self) -> None:
        """Wait while the transport's buffer is above its high-water mark."""
        while self._write_paused:
            if self._lost:
                break
            await _wait(self, SENDING)
        if self._lost:
            raise ConnectionResetError("connection lost")

    def can_write_eof(self) -> bool:
        return bool(self.transport.can_write_eof())

    def write_eof(self) -> None:
        """Send end of file (a TCP FIN); reading may go on."""
        if not self._lost and not self.transport.is_closing():
            self.transport.write_eof()

    def is_closing(self) -> bool:
        return self._lost or bool(self.transport.is_closing())

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    async def wait_closed(self) -> None:
        while not self._lost:
            await _wait(self, 0)

    # -- the socket calls of the server's hooks ----------------------------

    def close(self) -> None:
        """Close once what was written has been sent (``abort()`` to drop it)."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def shutdown(self, how: int) -> None:
        if how == socket.SHUT_RD:
            return
        if self.transport is not None and self.transport.can_write_eof():
            self.write_eof()
        if how == socket.SHUT_RDWR:
            self.close()

    def fileno(self) -> int:
        sock = self.get_extra_info("socket")
        return -1 if sock is None else int(sock.fileno())

    def getpeername(self) -> Any:
        return self.get_extra_info("peername")

    def getsockname(self) -> Any:
        return self.get_extra_info("sockname")

    def setsockopt(self, *args: Any) -> None:
        self.get_extra_info("socket").setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        return self.get_extra_info("socket").getsockopt(*args)

    def __repr__(self) -> str:
        return f"<AsyncStream {self.client_address!r} bytes_in={self.bytes_in}>"


class DatagramReply:
    """A datagram handler's way back to its client (``self.socket``, ``self.writer``).

    ``sendto(data, address)`` as on a socket, ``write(data)`` to the client;
    ``bytes_out`` counts what was sent.
    """

    __slots__ = ("_send", "bytes_out", "client_address", "sent")

    def __init__(self, send: Callable[[Any, Any], object], client_address: Any) -> None:
        self._send = send
        self.client_address = client_address
        self.bytes_out = 0
        self.sent = False

    def sendto(self, data: Any, *args: Any) -> int:
        address = args[-1]
        self._send(data, address)
        self.sent = True
        size = len(data)
        self.bytes_out += size
        return size

    def write(self, data: Any) -> None:
        self._send(data, self.client_address)
        self.sent = True
        self.bytes_out += len(data)
