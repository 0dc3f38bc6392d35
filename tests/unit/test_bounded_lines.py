"""The bounded line reader, fed untrusted bytes by Hypothesis.

Whatever bytes arrive, in whatever pieces, ``readline()`` returns exactly the
lines a plain reader would, as long as each fits in the limit, and raises
LineTooLongError at the first that does not, having read no more than the
limit + 1 bytes of it.
"""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portico.errors import LineTooLongError
from portico.server.handlers import bounded_lines

pytestmark = pytest.mark.timeout(60)


class Pieces(io.RawIOBase):
    """A raw stream that hands its bytes over in the given pieces, as a socket would."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = [piece for piece in pieces if piece]
        self.taken = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self.pieces:
            return 0
        piece = self.pieces[0]
        count = min(len(piece), len(buffer))
        buffer[:count] = piece[:count]
        self.pieces[0] = piece[count:]
        if not self.pieces[0]:
            self.pieces.pop(0)
        self.taken += count
        return count


def reader(pieces: list[bytes], limit: int, buffer_size: int) -> tuple[Pieces, io.BufferedReader]:
    raw = Pieces(pieces)
    return raw, bounded_lines(io.BufferedReader(raw, buffer_size), limit, buffer_size)


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=600).map(lambda b: b.replace(b"\r", b"\n")),
    cuts=st.lists(st.integers(min_value=1, max_value=80), max_size=20),
    limit=st.integers(min_value=1, max_value=120),
    buffer_size=st.sampled_from([1, 7, 64, 8192]),
)
def test_lines_match_a_plain_reader_until_one_is_too_long(
    data: bytes, cuts: list[int], limit: int, buffer_size: int
) -> None:
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(data[start : start + cut])
        start += cut
    pieces.append(data[start:])
    expected = io.BytesIO(data).readlines()
    raw, bounded = reader(pieces, limit, buffer_size)
    got: list[bytes] = []
    for line in expected:
        if len(line) > limit:
            with pytest.raises(LineTooLongError):
                bounded.readline()
            consumed_before = sum(map(len, got))
            # Never more than the limit + 1 bytes of the long line, plus one buffer ahead.
            assert raw.taken <= consumed_before + limit + 1 + buffer_size
            return
        got.append(bounded.readline())
    assert got == expected
    assert bounded.readline() == b""


def test_iteration_is_bounded_too() -> None:
    _, bounded = reader([b"ok\n", b"x" * 50], 10, 8192)
    lines = iter(bounded)
    assert next(lines) == b"ok\n"
    with pytest.raises(LineTooLongError):
        next(lines)
