"""Fuzz the PROXY protocol parser (portico.net.proxy_protocol).

Coverage-guided with atheris when it is installed (libFuzzer flags and a
corpus directory pass through):

    .venv/bin/pip install atheris
    .venv/bin/python tests/fuzz/fuzz_proxy_protocol.py -max_total_time=300 [corpus_dir]

Otherwise, or with --hypothesis, Hypothesis generates the inputs, bounded in
count and in time:

    .venv/bin/python tests/fuzz/fuzz_proxy_protocol.py --hypothesis --examples 100000 --seconds 600

The property, for any bytes: parse() returns None, returns a header, or raises
ProxyProtocolError, nothing else; an error stays an error however many bytes
follow; a header takes no more bytes than it was given, parses the same from
exactly its own bytes and not at all from one byte fewer, and re-encodes to
bytes that parse to the same header (to the very same bytes for a v2 header
with addresses); parse_datagram() agrees with parse().

The name does not start with ``test_``, so pytest does not collect this file;
tests/unit/test_proxy_protocol.py runs it for a few seconds so that it cannot rot.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))  # fuzzing.py, beside it, however it is loaded
import fuzzing

# The inputs start with one of these (chosen by the first byte) so that the
# fuzzer spends its time past the signature, where the parser's decisions are.
STARTS = (
    b"",
    b"\r\n\r\n\x00\r\nQUIT\n",
    b"\r\n\r\n\x00\r\nQUIT\n\x21",
    b"\r\n\r\n\x00\r\nQUIT\n\x20",
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00",
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x21\x00",
    b"PROXY ",
    b"PROXY TCP4 ",
    b"PROXY TCP6 ",
    b"PROXY UNKNOWN",
)


def shaped(data: bytes) -> bytes:
    """The fuzzer's raw bytes, with the first one choosing a start from STARTS."""
    if not data:
        return data
    return STARTS[data[0] % len(STARTS)] + data[1:]


def check(pp: ModuleType, data: bytes) -> None:
    """Raise AssertionError (or whatever escapes the parser) when the property fails."""
    try:
        header = pp.parse(data)
    except pp.ProxyProtocolError:
        _check_error_is_final(pp, data)
    else:
        if header is not None:
            _check_header(pp, data, header)
    _check_datagram(pp, data)


def _check_error_is_final(pp: ModuleType, data: bytes) -> None:
    try:
        pp.parse(data + data)
    except pp.ProxyProtocolError:
        return
    raise AssertionError(f"{data!r} is refused, but not when more bytes follow")


def _check_header(pp: ModuleType, data: bytes, header: Any) -> None:
    assert 0 < header.length <= len(data), f"length {header.length} of {len(data)} bytes"
    own = data[: header.length]
    assert pp.parse(own) == header, "the header's own bytes parse differently"
    assert pp.parse(own[:-1]) is None, "a header one byte short is accepted or refused"
    again = reencode(pp, header)
    parsed_again = pp.parse(again)
    assert parsed_again is not None, f"{again!r} (re-encoded) is incomplete"
    assert essentials(parsed_again) == essentials(header), f"{header} became {parsed_again}"
    if header.version == 2 and header.source is not None:
        assert again == own, f"{own!r} re-encodes as {again!r}"


def _check_datagram(pp: ModuleType, data: bytes) -> None:
    try:
        header, payload = pp.parse_datagram(data)
    except pp.ProxyProtocolError:
        return
    assert header == pp.parse(data, versions="v2"), "parse_datagram and parse disagree"
    assert payload == data[header.length :], "the payload is not what follows the header"


def reencode(pp: ModuleType, header: Any) -> bytes:
    """The header written back by the module's own encoders."""
    if header.version == 1:
        return bytes(pp.encode_v1(header.source, header.destination))
    return bytes(
        pp.encode_v2(
            header.source,
            header.destination,
            command=header.command,
            socket_type=header.socket_type,
            tlvs=header.tlvs,
        )
    )


