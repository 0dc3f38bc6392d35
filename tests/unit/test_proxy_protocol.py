"""The PROXY protocol parser against bytes written out from the spec: whole, byte by byte,
malformed in every field, and round-tripped and fuzzed with Hypothesis.

The vectors are built here field by field from HAProxy's doc/proxy-protocol.txt,
never with the module's encoders, which are checked against them instead.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
from pathlib import Path

import pytest
from fuzz_runs import run_briefly
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portico.errors import PorticoError
from portico.net.proxy_protocol import (
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NETNS,
    PP2_TYPE_NOOP,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    ProxyHeader,
    ProxyProtocolError,
    SslInfo,
    crc32c,
    encode_v1,
    encode_v2,
    parse,
    parse_datagram,
)

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
FUZZ_TARGET = ROOT / "tests" / "fuzz" / "fuzz_proxy_protocol.py"
STREAM, DGRAM = socket.SOCK_STREAM, socket.SOCK_DGRAM
INET, INET6, UNIX = socket.AF_INET, socket.AF_INET6, socket.AF_UNIX
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The v2 signature as the spec's table spells it, not the module's constant.
SIG = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])
PROXY, LOCAL = 0x21, 0x20  # version 2 in the high nibble, the command in the low one


def v2(ver_cmd: int, fam: int, block: bytes) -> bytes:
    """A v2 header from its fields: the 16-byte part, then the block it announces."""
    return SIG + bytes([ver_cmd, fam, len(block) >> 8, len(block) & 0xFF]) + block


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind, len(value) >> 8, len(value) & 0xFF]) + value


def crc32c_bitwise(data: bytes) -> int:
    """RFC 4960 appendix B, one bit at a time: a reference that shares nothing with the module."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


# 192.168.0.1:56324 -> 192.168.0.11:443, the spec's example; ports in network order.
IPV4_BLOCK = bytes([192, 168, 0, 1, 192, 168, 0, 11, 0xDC, 0x04, 0x01, 0xBB])
IPV4_PAIR = (("192.168.0.1", 56324), ("192.168.0.11", 443))
# 2001:db8::1:65535 -> ::ffff:192.0.2.1:0
IPV6_BLOCK = (
    bytes.fromhex("20010db8000000000000000000000001")
    + bytes.fromhex("00000000000000000000ffffc0000201")
    + bytes([0xFF, 0xFF, 0x00, 0x00])
)
IPV6_PAIR = (("2001:db8::1", 65535), ("::ffff:192.0.2.1", 0))
# A path socket and an abstract one (leading NUL), each NUL-padded to 108 bytes.
UNIX_BLOCK = b"/run/app.sock".ljust(108, b"\0") + b"\0abstract".ljust(108, b"\0")
UNIX_PAIR = (b"/run/app.sock", b"\0abstract")
FFFF = ":".join(["ffff"] * 8)  # the longest IPv6 text, 39 characters

SSL_VALUE = (
    bytes([0x07])  # PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS
    + bytes([0, 0, 0, 0])  # verify: 0, the certificate was verified
    + tlv(0x21, b"TLSv1.3")
    + tlv(0x22, "client.exämple".encode())
    + tlv(0x23, b"TLS_AES_128_GCM_SHA256")
    + tlv(0x24, b"RSA-SHA256")
    + tlv(0x25, b"RSA2048")
    + tlv(0xE5, b"own")
)
ALL_TLVS = (
    tlv(0x01, b"h2")
    + tlv(0x02, b"example.com")
    + tlv(0x05, b"\x00\x01unique")
    + tlv(0x04, b"")
    + tlv(0x04, b"\x00\x00\x00")
    + tlv(0x20, SSL_VALUE)
    + tlv(0x30, b"blue")
    + tlv(0xE0, b"custom")
    + tlv(0xE0, b"custom again")
)
ALL_TLV_PAIRS = (
    (0x01, b"h2"),
    (0x02, b"example.com"),
    (0x05, b"\x00\x01unique"),
    (0x04, b""),
    (0x04, b"\x00\x00\x00"),
    (0x20, SSL_VALUE),
    (0x30, b"blue"),
    (0xE0, b"custom"),
    (0xE0, b"custom again"),
)
# A CRC32C TLV, its value computed by hand once (and checked below with crc32c_bitwise).
CRC_HEADER = v2(PROXY, 0x11, IPV4_BLOCK + tlv(0x03, bytes.fromhex("1c1ae9c6")))
CRC_LOCAL = v2(LOCAL, 0x00, tlv(0x03, bytes.fromhex("a9b87e8f")))


def header(version, command, family, socket_type, pair=(None, None), tlvs=()) -> ProxyHeader:
    return ProxyHeader(version, command, family, socket_type, pair[0], pair[1], tuple(tlvs))


def v1_header(family, pair) -> ProxyHeader:
    return header(1, "PROXY", family, STREAM, pair)


UNKNOWN_V1 = header(1, "PROXY", None, None)
LOCAL_HEADER = header(2, "LOCAL", None, None)

