"""Fuzz the bounded line reader (``max_line_length``, portico.server.handlers).

Untrusted bytes arrive in arbitrary pieces, as a socket delivers them, and a
``StreamRequestHandler`` with ``max_line_length`` set reads them through its
``rfile`` (the very path a handler takes: ``setup()`` makes the buffered
reader with ``connection.makefile("rb", rbufsize)`` and bounds it).  The
handler mixes ``readline()``, iteration, ``readline(size)`` and ``read(size)``.

Coverage-guided with atheris when it is installed (libFuzzer flags and a
corpus directory pass through):

    .venv/bin/pip install atheris
    .venv/bin/python tests/fuzz/fuzz_line_reader.py -max_total_time=300 [corpus_dir]

Otherwise, or with --hypothesis, Hypothesis generates the inputs, bounded in
count and in time:

    .venv/bin/python tests/fuzz/fuzz_line_reader.py --hypothesis --examples 100000 --seconds 600

The property, for any bytes, pieces, maximum and buffer size, step by step
against a plain reader of the same bytes: ``readline()`` and iteration return
exactly the plain reader's next line when it is at most the maximum (newline
included), and raise LineTooLongError exactly when it is longer;
``readline(size)`` and ``read(size)`` return what the plain reader returns
(the stdlib's meaning, no error); nothing else escapes; the bytes returned,
put together, are the input's first bytes, all of them at the end; end of
input stays end of input.  Memory: after a call returns, the reader holds at
most one buffer of bytes taken from the socket and not yet returned, and
LineTooLongError comes after taking at most the maximum + 1 bytes of the long
line, plus one buffer.

The name does not start with ``test_``, so pytest does not collect this file;
tests/unit/test_line_reader_fuzz.py runs it for a few seconds so that it cannot rot.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))  # fuzzing.py, beside it, however it is loaded
import fuzzing

# rbufsize values a handler may set; -1 is the stdlib's default (io.DEFAULT_BUFFER_SIZE).
BUFFER_SIZES = (-1, 1, 2, 3, 7, 16, 64, 4096)
# What the handler does next: (operation, size); the ops past the list are "line".
OPERATIONS = ("line", "next", "line_none", "line_size", "read")


@dataclass(frozen=True)
class Case:
    """One input: the bytes, how the socket cuts them, the limit, the handler's reads."""

    data: bytes
    pieces: tuple[int, ...]  # piece sizes, cycled; () delivers everything at once
    maximum: int  # max_line_length
    rbufsize: int  # StreamRequestHandler.rbufsize (-1: io.DEFAULT_BUFFER_SIZE)
    ops: tuple[tuple[str, int], ...] = ()

    @property
    def buffer_size(self) -> int:
        return io.DEFAULT_BUFFER_SIZE if self.rbufsize < 0 else self.rbufsize


class PiecesIO(io.RawIOBase):
    """The socket's side of ``makefile("rb")``: the bytes in the given pieces, then EOF."""

    def __init__(self, data: bytes, sizes: tuple[int, ...]) -> None:
        self.pieces = list(cut(data, sizes))
        self.taken = 0  # bytes handed to the reader so far

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.pieces:
            return 0
        piece = self.pieces[0]
        count = min(len(piece), len(buffer))
        buffer[:count] = piece[:count]
        if count == len(piece):
            self.pieces.pop(0)
        else:
            self.pieces[0] = piece[count:]
        self.taken += count
        return count


def cut(data: bytes, sizes: tuple[int, ...]) -> list[bytes]:
    """``data`` in pieces of the given sizes, cycled (all of it in one piece without sizes)."""
    if not sizes:
        return [data] if data else []
    pieces, start, index = [], 0, 0
    while start < len(data):
        size = sizes[index % len(sizes)]
        pieces.append(data[start : start + size])
        start += size
        index += 1
    return pieces


class FakeConnection:
    """What a StreamRequestHandler needs of its socket: ``makefile`` and ``sendall``."""

    def __init__(self, raw: PiecesIO) -> None:
        self.raw = raw

    def makefile(self, mode: str, buffering: int = -1) -> Any:
        assert mode == "rb", f"the handler asked for makefile({mode!r})"
        if buffering == 0:  # as socket.makefile: unbuffered is the raw stream itself
            return self.raw
        return io.BufferedReader(self.raw, io.DEFAULT_BUFFER_SIZE if buffering < 0 else buffering)

    def sendall(self, data: bytes) -> None:
        pass


