"""The errors portico raises on purpose, typed by who is at fault.

Every error derives from :class:`PorticoError`.  Where callers already expect
a builtin (a listen failure is an ``OSError``, a bad setting a ``ValueError``)
the error derives from that builtin too, so ``except OSError`` keeps working.
Each error may carry a ``hint``: one sentence on what to do about it.
"""

from __future__ import annotations

__all__ = [
    "AddressInUseError",
    "stops_the_process",
    "ConfigurationError",
    "ConnectionLimitError",
    "ConnectionTimeoutError",
    "LineTooLongError",
    "ListenerError",
    "PorticoError",
]


class PorticoError(Exception):
    """Root of every error that portico raises on purpose."""

    hint: str = ""

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} ({self.hint})" if self.hint else text


class ConfigurationError(PorticoError, ValueError):
    """A setting, address or handler name given by the user is not usable."""


class ListenerError(PorticoError, OSError):
    """A listening socket could not be opened, or failed while serving.

    ``errno`` and ``strerror`` are those of the underlying ``OSError``.
    """

    def __init__(self, errno: int | None, message: str, *, hint: str = "") -> None:
        super().__init__(errno, message)
        self.hint = hint

    def __str__(self) -> str:
        text = self.strerror or ""
        return f"{text} ({self.hint})" if self.hint else text


class AddressInUseError(ListenerError):
    """Another live process already listens on the address."""


class ConnectionLimitError(PorticoError):
    """A client went past a limit of its connection; the connection is closed.

    Raised in the handler where it reads or writes; the server logs one line
    (which limit, which peer) instead of a traceback.  ``limit`` names the
    setting that fired.
    """

    limit = "limit"


class LineTooLongError(ConnectionLimitError, ValueError):
    """A line longer than ``max_line_length`` bytes, newline included."""

    limit = "max_line_length"

    def __init__(self, maximum: int) -> None:
        super().__init__(f"a line longer than {maximum} bytes (max_line_length)")
        self.maximum = maximum


class ConnectionTimeoutError(ConnectionLimitError, TimeoutError):
    """A per-connection time limit fired where the handler waited on its client.

    ``limit`` names it: ``first_byte_timeout``, ``idle_timeout``,
    ``connection_timeout``, ``min_receive_rate`` or ``send_timeout``.  A
    ``TimeoutError``, so code that handles socket timeouts handles it too.
    """

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(f"{message} ({limit})")
        self.limit = limit


def stops_the_process(exc: BaseException) -> bool:
    """Whether an exception from a handler must end the server, not just its request.

    SystemExit and KeyboardInterrupt do, as does whatever portico raises to
    stop (a second stop signal, a task being killed: ``portico_stops``), and
    greenlet's GreenletExit (a task killed at a drain's deadline).  Any other
    BaseException a handler raises is its request's failure: logged, the
    connection closed, the server serving on.
    """
    if isinstance(exc, (SystemExit, KeyboardInterrupt)) or getattr(exc, "portico_stops", False):
        return True
    return type(exc).__name__ == "GreenletExit"  # not imported: greenlet is optional