VALID = [
    pytest.param(
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        v1_header(INET, IPV4_PAIR),
        id="v1-tcp4-spec-example",
    ),
    pytest.param(
        b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        v1_header(INET, (("255.255.255.255", 65535), ("255.255.255.255", 65535))),
        id="v1-tcp4-longest",
    ),
    pytest.param(
        b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n",
        v1_header(INET, (("0.0.0.0", 0), ("0.0.0.0", 0))),
        id="v1-tcp4-zeros",
    ),
    pytest.param(
        b"PROXY TCP6 2001:db8::1 2001:DB8:0:0::2 1 65535\r\n",
        v1_header(INET6, (("2001:db8::1", 1), ("2001:db8::2", 65535))),
        id="v1-tcp6",
    ),
    pytest.param(
        f"PROXY TCP6 {FFFF} {FFFF} 65535 65535\r\n".encode(),
        v1_header(INET6, ((FFFF, 65535), (FFFF, 65535))),
        id="v1-tcp6-longest",
    ),
    pytest.param(
        b"PROXY TCP6 ::ffff:192.0.2.1 ::1 80 8080\r\n",
        v1_header(INET6, (("::ffff:192.0.2.1", 80), ("::1", 8080))),
        id="v1-tcp6-ipv4-mapped",
    ),
    pytest.param(b"PROXY UNKNOWN\r\n", UNKNOWN_V1, id="v1-unknown"),
    pytest.param(
        f"PROXY UNKNOWN {FFFF} {FFFF} 65535 65535\r\n".encode(),  # 107 bytes: the worst case
        UNKNOWN_V1,
        id="v1-unknown-longest",
    ),
    pytest.param(b"PROXY UNKNOWN \x00\xff anything\tat all\r\n", UNKNOWN_V1, id="v1-unknown-junk"),
    pytest.param(
        v2(PROXY, 0x11, IPV4_BLOCK), header(2, "PROXY", INET, STREAM, IPV4_PAIR), id="v2-tcp4"
    ),
    pytest.param(
        v2(PROXY, 0x12, IPV4_BLOCK), header(2, "PROXY", INET, DGRAM, IPV4_PAIR), id="v2-udp4"
    ),
    pytest.param(
        v2(PROXY, 0x21, IPV6_BLOCK), header(2, "PROXY", INET6, STREAM, IPV6_PAIR), id="v2-tcp6"
    ),
    pytest.param(
        v2(PROXY, 0x22, IPV6_BLOCK), header(2, "PROXY", INET6, DGRAM, IPV6_PAIR), id="v2-udp6"
    ),
    pytest.param(
        v2(PROXY, 0x31, UNIX_BLOCK),
        header(2, "PROXY", UNIX, STREAM, UNIX_PAIR),
        id="v2-unix-stream",
    ),
    pytest.param(
        v2(PROXY, 0x32, UNIX_BLOCK),
        header(2, "PROXY", UNIX, DGRAM, UNIX_PAIR),
        id="v2-unix-dgram",
    ),
    pytest.param(v2(PROXY, 0x00, b""), header(2, "PROXY", None, None), id="v2-proxy-unspec"),
    pytest.param(
        v2(PROXY, 0x10, IPV4_BLOCK), header(2, "PROXY", INET, None), id="v2-ipv4-unspec-transport"
    ),
    pytest.param(v2(LOCAL, 0x00, b""), LOCAL_HEADER, id="v2-local-unspec"),
    pytest.param(v2(LOCAL, 0x11, IPV4_BLOCK), LOCAL_HEADER, id="v2-local-tcp4"),
    pytest.param(v2(LOCAL, 0x12, IPV4_BLOCK), LOCAL_HEADER, id="v2-local-udp4"),
    pytest.param(v2(LOCAL, 0x21, IPV6_BLOCK), LOCAL_HEADER, id="v2-local-tcp6"),
    pytest.param(v2(LOCAL, 0x22, IPV6_BLOCK), LOCAL_HEADER, id="v2-local-udp6"),
    pytest.param(v2(LOCAL, 0x31, UNIX_BLOCK), LOCAL_HEADER, id="v2-local-unix-stream"),
    pytest.param(v2(LOCAL, 0x32, UNIX_BLOCK), LOCAL_HEADER, id="v2-local-unix-dgram"),
    pytest.param(
        v2(PROXY, 0x11, IPV4_BLOCK + ALL_TLVS),
        header(2, "PROXY", INET, STREAM, IPV4_PAIR, ALL_TLV_PAIRS),
        id="v2-tcp4-every-tlv",
    ),
    pytest.param(
        v2(LOCAL, 0x00, ALL_TLVS),
        header(2, "LOCAL", None, None, tlvs=ALL_TLV_PAIRS),
        id="v2-local-tlvs",
    ),
    pytest.param(
        CRC_HEADER,
        header(2, "PROXY", INET, STREAM, IPV4_PAIR, [(0x03, bytes.fromhex("1c1ae9c6"))]),
        id="v2-tcp4-crc32c",
    ),
    pytest.param(
        CRC_LOCAL,
        header(2, "LOCAL", None, None, tlvs=[(0x03, bytes.fromhex("a9b87e8f"))]),
        id="v2-local-crc32c",
    ),
]
V2_PROXY_WITH_ADDRESSES = [p for p in VALID if p.id.startswith("v2-") and p.values[1].source]


