"""A strict, sans-I/O parser for the PROXY protocol, versions 1 and 2.

A proxy in front of a server (HAProxy, a cloud load balancer, stunnel, nginx's
stream module) may start each connection with a PROXY header, so that the
server learns the client's address rather than the proxy's.  The header
decides which address the server believes, so this parser follows HAProxy's
specification (``doc/proxy-protocol.txt``) to the letter: anything the spec
does not allow is an error, never a guess.

Nothing here touches a socket, keeps state or logs.  :func:`parse` is given the
bytes received so far and answers with a :class:`ProxyHeader` (whose
``length`` says how many of the bytes it took), with None ("send more"), or
with :class:`ProxyProtocolError` as soon as the bytes cannot begin a valid
header: the spec recommends aborting early so that the sender notices.
Which peers may send a header and how long to wait for it are the server's
business, one layer up.  The encoders serve tests and Python proxies.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

from portico.errors import PorticoError

__all__ = [
    "ProxyProtocolError",
    "ProxyHeader",
    "SslInfo",
    "parse",
    "parse_datagram",
    "encode_v1",
    "encode_v2",
    "crc32c",
    "DEFAULT_MAX_LENGTH",
    "V1_MAX_LENGTH",
    "V2_SIGNATURE",
    "PP2_TYPE_ALPN",
    "PP2_TYPE_AUTHORITY",
    "PP2_TYPE_CRC32C",
    "PP2_TYPE_NOOP",
    "PP2_TYPE_UNIQUE_ID",
    "PP2_TYPE_SSL",
    "PP2_SUBTYPE_SSL_VERSION",
    "PP2_SUBTYPE_SSL_CN",
    "PP2_SUBTYPE_SSL_CIPHER",
    "PP2_SUBTYPE_SSL_SIG_ALG",
    "PP2_SUBTYPE_SSL_KEY_ALG",
    "PP2_TYPE_NETNS",
    "PP2_CLIENT_SSL",
    "PP2_CLIENT_CERT_CONN",
    "PP2_CLIENT_CERT_SESS",
]

# The TLV types and SSL client flags registered by the spec (section 2.2).
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_TYPE_NETNS = 0x30
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04

# "PROXY UNKNOWN" with two full-length IPv6 addresses and ports: the longest
# v1 line, CRLF included.  A line without CRLF in these bytes is invalid.
V1_MAX_LENGTH = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
DEFAULT_MAX_LENGTH = 4096

Command = Literal["PROXY", "LOCAL"]
Endpoint = tuple[str, int] | bytes  # (host, port) for IP; the path for AF_UNIX
Tlv = tuple[int, bytes]

_V1_PREFIX = b"PROXY "
_V1_PROTOCOLS = {b"TCP4": socket.AF_INET, b"TCP6": socket.AF_INET6}
_V1_UNKNOWN = b"UNKNOWN"
_V1_FIELDS = ("source address", "destination address", "source port", "destination port")
# What a partly received v1 address may hold; ipaddress checks the whole one.
_V1_ADDRESS_PREFIX = {
    socket.AF_INET: re.compile(rb"[0-9.]{0,15}"),
    socket.AF_INET6: re.compile(rb"[0-9A-Fa-f:.]{0,45}"),  # no "%scope": ipaddress would take it
}
_V1_PORT = re.compile(rb"0|[1-9][0-9]*")  # decimal, no sign, no leading zero
_IP_NAMES = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}
_IP_VERSIONS = {socket.AF_INET: 4, socket.AF_INET6: 6}

_V2_FIXED = 16  # signature, version and command, family and transport, length
_V2_VERSION = 0x2
_V2_COMMANDS: dict[int, Command] = {0x0: "LOCAL", 0x1: "PROXY"}
_UNIX_PATH_SIZE = 108
_UNIQUE_ID_MAX = 128
_CRC32C_POLYNOMIAL = 0x82F63B78  # Castagnoli, bit-reversed (RFC 4960, appendix B)
_MAX_PORT = 0xFFFF

_T = TypeVar("_T")


class ProxyProtocolError(PorticoError, ValueError):
    """The bytes are not a valid PROXY protocol header: abort the connection."""


@dataclass(frozen=True)
class _Layout:
    """What a v2 family/transport byte says about the address block."""

    family: socket.AddressFamily | None
    socket_type: socket.SocketKind | None
    address_size: int
    name: str


def _v2_layouts() -> dict[int, _Layout]:
    # Each nibble may be UNSPEC; the family alone fixes the size of the
    # address block (the spec's union), so the TLVs start at a known place.
    families = {
        0x0: (None, 0, "UNSPEC"),
        0x1: (socket.AF_INET, 12, "IPv4"),
        0x2: (socket.AF_INET6, 36, "IPv6"),
        0x3: (socket.AF_UNIX, 2 * _UNIX_PATH_SIZE, "UNIX"),
    }
    transports = {
        0x0: (None, "UNSPEC"),
        0x1: (socket.SOCK_STREAM, "STREAM"),
        0x2: (socket.SOCK_DGRAM, "DGRAM"),
    }
    practical = {0x11: "TCP over IPv4", 0x12: "UDP over IPv4", 0x21: "TCP over IPv6"}
    practical |= {0x22: "UDP over IPv6", 0x31: "UNIX stream", 0x32: "UNIX datagram"}
    layouts = {}
    for family_bits, (family, size, family_name) in families.items():
        for transport_bits, (socket_type, transport_name) in transports.items():
            byte = family_bits << 4 | transport_bits
            name = practical.get(byte, f"{family_name} family, {transport_name} transport")
            layouts[byte] = _Layout(family, socket_type, size, name)
    return layouts


_V2_LAYOUTS = _v2_layouts()


# --- CRC32C ------------------------------------------------------------------


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_CRC32C_POLYNOMIAL if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """The CRC32C (Castagnoli) checksum of ``data``: ``crc32c(b"123456789") == 0xE3069283``."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --- TLV values ----------------------------------------------------------------