@dataclass
class Step:
    """What one read returned (or raised), and the reader's position in the socket then."""

    op: tuple[str, int]
    result: bytes | BaseException
    taken: int


def handler_class(handlers: ModuleType, case: Case) -> type[Any]:
    """A StreamRequestHandler that performs ``case.ops`` on its rfile and records each step."""
    from portico.errors import LineTooLongError  # noqa: PLC0415 (after atheris instruments)

    base: Any = handlers.StreamRequestHandler

    class Reader(base):  # type: ignore[misc]
        max_line_length = case.maximum
        rbufsize = case.rbufsize
        steps: list[Step]

        def handle(self) -> None:
            self.steps = []
            raw = self.connection.raw
            # Past the given ops: readline() until the end, or one read more than the lines.
            limit = len(case.ops) + case.data.count(b"\n") + 2
            for index in range(limit):
                op = case.ops[index] if index < len(case.ops) else ("line", 0)
                try:
                    result: bytes | BaseException = perform(self.rfile, op)
                except LineTooLongError as exc:
                    self.steps.append(Step(op, exc, raw.taken))
                    return  # the connection is done: a server closes it
                self.steps.append(Step(op, result, raw.taken))
                if not result and is_bounded(op) and index >= len(case.ops):
                    return

    return Reader


def perform(rfile: Any, op: tuple[str, int]) -> bytes:
    name, size = op
    if name == "line":
        return bytes(rfile.readline())
    if name == "next":
        return bytes(next(rfile, b""))
    if name == "line_none":
        return bytes(rfile.readline(None))
    if name == "line_size":
        return bytes(rfile.readline(size))
    return bytes(rfile.read(size))


def plain(reference: io.BytesIO, op: tuple[str, int]) -> bytes:
    """What an unbounded reader returns for ``op``: the stdlib's meaning of each call."""
    name, size = op
    if name == "line_size":
        return reference.readline(size)
    if name == "read":
        return reference.read(size)
    return reference.readline()


def is_bounded(op: tuple[str, int]) -> bool:
    """Whether ``op`` is a readline() that max_line_length bounds (no size of its own)."""
    name, size = op
    return name in ("line", "next", "line_none") or (name == "line_size" and size < 0)


def check(handlers: ModuleType, case: Case) -> None:
    """Raise AssertionError (or whatever escapes the reader) when the property fails."""
    from portico.errors import LineTooLongError  # noqa: PLC0415 (after atheris instruments)

    raw = PiecesIO(case.data, case.pieces)
    handler = handler_class(handlers, case)(FakeConnection(raw), ("fuzz", 0), None)
    reference = io.BytesIO(case.data)
    returned = bytearray()
    buffer_size = case.buffer_size
    for step in handler.steps:
        consumed_before = reference.tell()
        expected = plain(reference, step.op)
        bounded = is_bounded(step.op)
        if isinstance(step.result, BaseException):
            assert bounded, f"{step.op} raised {step.result!r}: only unsized readline() may"
            assert isinstance(step.result, LineTooLongError)
            assert step.result.maximum == case.maximum
            assert len(expected) > case.maximum, (
                f"LineTooLongError for a line of {len(expected)} bytes (maximum {case.maximum})"
            )
            # Never more than the maximum + 1 bytes of the long line, plus one buffer ahead.
            bound = consumed_before + case.maximum + 1 + buffer_size
            assert step.taken <= bound, f"took {step.taken} bytes from the socket, bound {bound}"
            return
        assert not (bounded and len(expected) > case.maximum), (
            f"{step.op} returned a line of {len(step.result)} bytes past the maximum "
            f"{case.maximum} ({len(expected)} in the input)"
        )
        assert step.result == expected, f"{step.op} returned {step.result!r}, not {expected!r}"
        returned += step.result
        held = step.taken - len(returned)
        assert 0 <= held <= buffer_size, f"holds {held} unreturned bytes, buffer {buffer_size}"
    assert bytes(returned) == case.data[: len(returned)], "the lines are not the input's bytes"
    assert len(returned) == len(case.data), f"returned {len(returned)} of {len(case.data)} bytes"
    final = handler.steps[-1] if handler.steps else None
    assert final is not None and final.result == b"", "the end of the input was never reported"


# --- atheris ----------------------------------------------------------------------