def with_length(expected: ProxyHeader, data: bytes) -> ProxyHeader:
    return dataclasses.replace(expected, length=len(data))


def first_failure(data: bytes, **options) -> tuple[int, ProxyProtocolError]:
    """How many bytes it takes for ``parse`` to refuse ``data``, and what it said."""
    for size in range(1, len(data) + 1):
        try:
            assert parse(data[:size], **options) is None, f"a header from {data[:size]!r}"
        except ProxyProtocolError as error:
            return size, error
    raise AssertionError(f"{data!r} is never refused")


# --- what is accepted ----------------------------------------------------------------------


@pytest.mark.parametrize(("data", "expected"), VALID)
def test_a_valid_header_parses_and_leaves_the_rest(data: bytes, expected: ProxyHeader) -> None:
    assert parse(data) == with_length(expected, data)
    assert parse(data + b"GET / HTTP/1.1\r\n\r\n") == with_length(expected, data)
    assert parse(bytearray(data) + b"\r\n") == with_length(expected, data)
    assert parse(memoryview(data + b"PROXY ")) == with_length(expected, data)


@pytest.mark.parametrize(("data", "expected"), VALID)
def test_every_prefix_of_a_valid_header_asks_for_more(data: bytes, expected: ProxyHeader) -> None:
    for size in range(len(data)):
        assert parse(data[:size]) is None, f"{size} of {len(data)} bytes"
    assert parse(data) == with_length(expected, data)


def test_the_crc32c_known_answers() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    # RFC 3720, appendix B.4
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C
    for data, at in ((CRC_HEADER, 31), (CRC_LOCAL, 19)):
        zeroed = data[:at] + bytes(4) + data[at + 4 :]
        assert crc32c_bitwise(zeroed).to_bytes(4, "big") == data[at : at + 4]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_crc32c_agrees_with_the_bitwise_reference(data: bytes) -> None:
    assert crc32c(data) == crc32c_bitwise(data)


def test_the_tlv_properties() -> None:
    parsed = parse(v2(PROXY, 0x11, IPV4_BLOCK + ALL_TLVS))
    assert parsed is not None
    assert parsed.alpn == b"h2"
    assert parsed.authority == "example.com"
    assert parsed.unique_id == b"\x00\x01unique"
    assert parsed.netns == "blue"
    assert parsed.crc32c is None
    assert parsed.tlv(0xE0) == b"custom"  # the first of two
    assert parsed.tlv(PP2_TYPE_NOOP) == b""
    assert parsed.ssl == SslInfo(
        client=7,
        verify=0,
        version="TLSv1.3",
        cn="client.exämple",
        cipher="TLS_AES_128_GCM_SHA256",
        sig_alg="RSA-SHA256",
        key_alg="RSA2048",
        other=((0xE5, b"own"),),
    )
    assert parse(CRC_HEADER).crc32c == 0x1C1AE9C6


def test_a_header_without_tlvs_has_none_of_their_properties() -> None:
    parsed = parse(b"PROXY UNKNOWN\r\n")
    properties = [parsed.alpn, parsed.authority, parsed.unique_id, parsed.ssl, parsed.netns]
    assert properties == [None] * 5


@pytest.mark.parametrize(
    ("client", "verify", "flags"),
    [
        (0x01, 0, (True, False, False, False)),  # TLS, no certificate: verify 0 proves nothing
        (0x03, 0, (True, True, False, True)),
        (0x05, 0, (True, False, True, True)),
        (0x03, 19, (True, True, False, False)),  # presented, not verified
    ],
)
def test_the_ssl_client_flags(client: int, verify: int, flags: tuple[bool, ...]) -> None:
    value = bytes([client]) + verify.to_bytes(4, "big")
    ssl = parse(v2(PROXY, 0x11, IPV4_BLOCK + tlv(0x20, value))).ssl
    assert (ssl.client_ssl, ssl.client_cert_conn, ssl.client_cert_sess) == flags[:3]
    assert ssl.certificate_verified is flags[3]
    assert ssl.to_tlv() == (PP2_TYPE_SSL, value)


def test_a_datagram_gives_its_header_and_payload() -> None:
    data = v2(PROXY, 0x12, IPV4_BLOCK) + b"payload"
    assert parse_datagram(data) == (parse(data), b"payload")
    assert parse_datagram(v2(LOCAL, 0x00, b"")) == (with_length(LOCAL_HEADER, SIG + bytes(4)), b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (v2(PROXY, 0x12, IPV4_BLOCK)[:-1], "datagram of 27 bytes ends inside its v2 header"),
        (b"", "datagram of 0 bytes"),
        (b"PROXY UNKNOWN\r\npayload", "not a PROXY protocol v2 header"),
        (b"payload", "not a PROXY protocol header"),
    ],
)
def test_a_datagram_without_a_whole_v2_header_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ProxyProtocolError, match=message):
        parse_datagram(data)