def _text(value: bytes, encoding: str, what: str) -> str:
    try:
        return value.decode(encoding)
    except UnicodeDecodeError:
        raise ProxyProtocolError(f"v2 header: {what} {_shown(value)} is not {encoding}") from None


def _shown(value: bytes) -> str:
    # A TLV may hold 64 KiB: an error message quotes only its start.
    return repr(value) if len(value) <= 40 else f"{value[:40]!r}..."


def _decode_authority(value: bytes) -> str:
    return _text(value, "utf-8", "authority TLV")


def _decode_netns(value: bytes) -> str:
    return _text(value, "ascii", "netns TLV")


def _decode_unique_id(value: bytes) -> bytes:
    if len(value) > _UNIQUE_ID_MAX:
        raise ProxyProtocolError(
            f"v2 header: unique ID TLV of {len(value)} bytes is longer than {_UNIQUE_ID_MAX}"
        )
    return value


def _decode_crc32c(value: bytes) -> int:
    if len(value) != 4:
        raise ProxyProtocolError(f"v2 header: CRC32C TLV of {len(value)} bytes, not 4")
    return int.from_bytes(value, "big")


# Sub-TLVs of the SSL TLV: the attribute of SslInfo each one fills, and its encoding.
_SSL_TEXT_FIELDS = {
    PP2_SUBTYPE_SSL_VERSION: ("version", "ascii"),
    PP2_SUBTYPE_SSL_CN: ("cn", "utf-8"),
    PP2_SUBTYPE_SSL_CIPHER: ("cipher", "ascii"),
    PP2_SUBTYPE_SSL_SIG_ALG: ("sig_alg", "ascii"),
    PP2_SUBTYPE_SSL_KEY_ALG: ("key_alg", "ascii"),
}
_SSL_FIXED = 5  # client flags (1 byte), verify result (4 bytes)