def from_fuzzer(atheris: Any, data: bytes) -> Case:
    """A Case from the fuzzer's bytes: a few header fields, then the input itself."""
    provider = atheris.FuzzedDataProvider(data)
    maximum = provider.ConsumeIntInRange(1, 80)
    if provider.ConsumeBool():
        maximum = provider.ConsumeIntInRange(1, 70_000)  # past the default buffer too
    rbufsize = BUFFER_SIZES[provider.ConsumeIntInRange(0, len(BUFFER_SIZES) - 1)]
    pieces = tuple(
        provider.ConsumeIntInRange(1, 200) for _ in range(provider.ConsumeIntInRange(0, 6))
    )
    ops = tuple(
        (
            OPERATIONS[provider.ConsumeIntInRange(0, len(OPERATIONS) - 1)],
            provider.ConsumeIntInRange(-1, 300),
        )
        for _ in range(provider.ConsumeIntInRange(0, 8))
    )
    body = provider.ConsumeBytes(provider.remaining_bytes())
    if body[:1] == b"\xff":  # one long run: a line far past the maximum, cheaply
        body = body[1:2] * (maximum + len(body) * 64) + body[2:]
    return Case(body, pieces, maximum, rbufsize, ops)


def run_atheris(libfuzzer_args: list[str]) -> None:
    import atheris  # noqa: PLC0415 (optional: only this mode needs it)

    with atheris.instrument_imports(include=["portico.server.handlers"]):
        from portico.server import handlers  # noqa: PLC0415 (must be instrumented)

    atheris.Setup(
        [sys.argv[0], *libfuzzer_args], lambda data: check(handlers, from_fuzzer(atheris, data))
    )
    atheris.Fuzz()


# --- Hypothesis -------------------------------------------------------------------


def run_hypothesis(examples: int, seconds: float) -> int:
    """Check ``examples`` inputs, or as many as fit in ``seconds``; the number checked."""
    from portico.server import handlers  # noqa: PLC0415 (atheris mode must import it later)

    return fuzzing.run_hypothesis(cases(), lambda case: check(handlers, case), examples, seconds)


def cases() -> Any:
    """Cases whose lines fall on both sides of the maximum, in all sorts of pieces.

    Line lengths and sizes are drawn relative to the maximum (a few bytes, near it,
    up to three times it) by fixed strategies, then scaled: no strategy is built
    per example, which keeps Hypothesis several times faster than ``flatmap``.
    """
    from hypothesis import strategies as st  # noqa: PLC0415

    maximum = st.one_of(st.integers(1, 80), st.sampled_from([8191, 8192, 8193, 65536]))
    relative = st.tuples(st.sampled_from(RELATIVE), st.integers(-2, 12))
    line = st.tuples(
        relative,
        st.sampled_from([b"a", b"\r", b"\x00", b"\xff"]),
        st.sampled_from([b"\n", b"\n", b"\r\n", b""]),
    )
    data = st.one_of(st.binary(max_size=600), st.lists(line, max_size=6))
    return st.builds(
        _case,
        maximum,
        data,
        st.lists(st.integers(1, 300), max_size=6),
        st.sampled_from(BUFFER_SIZES),
        st.lists(st.tuples(st.sampled_from(OPERATIONS), relative), max_size=8),
    )


# How a drawn (kind, n) becomes a length for a maximum m: n itself (small), m + n (near
# the maximum, n in -2..2 mostly), or n quarters of m (up to three times it).
RELATIVE = ("small", "near", "quarters")


def scaled(maximum: int, relative: tuple[str, int]) -> int:
    kind, n = relative
    if kind == "small":
        return max(-1, n)  # read() takes no size below -1
    if kind == "near":
        return max(-1, maximum + n)
    return max(-1, maximum * n // 4)


def _case(
    maximum: int,
    data: bytes | list[tuple[tuple[str, int], bytes, bytes]],
    pieces: list[int],
    rbufsize: int,
    ops: list[tuple[str, tuple[str, int]]],
) -> Case:
    if not isinstance(data, bytes):
        data = b"".join(fill * max(0, scaled(maximum, size)) + end for size, fill, end in data)
    sized = tuple((name, scaled(maximum, size)) for name, size in ops)
    return Case(data, tuple(pieces), maximum, rbufsize, sized)


# --- command line -----------------------------------------------------------------


def main(argv: list[str]) -> int:
    return fuzzing.main(
        argv,
        name="fuzz_line_reader",
        description=__doc__.split("\n\n")[0],
        run_atheris=run_atheris,
        run_hypothesis=run_hypothesis,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