@pytest.mark.parametrize("versions", ["auto", ("v1", "v2"), ["v2", "v1"], {"auto"}])
def test_both_versions_are_accepted_by_default_and_by_auto(versions: object) -> None:
    assert parse(b"PROXY UNKNOWN\r\n", versions=versions).version == 1
    assert parse(v2(LOCAL, 0x00, b""), versions=versions).version == 2


@pytest.mark.parametrize(
    ("data", "versions", "message"),
    [
        (v2(PROXY, 0x11, IPV4_BLOCK), "v1", r"not a PROXY protocol v1 header \(v2 is not accepted"),
        (v2(PROXY, 0x11, IPV4_BLOCK), ("v1",), "not a PROXY protocol v1 header"),
        (b"PROXY UNKNOWN\r\n", ("v2",), r"not a PROXY protocol v2 header \(v1 is not accepted"),
    ],
)
def test_a_version_not_accepted_fails_at_the_first_byte(
    data: bytes, versions: object, message: str
) -> None:
    size, error = first_failure(data, versions=versions)
    assert size == 1
    assert re.search(message, str(error))
    with pytest.raises(ProxyProtocolError, match=message):
        parse(data, versions=versions)


@pytest.mark.parametrize("versions", ["v3", (), ["v1", "2"], "V1"])
def test_an_unknown_version_name_is_a_programming_error(versions: object) -> None:
    with pytest.raises(ValueError, match="versions must be") as caught:
        parse(b"", versions=versions)
    assert not isinstance(caught.value, ProxyProtocolError)


def test_the_error_is_a_portico_error_and_a_value_error() -> None:
    with pytest.raises(ProxyProtocolError) as caught:
        parse(b"GET / HTTP/1.1\r\n")
    assert isinstance(caught.value, PorticoError)
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == "not a PROXY protocol header"


# --- what is refused, and how early -------------------------------------------------------

V1_LINE = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2"