@dataclass(frozen=True)
class SslInfo:
    """The SSL TLV: how the client reached the proxy, and which sub-TLVs came with it.

    ``verify`` is zero when the client's certificate (if any) was verified.
    ``other`` holds the sub-TLVs this module does not name, raw and in order.
    """

    client: int = 0
    verify: int = 0
    version: str | None = None
    cn: str | None = None
    cipher: str | None = None
    sig_alg: str | None = None
    key_alg: str | None = None
    other: tuple[Tlv, ...] = ()

    @property
    def client_ssl(self) -> bool:
        """The client connected over SSL/TLS (PP2_CLIENT_SSL)."""
        return bool(self.client & PP2_CLIENT_SSL)

    @property
    def client_cert_conn(self) -> bool:
        """The client presented a certificate on this connection (PP2_CLIENT_CERT_CONN)."""
        return bool(self.client & PP2_CLIENT_CERT_CONN)

    @property
    def client_cert_sess(self) -> bool:
        """The client presented a certificate in this TLS session (PP2_CLIENT_CERT_SESS)."""
        return bool(self.client & PP2_CLIENT_CERT_SESS)

    @property
    def certificate_verified(self) -> bool:
        """A client certificate was presented and verified.

        ``verify`` alone is zero also when no certificate was presented.
        """
        return self.verify == 0 and (self.client_cert_conn or self.client_cert_sess)

    def to_tlv(self) -> Tlv:
        """This SSL TLV as a ``(type, value)`` pair for :func:`encode_v2`."""
        fixed = bytes((self.client,)) + self.verify.to_bytes(4, "big")
        named = [
            (kind, getattr(self, name).encode(encoding))
            for kind, (name, encoding) in _SSL_TEXT_FIELDS.items()
            if getattr(self, name) is not None
        ]
        return PP2_TYPE_SSL, fixed + b"".join(_encode_tlv(k, v) for k, v in [*named, *self.other])


def _decode_ssl(value: bytes) -> SslInfo:
    if len(value) < _SSL_FIXED:
        raise ProxyProtocolError(
            f"v2 header: SSL TLV of {len(value)} bytes is shorter than its client and verify fields"
        )
    texts: dict[str, str] = {}
    other: list[Tlv] = []
    for kind, start, size in _tlv_entries(value, _SSL_FIXED, len(value), "v2 header: SSL TLV"):
        raw = value[start : start + size]
        if kind not in _SSL_TEXT_FIELDS:
            other.append((kind, raw))
            continue
        name, encoding = _SSL_TEXT_FIELDS[kind]
        if name in texts:
            raise ProxyProtocolError(f"v2 header: SSL TLV has two {name} sub-TLVs")
        texts[name] = _text(raw, encoding, f"SSL {name}")
    return SslInfo(
        client=value[0],
        verify=int.from_bytes(value[1:_SSL_FIXED], "big"),
        version=texts.get("version"),
        cn=texts.get("cn"),
        cipher=texts.get("cipher"),
        sig_alg=texts.get("sig_alg"),
        key_alg=texts.get("key_alg"),
        other=tuple(other),
    )


# Checked while parsing, so that the properties of a parsed header never raise.
_TLV_DECODERS: dict[int, Callable[[bytes], object]] = {
    PP2_TYPE_AUTHORITY: _decode_authority,
    PP2_TYPE_CRC32C: _decode_crc32c,
    PP2_TYPE_UNIQUE_ID: _decode_unique_id,
    PP2_TYPE_SSL: _decode_ssl,
    PP2_TYPE_NETNS: _decode_netns,
}
# Two of these would leave the reader to pick one: refused instead.
_SINGLE_TLVS = {PP2_TYPE_ALPN, *_TLV_DECODERS}


# --- the header --------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed PROXY header.

    ``family`` and ``socket_type`` are None when the header says UNSPEC (or
    v1 UNKNOWN, or a v2 LOCAL command, whose address block the spec says to
    ignore).  ``source`` and ``destination`` are ``(host, port)`` for IP, the
    socket path (bytes, trailing NULs stripped) for AF_UNIX, and None when
    the header gives no usable address: then use the connection's own.
    ``tlvs`` are the v2 TLVs, raw and in order; ``length`` is how many bytes
    the header took: the bytes after it belong to the application.
    """

    version: Literal[1, 2]
    command: Command
    family: socket.AddressFamily | None
    socket_type: socket.SocketKind | None
    source: Endpoint | None
    destination: Endpoint | None
    tlvs: tuple[Tlv, ...] = ()
    length: int = 0

    def tlv(self, kind: int) -> bytes | None:
        """The value of the first TLV of type ``kind``, or None."""
        return next((value for tlv_kind, value in self.tlvs if tlv_kind == kind), None)

    def _decoded(self, kind: int, decode: Callable[[bytes], _T]) -> _T | None:
        value = self.tlv(kind)
        return None if value is None else decode(value)

    @property
    def alpn(self) -> bytes | None:
        """The application protocol (PP2_TYPE_ALPN), such as ``b"h2"``."""
        return self.tlv(PP2_TYPE_ALPN)

    @property
    def authority(self) -> str | None:
        """The host name the client asked for, usually TLS SNI (PP2_TYPE_AUTHORITY)."""
        return self._decoded(PP2_TYPE_AUTHORITY, _decode_authority)

    @property
    def unique_id(self) -> bytes | None:
        """The proxy's opaque ID for this connection, up to 128 bytes (PP2_TYPE_UNIQUE_ID)."""
        return self._decoded(PP2_TYPE_UNIQUE_ID, _decode_unique_id)

    @property
    def ssl(self) -> SslInfo | None:
        """The client's SSL/TLS details (PP2_TYPE_SSL)."""
        return self._decoded(PP2_TYPE_SSL, _decode_ssl)

    @property
    def netns(self) -> str | None:
        """The network namespace the proxy accepted the connection in (PP2_TYPE_NETNS)."""
        return self._decoded(PP2_TYPE_NETNS, _decode_netns)

    @property
    def crc32c(self) -> int | None:
        """The header's checksum (PP2_TYPE_CRC32C), already verified by :func:`parse`."""
        return self._decoded(PP2_TYPE_CRC32C, _decode_crc32c)