def essentials(header: Any) -> tuple[object, ...]:
    """What a re-encoding must keep.

    The family byte is free when no address is given, and with it the
    checksum: a CRC32C TLV must stay where it was, not keep its value.
    """
    addressed = header.source is not None
    crc_type = 0x03  # PP2_TYPE_CRC32C
    return (
        header.version,
        header.command,
        header.source,
        header.destination,
        tuple((kind, b"" if kind == crc_type else value) for kind, value in header.tlvs),
        header.family if addressed else None,
        header.socket_type if addressed else None,
    )


# --- atheris ----------------------------------------------------------------------


def run_atheris(libfuzzer_args: list[str]) -> None:
    import atheris  # noqa: PLC0415 (optional: only this mode needs it)

    with atheris.instrument_imports(include=["portico.net.proxy_protocol"]):
        from portico.net import proxy_protocol  # noqa: PLC0415 (must be instrumented)

    atheris.Setup([sys.argv[0], *libfuzzer_args], lambda data: check(proxy_protocol, shaped(data)))
    atheris.Fuzz()


# --- Hypothesis -------------------------------------------------------------------


def run_hypothesis(examples: int, seconds: float) -> int:
    """Check ``examples`` inputs, or as many as fit in ``seconds``; the number checked."""
    from portico.net import proxy_protocol  # noqa: PLC0415 (atheris mode must import it later)

    return fuzzing.run_hypothesis(
        _inputs(proxy_protocol), lambda data: check(proxy_protocol, data), examples, seconds
    )


def _inputs(pp: ModuleType) -> Any:
    """Raw bytes, bytes after a chosen start, and valid headers with a few bytes changed."""
    from hypothesis import strategies as st  # noqa: PLC0415

    raw = st.binary(max_size=400)
    started = st.builds(lambda start, rest: start + rest, st.sampled_from(STARTS), raw)
    mutated = st.builds(_mutate, _valid_headers(pp, st), st.lists(_edits(st), max_size=3))
    return st.one_of(raw, started, mutated)


def _valid_headers(pp: ModuleType, st: Any) -> Any:
    ports = st.integers(0, 0xFFFF)
    ipv4 = st.tuples(st.ip_addresses(v=4).map(str), ports)
    ipv6 = st.tuples(st.ip_addresses(v=6).map(str), ports)
    pairs = st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6))
    paths = st.binary(max_size=108)
    endpoints = st.one_of(pairs, st.tuples(paths, paths), st.just((None, None)))
    tlvs = st.lists(st.tuples(st.integers(0, 0xFF), st.binary(max_size=40)), max_size=4)
    v1 = st.builds(lambda pair: pp.encode_v1(*pair), st.one_of(pairs, st.just((None, None))))
    v2 = st.builds(
        lambda pair, command, kind, extra, crc: pp.encode_v2(
            *pair, command=command, socket_type=kind, tlvs=_plausible(pp, extra), crc32c=crc
        ),
        endpoints,
        st.sampled_from(["PROXY", "LOCAL"]),
        st.sampled_from([socket.SOCK_STREAM, socket.SOCK_DGRAM, None]),
        tlvs,
        st.booleans(),
    )
    return st.one_of(v1, v2)


def _plausible(pp: ModuleType, tlvs: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    # A CRC32C TLV must hold 4 bytes for the encoder to fill it in.
    return [(kind, value) for kind, value in tlvs if kind != pp.PP2_TYPE_CRC32C]


def _edits(st: Any) -> Any:
    return st.tuples(st.sampled_from(["flip", "insert", "delete", "cut"]), st.integers(0, 4096))


def _mutate(data: bytes, edits: list[tuple[str, int]]) -> bytes:
    for action, where in edits:
        if not data:
            break
        at = where % len(data)
        if action == "flip":
            data = data[:at] + bytes([data[at] ^ (1 << (where % 8))]) + data[at + 1 :]
        elif action == "insert":
            data = data[:at] + bytes([where % 256]) + data[at:]
        elif action == "delete":
            data = data[:at] + data[at + 1 :]
        else:
            data = data[:at]
    return data


# --- command line -----------------------------------------------------------------


def main(argv: list[str]) -> int:
    return fuzzing.main(
        argv,
        name="fuzz_proxy_protocol",
        description=__doc__.split("\n\n")[0],
        run_atheris=run_atheris,
        run_hypothesis=run_hypothesis,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