INVALID = [
    pytest.param(b"GET / HTTP/1.1\r\n", 1, "not a PROXY protocol header", id="http"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01", 1, "not a PROXY protocol header", id="tls"),
    pytest.param(b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 1, "not a PROXY", id="lower-case-proxy"),
    pytest.param(b"PROXX TCP4", 5, r"v1 header: starts with b'PROXX', not b'PROXY'", id="proxx"),
    pytest.param(b"PROXYTCP4 ", 6, "v1 header: starts with", id="no-space-after-proxy"),
    pytest.param(b"PROXY  TCP4", 7, "protocol '' is not TCP4, TCP6 or UNKNOWN", id="v1-two-spaces"),
    pytest.param(b"PROXY tcp4 1.2.3.4", 7, "protocol 't' is not TCP4", id="lower-case-tcp4"),
    pytest.param(b"PROXY TCP5 1.2.3.4", 10, "protocol 'TCP5'", id="tcp5"),
    pytest.param(b"PROXY UDP4 1.2.3.4", 8, "protocol 'UD' is not", id="udp4"),
    pytest.param(b"PROXY UNKNOWNX\r\n", 14, "protocol 'UNKNOWNX'", id="unknownx"),
    pytest.param(
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        12,
        "source address is missing",
        id="v1-double-space",
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        20,
        "destination address is missing",
        id="v1-double-space-2",
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",
        30,
        "destination port is missing",
        id="v1-double-space-3",
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 80\r\n",
        len(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536"),
        "source port '65536' is outside 0-65535",
        id="port-65536",
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 80 99999\r\n",
        len(b"PROXY TCP4 1.2.3.4 5.6.7.8 80 99999"),
        "destination port '99999' is outside 0-65535",
        id="port-99999",
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 080 80\r\n",
        29,
        "source port '08' has a leading zero",
        id="port-080",
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 80\r\n",
        28,
        "source port '\\+' is not a decimal",
        id="port-sign",
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 0x50 80\r\n",
        29,
        "source port '0x' is not a decimal",
        id="port-hex",
    ),
    pytest.param(
        b"PROXY TCP4 ::1 ::1 1 2\r\n",
        12,
        "source address ':' is not an IPv4 address",
        id="ipv6-in-tcp4",
    ),
    pytest.param(
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        19,
        "source address '1.2.3.4' is not an IPv6 address",
        id="ipv4-in-tcp6",
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", 21, "'1.2.3.256' is not an IPv4", id="octet-256"
    ),
    pytest.param(
        b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", 20, "'01.2.3.4' is not an IPv4", id="ipv4-octal"
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", 17, "'1.2.3' is not an IPv4", id="ipv4-three-parts"
    ),
    pytest.param(b"PROXY TCP4 1111111111111111", 27, "is not an IPv4", id="ipv4-too-long"),
    pytest.param(b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", 19, "is not an IPv6", id="ipv6-scope"),
    pytest.param(
        b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", 29, "is not an IPv6", id="ipv6-nine-groups"
    ),
    pytest.param(
        V1_LINE + b" 3\r\n", len(V1_LINE) + 1, "followed by a space, not CRLF", id="v1-fifth-field"
    ),
    pytest.param(
        V1_LINE + b" \r\n", len(V1_LINE) + 1, "followed by a space", id="v1-trailing-space"
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        30,
        "TCP4 needs addresses and ports",
        id="v1-three-fields",
    ),
    pytest.param(b"PROXY TCP4\r\n", 12, "TCP4 needs addresses and ports", id="v1-no-fields"),
    pytest.param(V1_LINE + b"\n", len(V1_LINE) + 1, "LF without CR", id="v1-missing-cr"),
    pytest.param(b"PROXY UNKNOWN\n", 14, "LF without CR", id="v1-lf-only"),
    pytest.param(b"PROXY UNKNOWN x\ny\r\n", 16, "LF without CR", id="v1-lf-inside-unknown"),
    pytest.param(V1_LINE + b"\rGET", len(V1_LINE) + 2, "CR not followed by LF", id="v1-cr-only"),
    pytest.param(V1_LINE + b"\r\r\n", len(V1_LINE) + 2, "CR not followed by LF", id="v1-cr-cr-lf"),
    pytest.param(
        b"PROXY UNKNOWN " + b"x" * 94, 107, "no CRLF within the first 107 bytes", id="v1-108-bytes"
    ),
    pytest.param(
        b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n",
        107,
        "no CRLF within the first 107",
        id="v1-crlf-too-late",
    ),
    # v2: the fixed part fails at its byte; the rest once the length it announces is here
    pytest.param(v2(0x11, 0x11, IPV4_BLOCK), 13, "version 1 in byte 0x11", id="v2-version-1"),
    pytest.param(v2(0x01, 0x11, IPV4_BLOCK), 13, "version 0", id="v2-version-0"),
    pytest.param(v2(0x31, 0x11, IPV4_BLOCK), 13, "version 3", id="v2-version-3"),
    pytest.param(v2(0x22, 0x11, IPV4_BLOCK), 13, "command 2 is neither LOCAL", id="v2-command-2"),
    pytest.param(v2(0x2F, 0x11, IPV4_BLOCK), 13, "command 15", id="v2-command-15"),
    pytest.param(v2(PROXY, 0x41, IPV4_BLOCK), 14, "byte 0x41: address family 4", id="v2-family-4"),
    pytest.param(v2(PROXY, 0xF1, IPV4_BLOCK), 14, "address family 15", id="v2-family-15"),
    pytest.param(v2(PROXY, 0x13, IPV4_BLOCK), 14, "byte 0x13: transport 3", id="v2-transport-3"),
    pytest.param(
        v2(PROXY, 0x11, IPV4_BLOCK[:11]),
        16,
        r"address block of 11 bytes is too short for TCP over IPv4 \(12\)",
        id="v2-short-ipv4",
    ),
    pytest.param(
        v2(PROXY, 0x21, bytes(10)),
        16,
        r"v2 header: address block of 10 bytes is too short for TCP over IPv6 \(36\)",
        id="v2-short-ipv6",
    ),
    pytest.param(
        v2(PROXY, 0x31, IPV4_BLOCK), 16, r"too short for UNIX stream \(216\)", id="v2-0x31-short"
    ),
    pytest.param(
        v2(PROXY, 0x10, b""), 16, r"too short for IPv4 family, UNSPEC", id="v2-0x10-short"
    ),
    pytest.param(v2(LOCAL, 0x12, b""), 16, r"too short for UDP over IPv4", id="v2-local-short"),
    pytest.param(
        v2(PROXY, 0x11, IPV4_BLOCK + b"\x01\x00\x05h2"),
        33,
        "TLV 0x01 of 5 bytes runs 3 bytes past the end",
        id="v2-tlv-overrun",
    ),
    pytest.param(
        v2(PROXY, 0x11, IPV4_BLOCK + b"\x01\x00"),
        30,
        "2 bytes after the last TLV, too few for another",
        id="v2-tlv-cut",
    ),
    pytest.param(
        v2(LOCAL, 0x00, b"\x04"), 17, "1 bytes after the last TLV", id="v2-local-stray-byte"
    ),
    pytest.param(
        CRC_HEADER[:-1] + bytes([CRC_HEADER[-1] ^ 1]),
        len(CRC_HEADER),
        "CRC32C TLV says 0x1c1ae9c7, but the header's checksum is 0x1c1ae9c6",
        id="v2-bad-crc",
    ),
    pytest.param(
        CRC_HEADER[:16] + b"\x0a" + CRC_HEADER[17:],  # the checksum covers the addresses too
        len(CRC_HEADER),
        "CRC32C TLV says",
        id="v2-crc-of-other-address",
    ),
    pytest.param(
        v2(PROXY, 0x11, IPV4_BLOCK + tlv(0x03, b"abc")),
        34,
        "CRC32C TLV of 3 bytes, not 4",
        id="v2-crc-3-bytes",
    ),
    pytest.param(
        v2(LOCAL, 0x00, tlv(0x03, bytes(4)) + tlv(0x03, bytes(4))),
        30,
        "two TLVs of type 0x03",
        id="v2-two-crcs",
    ),
    pytest.param(
        v2(PROXY, 0x11, IPV4_BLOCK + tlv(0x02, b"a") + tlv(0x02, b"b")),
        36,
        "two TLVs of type 0x02",
        id="v2-two-authorities",
    ),
    pytest.param(
        v2(PROXY, 0x11, IPV4_BLOCK + tlv(0x01, b"h2") + tlv(0x01, b"h2")),
        38,
        "two TLVs of type 0x01",
        id="v2-two-alpns",
    ),
    pytest.param(
        v2(PROXY, 0x11, IPV4_BLOCK + tlv(0x02, b"\xff")),
        32,
        "authority TLV b'\\\\xff' is not utf-8",
        id="v2-authority-latin1",
    ),
    pytest.param(
        v2(PROXY, 0x11, IPV4_BLOCK + tlv(0x30, "blå".encode())),
        35,
        "netns TLV .* is not ascii",
        id="v2-netns-utf8",
    ),
    pytest.param(
        v2(PROXY, 0x11, IPV4_BLOCK + tlv(0x05, bytes(129))),
        160,
        "unique ID TLV of 129 bytes is longer than 128",
        id="v2-unique-id-129",
    ),
    pytest.param(
        v2(PROXY, 0x11, IPV4_BLOCK + tlv(0x20, bytes(4))),
        35,
        "SSL TLV of 4 bytes is shorter",
        id="v2-ssl-short",
    ),
    pytest.param(
        v2(PROXY, 0x11, IPV4_BLOCK + tlv(0x20, bytes(5) + b"\x21\x00\x09TLS")),
        42,
        "SSL TLV: TLV 0x21 of 9 bytes runs 6 bytes past the end",
        id="v2-ssl-sub-tlv-overrun",
    ),
    pytest.param(
        v2(PROXY, 0x11, IPV4_BLOCK + tlv(0x20, bytes(5) + tlv(0x22, b"a") + tlv(0x22, b"b"))),
        44,
        "SSL TLV has two cn sub-TLVs",
        id="v2-ssl-two-cns",
    ),
    pytest.param(
        v2(PROXY, 0x11, IPV4_BLOCK + tlv(0x20, bytes(5) + tlv(0x22, b"\xc3"))),
        40,
        "SSL cn .* is not utf-8",
        id="v2-ssl-cn-not-utf8",
    ),
    pytest.param(
        v2(PROXY, 0x11, IPV4_BLOCK + tlv(0x20, bytes(5) + tlv(0x21, "TLSv1.3é".encode()))),
        48,
        "SSL version .* is not ascii",
        id="v2-ssl-version-not-ascii",
    ),
    pytest.param(
        v2(PROXY, 0x11, IPV4_BLOCK + tlv(0x04, bytes(4096))),
        16,
        r"header longer than 4096 bytes \(a v2 header of 4127\)",
        id="v2-beyond-max-length",
    ),
    pytest.param(
        SIG + b"\x21\x11\xff\xff", 16, "header longer than 4096 bytes", id="v2-length-65535"
    ),
]


@pytest.mark.parametrize(("data", "fails_at", "message"), INVALID)
def test_an_invalid_header_fails_as_soon_as_it_can(
    data: bytes, fails_at: int, message: str
) -> None:
    size, error = first_failure(data)
    assert size == fails_at, f"refused after {size} bytes, not {fails_at}: {error}"
    with pytest.raises(ProxyProtocolError, match=message):
        raise error
    with pytest.raises(ProxyProtocolError):  # and it stays refused, whatever follows
        parse(data + b"\r\n" + data)


@pytest.mark.parametrize("position", range(12))
def test_each_byte_of_the_v2_signature_is_checked(position: int) -> None:
    data = bytearray(v2(PROXY, 0x11, IPV4_BLOCK))
    data[position] ^= 0x40
    size, error = first_failure(bytes(data))
    assert size == position + 1
    assert ("not a PROXY protocol header" if position == 0 else "v2 header: starts with") in str(
        error
    )


def test_a_v2_header_may_take_max_length_bytes_and_no_more() -> None:
    exact = v2(PROXY, 0x11, IPV4_BLOCK + tlv(0x04, bytes(100 - 31)))
    assert len(exact) == 100
    assert parse(exact, max_length=100).length == 100
    longer = v2(PROXY, 0x11, IPV4_BLOCK + tlv(0x04, bytes(100 - 30)))
    size, error = first_failure(longer, max_length=100)
    assert (size, str(error)) == (16, "header longer than 100 bytes (a v2 header of 101)")
    assert parse(longer, max_length=101) is not None


def test_a_smaller_max_length_limits_v1_too() -> None:
    line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    assert parse(line, max_length=len(line)) is not None
    size, error = first_failure(line, max_length=len(line) - 1)
    assert (size, str(error)) == (len(line) - 1, f"header longer than {len(line) - 1} bytes")


def test_max_length_must_hold_the_v2_fixed_part() -> None:
    with pytest.raises(ValueError, match="max_length must be at least 16"):
        parse(b"PROXY", max_length=15)


# --- encoders --------------------------------------------------------------------------


def test_encode_v1_writes_the_spec_lines() -> None:
    assert encode_v1(None, None) == b"PROXY UNKNOWN\r\n"
    assert encode_v1(*IPV4_PAIR) == b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    assert encode_v1(*IPV4_PAIR, family=INET) == encode_v1(*IPV4_PAIR)
    assert encode_v1(("2001:DB8:0::1", 1), ("::1", 2)) == b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n"
    assert encode_v1(*IPV4_PAIR, family=socket.AF_UNSPEC) == (
        b"PROXY UNKNOWN 192.168.0.1 192.168.0.11 56324 443\r\n"
    )


@pytest.mark.parametrize(
    ("source", "destination", "options", "message"),
    [
        (("1.2.3.4", 1), None, {}, "give both"),
        (("1.2.3.4", 1), ("::1", 2), {}, "not of the same family"),
        (("1.2.3.4", 1), ("5.6.7.8", 65536), {}, "port 65536 is outside"),
        (("1.2.3.4", -1), ("5.6.7.8", 1), {}, "port -1 is outside"),
        (("1.2.3.4", 1), ("5.6.7.8", 2), {"family": INET6}, "does not match"),
        (("example.com", 1), ("5.6.7.8", 2), {}, "does not appear to be an IPv4 or IPv6"),
    ],
)
def test_encode_v1_refuses_what_it_cannot_write(source, destination, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        encode_v1(source, destination, **options)


@pytest.mark.parametrize(("data", "expected"), V2_PROXY_WITH_ADDRESSES)
def test_encode_v2_writes_the_hand_built_bytes(data: bytes, expected: ProxyHeader) -> None:
    encoded = encode_v2(
        expected.source, expected.destination, socket_type=expected.socket_type, tlvs=expected.tlvs
    )
    assert encoded == data


def test_encode_v2_local_and_crc32c() -> None:
    assert encode_v2(None, None, command="LOCAL") == SIG + bytes([0x20, 0x00, 0x00, 0x00])
    assert encode_v2(None, None, command="LOCAL", crc32c=True) == CRC_LOCAL
    assert encode_v2(*IPV4_PAIR, crc32c=True) == CRC_HEADER
    # a CRC32C TLV given among the TLVs is filled in where it stands
    stale = [(PP2_TYPE_CRC32C, b"\xde\xad\xbe\xef")]
    assert encode_v2(*IPV4_PAIR, tlvs=stale) == CRC_HEADER
    assert encode_v2(*IPV4_PAIR, tlvs=stale, crc32c=True) == CRC_HEADER
    with_addresses = encode_v2(*IPV4_PAIR, command="LOCAL", socket_type=DGRAM)
    assert with_addresses == v2(LOCAL, 0x12, IPV4_BLOCK)
    assert encode_v2(b"/a", "/b", socket_type=None)[12:14] == bytes([0x21, 0x30])


@pytest.mark.parametrize(
    ("source", "destination", "options", "message"),
    [
        (("1.2.3.4", 1), None, {}, "give both"),
        (None, b"/tmp/s", {}, "give both"),
        (("1.2.3.4", 1), b"/tmp/s", {}, "both endpoints must be"),
        (("1.2.3.4", 1), ("::1", 2), {}, "not of the same family"),
        (b"x" * 109, b"/tmp/s", {}, "AF_UNIX path of 109 bytes"),
        (None, None, {"command": "QUIT"}, "command must be"),
        (*IPV4_PAIR, {"socket_type": socket.SOCK_RAW}, "socket_type must be"),
        (None, None, {"tlvs": [(256, b"")]}, "TLV type 256"),
        (None, None, {"tlvs": [(0xE0, bytes(65536))]}, "longer than 65535"),
        (None, None, {"tlvs": [(0xE0, bytes(40000))] * 2}, "over 65535"),
        (None, None, {"tlvs": [(PP2_TYPE_CRC32C, b"abc")]}, "holds 4 bytes"),
    ],
)
def test_encode_v2_refuses_what_it_cannot_write(source, destination, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        encode_v2(source, destination, **options)


# --- Hypothesis: round trips and random bytes -----------------------------------------------

ports = st.integers(0, 0xFFFF)
ipv4_pairs = st.tuples(
    st.tuples(st.ip_addresses(v=4).map(str), ports), st.tuples(st.ip_addresses(v=4).map(str), ports)
)
ipv6_pairs = st.tuples(
    st.tuples(st.ip_addresses(v=6).map(str), ports), st.tuples(st.ip_addresses(v=6).map(str), ports)
)
ip_pairs = st.one_of(ipv4_pairs, ipv6_pairs)
unix_paths = st.binary(max_size=108).map(lambda path: path.rstrip(b"\0"))
texts = st.text(max_size=30)
ascii_texts = st.text(st.characters(max_codepoint=127), max_size=30)
ssl_infos = st.builds(
    SslInfo,
    client=st.integers(0, 7),
    verify=st.integers(0, 2**32 - 1),
    version=st.none() | ascii_texts,
    cn=st.none() | texts,
    cipher=st.none() | ascii_texts,
    sig_alg=st.none() | ascii_texts,
    key_alg=st.none() | ascii_texts,
)
# At most one of each registered type, any number of NOOPs and unregistered ones.
registered_tlvs = st.fixed_dictionaries(
    {},
    optional={
        PP2_TYPE_ALPN: st.binary(max_size=20),
        PP2_TYPE_AUTHORITY: texts.map(str.encode),
        PP2_TYPE_UNIQUE_ID: st.binary(max_size=128),
        PP2_TYPE_SSL: ssl_infos.map(lambda ssl: ssl.to_tlv()[1]),
        PP2_TYPE_NETNS: ascii_texts.map(str.encode),
    },
)
free_tlvs = st.lists(
    st.tuples(
        st.sampled_from([PP2_TYPE_NOOP, 0x06, 0x1F, 0x31, 0xE0, 0xEF, 0xF0, 0xFF]),
        st.binary(max_size=20),
    ),
    max_size=4,
)
tlv_lists = st.builds(
    lambda known, free: [*known.items(), *free], registered_tlvs, free_tlvs
).flatmap(st.permutations)


def feed_in_chunks(data: bytes, rest: bytes, cuts: list[int]) -> ProxyHeader:
    """What a receiver sees when the header ``data`` arrives in pieces ending at ``cuts``."""
    for cut in sorted({cut % len(data) for cut in cuts}):
        assert parse(data[:cut]) is None, f"a header from {cut} of {len(data)} bytes"
    parsed = parse(data + rest)
    assert parsed is not None
    return parsed


@FAST
@given(
    st.one_of(ip_pairs, st.tuples(unix_paths, unix_paths)),
    st.sampled_from(["PROXY", "LOCAL"]),
    st.sampled_from([STREAM, DGRAM]),
    tlv_lists,
    st.booleans(),
    st.lists(st.integers(0, 1200), max_size=8),
    st.binary(max_size=20),
)
def test_v2_round_trips(pair, command, socket_type, tlvs, with_crc, cuts, rest) -> None:
    data = encode_v2(*pair, command=command, socket_type=socket_type, tlvs=tlvs, crc32c=with_crc)
    parsed = feed_in_chunks(data, rest, cuts)
    assert parsed.length == len(data)
    assert (parsed.version, parsed.command) == (2, command)
    assert [t for t in parsed.tlvs if t[0] != PP2_TYPE_CRC32C] == tlvs
    assert (parsed.crc32c is not None) is with_crc
    if command == "LOCAL":
        assert (parsed.family, parsed.socket_type, parsed.source, parsed.destination) == (None,) * 4
        return
    assert parsed.socket_type == socket_type
    assert same_endpoint(parsed.source, pair[0]) and same_endpoint(parsed.destination, pair[1])
    if dict(tlvs).get(PP2_TYPE_SSL):
        assert parsed.ssl.to_tlv()[1] == dict(tlvs)[PP2_TYPE_SSL]


def same_endpoint(parsed: object, given: object) -> bool:
    if isinstance(given, bytes):
        return parsed == given
    host, port = given
    return parsed[1] == port and ipaddress.ip_address(parsed[0]) == ipaddress.ip_address(host)


@FAST
@given(st.one_of(ip_pairs, st.just((None, None))), st.lists(st.integers(0, 120), max_size=8))
def test_v1_round_trips(pair, cuts) -> None:
    data = encode_v1(*pair)
    parsed = feed_in_chunks(data, b"payload", cuts)
    assert parsed.length == len(data)
    if pair[0] is None:
        assert parsed == with_length(UNKNOWN_V1, data)
        return
    assert same_endpoint(parsed.source, pair[0]) and same_endpoint(parsed.destination, pair[1])
    assert parsed.family == (INET if "." in pair[0][0] and ":" not in pair[0][0] else INET6)


random_inputs = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda rest: SIG + rest),
    st.binary(max_size=300).map(lambda rest: SIG + b"\x21\x11\x00" + rest),
    st.binary(max_size=120).map(lambda rest: b"PROXY " + rest),
    st.binary(max_size=120).map(lambda rest: b"PROXY TCP4 " + rest),
)


@settings(max_examples=400, deadline=None)
@given(random_inputs)
def test_random_bytes_give_none_a_header_or_a_proxy_protocol_error(data: bytes) -> None:
    try:
        parsed = parse(data)
    except ProxyProtocolError:
        return
    assert parsed is None or 0 < parsed.length <= len(data)


# --- the fuzz target stays runnable ------------------------------------------------------


def test_the_fuzz_target_runs_for_a_few_seconds(tmp_path: Path) -> None:
    result = run_briefly(FUZZ_TARGET, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no failures" in result.stdout