# --- parsing: the entry points -------------------------------------------------------


def parse(
    data: bytes | bytearray | memoryview,
    *,
    versions: str | Iterable[str] = ("v1", "v2"),
    max_length: int = DEFAULT_MAX_LENGTH,
) -> ProxyHeader | None:
    """The PROXY header at the start of ``data``, or None while more bytes are needed.

    ``data`` is everything received on the connection so far.  Raises
    :class:`ProxyProtocolError` as soon as it cannot begin a valid header.
    ``versions`` limits what is accepted: ``"v1"``, ``"v2"``, ``"auto"`` or a
    collection of them.  A v1 line may take up to 107 bytes (the spec's
    limit), a v2 header up to ``max_length``.
    """
    allowed = _allowed_versions(versions)
    if max_length < _V2_FIXED:
        raise ValueError(f"max_length must be at least {_V2_FIXED}, not {max_length}")
    head = bytes(memoryview(data).cast("B")[:max_length])
    if not head:
        return None
    if _version_of(head[0], allowed) == 1:
        return _parse_v1(head, max_length)
    return _parse_v2(head, max_length)


def parse_datagram(
    data: bytes | bytearray | memoryview, *, max_length: int = DEFAULT_MAX_LENGTH
) -> tuple[ProxyHeader, bytes]:
    """The v2 header at the start of a UDP datagram, and the payload after it.

    Each datagram carries its own header, whole: one that ends inside the
    header is an error, as is v1, which the spec defines for TCP only.
    """
    header = parse(data, versions=("v2",), max_length=max_length)
    if header is None:
        raise ProxyProtocolError(f"datagram of {len(data)} bytes ends inside its v2 header")
    return header, bytes(memoryview(data).cast("B")[header.length :])


def _allowed_versions(versions: str | Iterable[str]) -> frozenset[int]:
    names = [versions] if isinstance(versions, str) else list(versions)
    numbers = {"v1": {1}, "v2": {2}, "auto": {1, 2}}
    if not names or not all(name in numbers for name in names):
        raise ValueError(
            f"versions must be 'v1', 'v2', 'auto' or a collection of them: {versions!r}"
        )
    return frozenset(number for name in names for number in numbers[name])


def _version_of(first: int, allowed: frozenset[int]) -> int:
    # One byte is enough to tell: v1 starts with "P", v2 with "\r".
    version = {_V1_PREFIX[0]: 1, V2_SIGNATURE[0]: 2}.get(first)
    if version is None:
        raise ProxyProtocolError("not a PROXY protocol header")
    if version not in allowed:
        (only,) = allowed
        raise ProxyProtocolError(
            f"not a PROXY protocol v{only} header (v{version} is not accepted here)"
        )
    return version


def _expect_prefix(head: bytes, expected: bytes, what: str) -> bool:
    """True once ``head`` holds all of ``expected``; raises at the first byte that differs."""
    seen = head[: len(expected)]
    if not expected.startswith(seen):
        raise ProxyProtocolError(f"{what}: starts with {seen!r}, not {expected[: len(seen)]!r}")
    return len(seen) == len(expected)


# --- parsing: version 1 ----------------------------------------------------------------


def _parse_v1(head: bytes, max_length: int) -> ProxyHeader | None:
    if not _expect_prefix(head, _V1_PREFIX, "v1 header"):
        return None
    end, complete = _v1_line_end(head, min(V1_MAX_LENGTH, max_length))
    protocol, space, rest = head[len(_V1_PREFIX) : end].partition(b" ")
    if not (space or complete):
        _check_v1_protocol_prefix(protocol)
        return None
    if protocol == _V1_UNKNOWN:  # the spec says to ignore the rest of the line
        return ProxyHeader(1, "PROXY", None, None, None, None, length=end + 2) if complete else None
    family = _v1_family(protocol)
    endpoints = _v1_endpoints(rest, family, complete)
    if endpoints is None:
        return None
    source, destination = endpoints
    return ProxyHeader(1, "PROXY", family, socket.SOCK_STREAM, source, destination, length=end + 2)


def _v1_line_end(head: bytes, limit: int) -> tuple[int, bool]:
    """Where the line's text ends, and whether its CRLF has arrived.

    A CR or LF is allowed only as the line's final CRLF: a lone one fails
    at once, as does a line that cannot end within ``limit`` bytes.
    """
    window = head[:limit]
    cr, lf = window.find(b"\r"), window.find(b"\n")
    if lf != -1 and (cr == -1 or lf < cr):
        raise ProxyProtocolError("v1 header: LF without CR (the line must end with CRLF)")
    if cr != -1 and cr + 1 < len(window):
        if window[cr + 1] != ord("\n"):
            raise ProxyProtocolError("v1 header: CR not followed by LF")
        return cr, True
    if len(window) == limit:  # no room left for the CRLF
        raise _v1_too_long(limit)
    return (len(window) if cr == -1 else cr), False


def _v1_too_long(limit: int) -> ProxyProtocolError:
    if limit < V1_MAX_LENGTH:
        return ProxyProtocolError(f"header longer than {limit} bytes")
    return ProxyProtocolError(f"v1 header: no CRLF within the first {limit} bytes")


def _check_v1_protocol_prefix(protocol: bytes) -> None:
    if not any(name.startswith(protocol) for name in (*_V1_PROTOCOLS, _V1_UNKNOWN)):
        raise _v1_unknown_protocol(protocol)


def _v1_family(protocol: bytes) -> socket.AddressFamily:
    if protocol not in _V1_PROTOCOLS:
        raise _v1_unknown_protocol(protocol)
    return _V1_PROTOCOLS[protocol]


def _v1_unknown_protocol(protocol: bytes) -> ProxyProtocolError:
    text = protocol.decode("latin-1")
    return ProxyProtocolError(f"v1 header: protocol {text!r} is not TCP4, TCP6 or UNKNOWN")


def _v1_endpoints(
    rest: bytes, family: socket.AddressFamily, complete: bool
) -> tuple[Endpoint, Endpoint] | None:
    """The two (host, port) pairs, once the line is complete; each field checked as it arrives."""
    fields = rest.split(b" ")
    if complete and len(fields) < len(_V1_FIELDS):
        protocol = "TCP4" if family == socket.AF_INET else "TCP6"
        raise ProxyProtocolError(f"v1 header: {protocol} needs addresses and ports")
    partial = [not complete and index == len(fields) - 1 for index in range(len(fields))]
    named = list(zip(_V1_FIELDS, fields, partial, strict=False))  # fewer fields while partial
    hosts = [_v1_address(name, field, family, last) for name, field, last in named[:2]]
    ports = [_v1_port(name, field, last) for name, field, last in named[2:]]
    if len(fields) > len(_V1_FIELDS):  # checked after the fields: "1  2" is a missing port
        raise ProxyProtocolError("v1 header: the destination port is followed by a space, not CRLF")
    if not complete:
        return None
    return (hosts[0], ports[0]), (hosts[1], ports[1])


def _v1_address(name: str, field: bytes, family: socket.AddressFamily, partial: bool) -> str:
    """The host text in canonical form (as getpeername() gives it); "" while partial."""
    if not (field or partial):
        raise _v1_missing(name)
    if _V1_ADDRESS_PREFIX[family].fullmatch(field):
        if partial:
            return ""
        packed = _packed_ip(field.decode("ascii"), family)
        if packed is not None:
            return socket.inet_ntop(family, packed)
    text = field.decode("latin-1")
    raise ProxyProtocolError(f"v1 header: {name} {text!r} is not an {_IP_NAMES[family]} address")


def _packed_ip(text: str, family: socket.AddressFamily) -> bytes | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address.packed if address.version == _IP_VERSIONS[family] else None


def _v1_port(name: str, field: bytes, partial: bool) -> int:
    """The port number; -1 while it is still arriving."""
    if not field:
        if partial:
            return -1
        raise _v1_missing(name)
    text = field.decode("latin-1")
    if not _V1_PORT.fullmatch(field):
        leading_zero = field.isdigit()  # all digits, so the regex refused the leading zero
        problem = "has a leading zero" if leading_zero else "is not a decimal number"
        raise ProxyProtocolError(f"v1 header: {name} {text!r} {problem}")
    if int(field) > _MAX_PORT:
        raise ProxyProtocolError(f"v1 header: {name} {text!r} is outside 0-{_MAX_PORT}")
    return int(field)


def _v1_missing(name: str) -> ProxyProtocolError:
    return ProxyProtocolError(
        f"v1 header: the {name} is missing (fields are separated by exactly one space)"
    )


# --- parsing: version 2 ---------------------------------------------------------------


def _parse_v2(head: bytes, max_length: int) -> ProxyHeader | None:
    _check_v2_start(head)
    if len(head) < _V2_FIXED:
        return None
    command = _v2_command(head[12])
    layout = _v2_layout(head[13])
    total = _V2_FIXED + _v2_block_length(head, layout, max_length)
    if len(head) < total:
        return None
    return _v2_header(head[:total], command, layout)


def _check_v2_start(head: bytes) -> None:
    """Fail on the first of the fixed 14 bytes that is wrong, before the rest arrives."""
    _expect_prefix(head, V2_SIGNATURE, "v2 header")
    if len(head) > 12:
        _v2_command(head[12])
    if len(head) > 13:
        _v2_layout(head[13])


def _v2_command(byte: int) -> Command:
    version, command = byte >> 4, byte & 0x0F
    if version != _V2_VERSION:
        raise ProxyProtocolError(
            f"v2 header: version {version} in byte {byte:#04x} (only version 2 exists)"
        )
    if command not in _V2_COMMANDS:
        raise ProxyProtocolError(f"v2 header: command {command} is neither LOCAL (0) nor PROXY (1)")
    return _V2_COMMANDS[command]


def _v2_layout(byte: int) -> _Layout:
    if byte in _V2_LAYOUTS:
        return _V2_LAYOUTS[byte]
    if byte >> 4 > 0x3:
        problem = f"address family {byte >> 4} is not UNSPEC, INET, INET6 or UNIX"
    else:
        problem = f"transport {byte & 0x0F} is not UNSPEC, STREAM or DGRAM"
    raise ProxyProtocolError(f"v2 header: family/transport byte {byte:#04x}: {problem}")


def _v2_block_length(head: bytes, layout: _Layout, max_length: int) -> int:
    block = int.from_bytes(head[14:16], "big")
    if _V2_FIXED + block > max_length:
        raise ProxyProtocolError(
            f"header longer than {max_length} bytes (a v2 header of {_V2_FIXED + block})"
        )
    if block < layout.address_size:
        raise ProxyProtocolError(
            f"v2 header: address block of {block} bytes is too short"
            f" for {layout.name} ({layout.address_size})"
        )
    return block


def _v2_header(header: bytes, command: Command, layout: _Layout) -> ProxyHeader:
    tlv_start = _V2_FIXED + layout.address_size
    entries = _tlv_entries(header, tlv_start, len(header), "v2 header")
    _check_tlvs(header, entries)
    tlvs = tuple((kind, header[start : start + size]) for kind, start, size in entries)
    if command == "LOCAL":  # the spec: use the real endpoints, ignore the family
        return ProxyHeader(2, "LOCAL", None, None, None, None, tlvs, len(header))
    source, destination = _v2_endpoints(header[_V2_FIXED:tlv_start], layout)
    return ProxyHeader(
        2, "PROXY", layout.family, layout.socket_type, source, destination, tlvs, len(header)
    )


def _v2_endpoints(block: bytes, layout: _Layout) -> tuple[Endpoint | None, Endpoint | None]:
    # With either half UNSPEC, "the receiver should ignore address information".
    if layout.family is None or layout.socket_type is None:
        return None, None
    if layout.family == socket.AF_UNIX:
        return _unix_path(block[:_UNIX_PATH_SIZE]), _unix_path(block[_UNIX_PATH_SIZE:])
    size = (layout.address_size - 4) // 2
    hosts = [socket.inet_ntop(layout.family, block[at : at + size]) for at in (0, size)]
    ports = [int.from_bytes(block[at : at + 2], "big") for at in (2 * size, 2 * size + 2)]
    return (hosts[0], ports[0]), (hosts[1], ports[1])


def _unix_path(field: bytes) -> bytes:
    # Only trailing NULs go: a leading NUL marks a Linux abstract socket name.
    return field.rstrip(b"\0")


def _tlv_entries(data: bytes, start: int, end: int, what: str) -> list[tuple[int, int, int]]:
    """``(type, value offset, value length)`` of each TLV; they fill ``data[start:end]``."""
    entries = []
    offset = start
    while offset < end:
        if end - offset < 3:
            raise ProxyProtocolError(
                f"{what}: {end - offset} bytes after the last TLV, too few for another (3)"
            )
        kind, size = data[offset], int.from_bytes(data[offset + 1 : offset + 3], "big")
        offset += 3
        if offset + size > end:
            raise ProxyProtocolError(
                f"{what}: TLV {kind:#04x} of {size} bytes runs"
                f" {offset + size - end} bytes past the end"
            )
        entries.append((kind, offset, size))
        offset += size
    return entries


def _check_tlvs(header: bytes, entries: list[tuple[int, int, int]]) -> None:
    kinds = [kind for kind, _, _ in entries]
    for kind in _SINGLE_TLVS:
        if kinds.count(kind) > 1:
            raise ProxyProtocolError(f"v2 header: two TLVs of type {kind:#04x}")
    for kind, start, size in entries:
        if kind in _TLV_DECODERS:
            _TLV_DECODERS[kind](header[start : start + size])
        if kind == PP2_TYPE_CRC32C:
            _verify_crc32c(header, start)


def _verify_crc32c(header: bytes, start: int) -> None:
    """The spec's check: the CRC32C of the header with the checksum's own bytes zeroed."""
    sent = int.from_bytes(header[start : start + 4], "big")
    actual = crc32c(_zero_crc32c(header, start))
    if sent != actual:
        raise ProxyProtocolError(
            f"v2 header: CRC32C TLV says {sent:#010x}, but the header's checksum is {actual:#010x}"
        )


def _zero_crc32c(header: bytes, start: int) -> bytes:
    return header[:start] + bytes(4) + header[start + 4 :]


# --- encoding --------------------------------------------------------------------------


def encode_v1(
    source: tuple[str, int] | None,
    destination: tuple[str, int] | None,
    *,
    family: socket.AddressFamily | None = None,
) -> bytes:
    """A v1 line: ``PROXY TCP4|TCP6 src dst sport dport`` CRLF.

    Without addresses, ``PROXY UNKNOWN`` CRLF.  ``family`` defaults to the
    addresses' own; AF_UNSPEC writes UNKNOWN followed by the addresses.
    """
    if source is None and destination is None:
        return b"PROXY UNKNOWN\r\n"
    (src, sport), (dst, dport) = _ip_endpoints(source, destination)
    own_family = socket.AF_INET if src.version == 4 else socket.AF_INET6
    if family not in (None, own_family, socket.AF_UNSPEC):
        raise ValueError(f"family {family!r} does not match the addresses ({own_family!r})")
    protocol = "UNKNOWN" if family == socket.AF_UNSPEC else f"TCP{src.version}"
    hosts = [socket.inet_ntop(own_family, ip.packed) for ip in (src, dst)]
    return f"PROXY {protocol} {hosts[0]} {hosts[1]} {sport} {dport}\r\n".encode("ascii")


def encode_v2(
    source: Endpoint | str | None,
    destination: Endpoint | str | None,
    *,
    command: Command = "PROXY",
    socket_type: socket.SocketKind | None = socket.SOCK_STREAM,
    tlvs: Iterable[Tlv] = (),
    crc32c: bool = False,
) -> bytes:
    """A v2 header for these endpoints: ``(host, port)`` pairs or AF_UNIX paths.

    Without endpoints the family byte is UNSPEC (0x00), as the spec asks
    of LOCAL headers.  A PP2_TYPE_CRC32C TLV among ``tlvs`` gets the right
    checksum; ``crc32c=True`` appends one if there is none.
    """
    if command not in ("PROXY", "LOCAL"):
        raise ValueError(f"command must be 'PROXY' or 'LOCAL', not {command!r}")
    family_byte, addresses = _v2_address_block(source, destination, socket_type)
    tlv_list = list(tlvs)
    if crc32c and all(kind != PP2_TYPE_CRC32C for kind, _ in tlv_list):
        tlv_list.append((PP2_TYPE_CRC32C, bytes(4)))
    block = addresses + b"".join(_encode_tlv(kind, value) for kind, value in tlv_list)
    if len(block) > 0xFFFF:
        raise ValueError(f"the v2 address block and TLVs take {len(block)} bytes, over 65535")
    version_command = _V2_VERSION << 4 | (1 if command == "PROXY" else 0)
    fixed = V2_SIGNATURE + bytes((version_command, family_byte)) + len(block).to_bytes(2, "big")
    return _fill_crc32c(fixed + block, _V2_FIXED + len(addresses))


def _ip_endpoints(
    source: tuple[str, int] | None, destination: tuple[str, int] | None
) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    if source is None or destination is None:
        raise ValueError("give both the source and the destination, or neither")
    endpoints = [
        (ipaddress.ip_address(host), _checked_port(port)) for host, port in (source, destination)
    ]
    if endpoints[0][0].version != endpoints[1][0].version:
        raise ValueError(f"{source[0]!r} and {destination[0]!r} are not of the same family")
    return endpoints


def _checked_port(port: int) -> int:
    if not 0 <= port <= _MAX_PORT:
        raise ValueError(f"port {port} is outside 0-{_MAX_PORT}")
    return port


def _v2_address_block(
    source: Endpoint | str | None,
    destination: Endpoint | str | None,
    socket_type: socket.SocketKind | None,
) -> tuple[int, bytes]:
    """The family/transport byte and the address block."""
    if source is None and destination is None:
        return 0x00, b""
    if source is None or destination is None:
        raise ValueError("give both the source and the destination, or neither")
    transports = {None: 0x0, socket.SOCK_STREAM: 0x1, socket.SOCK_DGRAM: 0x2}
    if socket_type not in transports:
        raise ValueError(f"socket_type must be SOCK_STREAM, SOCK_DGRAM or None: {socket_type!r}")
    if isinstance(source, tuple) or isinstance(destination, tuple):
        family_bits, block = _ip_block(source, destination)
    else:
        family_bits, block = 0x3, _unix_block(source, destination)
    return family_bits << 4 | transports[socket_type], block


def _ip_block(source: object, destination: object) -> tuple[int, bytes]:
    if not (isinstance(source, tuple) and isinstance(destination, tuple)):
        raise ValueError("both endpoints must be (host, port) pairs, or both AF_UNIX paths")
    (src, sport), (dst, dport) = _ip_endpoints(source, destination)
    ports = sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    return (0x1 if src.version == 4 else 0x2), src.packed + dst.packed + ports


def _unix_block(source: bytes | str, destination: bytes | str) -> bytes:
    return _unix_field(source) + _unix_field(destination)


def _unix_field(path: bytes | str) -> bytes:
    raw = os.fsencode(path)
    if len(raw) > _UNIX_PATH_SIZE:
        raise ValueError(f"AF_UNIX path of {len(raw)} bytes is longer than {_UNIX_PATH_SIZE}")
    return raw.ljust(_UNIX_PATH_SIZE, b"\0")


def _encode_tlv(kind: int, value: bytes) -> bytes:
    if not 0 <= kind <= 0xFF:
        raise ValueError(f"TLV type {kind} is outside 0-255")
    if len(value) > 0xFFFF:
        raise ValueError(f"TLV {kind:#04x} of {len(value)} bytes is longer than 65535")
    if kind == PP2_TYPE_CRC32C and len(value) != 4:
        raise ValueError(f"a CRC32C TLV holds 4 bytes, not {len(value)}")
    return bytes((kind,)) + len(value).to_bytes(2, "big") + bytes(value)


def _fill_crc32c(header: bytes, tlv_start: int) -> bytes:
    for kind, start, _ in _tlv_entries(header, tlv_start, len(header), "v2 header"):
        if kind == PP2_TYPE_CRC32C:
            zeroed = _zero_crc32c(header, start)
            return zeroed[:start] + crc32c(zeroed).to_bytes(4, "big") + zeroed[start + 4 :]
    return header
