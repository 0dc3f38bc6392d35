"""Addresses as text and as tuples: parsing, IPv4-mapped peers, rendering.

Pure tests: nothing here opens a socket.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portico.errors import ConfigurationError, PorticoError
from portico.net.addresses import (
    family_of_host,
    format_address,
    is_ipv6_literal,
    mapped_ipv6_address,
    parse_host_port,
    plain_peer_address,
)

ports = st.integers(min_value=0, max_value=65535)
ipv4_hosts = st.ip_addresses(v=4).map(str)
# Exclude the IPv4-mapped range: those are not "real" IPv6 peers.
ipv6_hosts = (
    st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(lambda a: a.compressed)
)


# -- parse_host_port: the forms that parse -------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com:8080", ("example.com", 8080)),
        ("127.0.0.1:9999", ("127.0.0.1", 9999)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:9999", ("::1", 9999)),
        ("[::]:80", ("::", 80)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
        ("[fe80::1%eth0]:22", ("fe80::1%eth0", 22)),
        ("[::ffff:192.0.2.1]:1", ("::ffff:192.0.2.1", 1)),
        (":8000", ("127.0.0.1", 8000)),
        ("8000", ("127.0.0.1", 8000)),
        ("0", ("127.0.0.1", 0)),
    ],
)
def test_parse_host_port_accepts(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


def test_default_host_is_used_for_port_only_forms() -> None:
    assert parse_host_port(":80", default_host="::") == ("::", 80)
    assert parse_host_port("80", default_host="0.0.0.0") == ("0.0.0.0", 80)
    # An explicit host wins over the default.
    assert parse_host_port("10.0.0.1:80", default_host="::") == ("10.0.0.1", 80)


def test_default_host_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        parse_host_port("80", "0.0.0.0")  # type: ignore[misc]


# -- parse_host_port: the forms that do not ------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("host:http", ["'host:http'", "'http'", "not a number"]),
        ("host:", ["'host:'", "not a number"]),
        ("", ["''", "not a number"]),
        ("eighty", ["'eighty'", "not a number"]),
        ("host:65536", ["'host:65536'", "65536", "outside 0-65535"]),
        ("host:-1", ["'host:-1'", "outside 0-65535"]),
        (":99999", ["':99999'", "outside 0-65535"]),
        ("::1:80", ["'::1:80'", "brackets", "[::1]:9999"]),
        ("2001:db8::1:443", ["brackets"]),
        ("[::1]", ["'[::1]'"]),  # no port
        ("[example.com]:80", ["'[example.com]:80'", "'example.com'", "not an IPv6 address"]),
        ("[127.0.0.1]:80", ["'127.0.0.1'", "not an IPv6 address"]),
        ("[]:80", ["not an IPv6 address"]),
        ("[::1]:x", ["'[::1]:x'", "not a number"]),
    ],
)
def test_parse_host_port_refuses(text: str, words: list[str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_host_port(text)
    for word in words:
        assert word in str(info.value)


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="outside 0-65535"):
        parse_host_port("host:70000")
    with pytest.raises(PorticoError):
        parse_host_port("host:x")


def test_a_bad_port_does_not_chain_the_int_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_host_port("host:x")
    assert info.value.__context__ is None or info.value.__suppress_context__


@pytest.mark.parametrize("port_text", [" 80", "80 ", "+80", "8_0", "\uff18\uff10", "\u0668\u0660"])
def test_port_must_be_ascii_digits(port_text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_host_port(f"host:{port_text}")


# -- parse_host_port: properties ----------------------------------------------


@given(ipv4_hosts, ports)
def test_ipv4_round_trip(host: str, port: int) -> None:
    assert parse_host_port(f"{host}:{port}") == (host, port)


@given(ipv6_hosts, ports)
def test_ipv6_round_trip(host: str, port: int) -> None:
    assert parse_host_port(f"[{host}]:{port}") == (host, port)


@given(st.one_of(ipv4_hosts, ipv6_hosts), ports)
def test_format_address_output_parses_back(host: str, port: int) -> None:
    assert parse_host_port(format_address((host, port))) == (host, port)


@given(ports)
def test_port_alone_round_trip(port: int) -> None:
    assert parse_host_port(str(port)) == ("127.0.0.1", port)
    assert parse_host_port(f":{port}") == ("127.0.0.1", port)


@given(st.integers().filter(lambda p: not 0 <= p <= 65535))
def test_out_of_range_ports_are_refused(port: int) -> None:
    with pytest.raises(ConfigurationError, match="outside 0-65535"):
        parse_host_port(f"host:{port}")


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_configuration_error(text: str) -> None:
    try:
        host, port = parse_host_port(text)
    except ConfigurationError as exc:
        assert repr(text) in str(exc)
    else:
        assert isinstance(host, str)
        assert 0 <= port <= 65535


# -- is_ipv6_literal and family_of_host ----------------------------------------


@pytest.mark.parametrize("host", ["::1", "::", "2001:db8::1", "fe80::1%eth0", "::ffff:1.2.3.4"])
def test_ipv6_literals(host: str) -> None:
    assert is_ipv6_literal(host)
    assert family_of_host(host, socket.AF_INET) == socket.AF_INET6


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "", "example.com", ":", "::g", "[::1]", None, 6, b"::1"]
)
def test_not_ipv6_literals(host: object) -> None:
    assert not is_ipv6_literal(host)
    assert family_of_host(host, socket.AF_INET) == socket.AF_INET


@given(ipv6_hosts)
def test_every_ipv6_address_is_a_literal(host: str) -> None:
    assert is_ipv6_literal(host)


@given(ipv4_hosts)
def test_no_ipv4_address_is_an_ipv6_literal(host: str) -> None:
    assert not is_ipv6_literal(host)


# -- plain_peer_address and mapped_ipv6_address -------------------------------


def test_mapped_peer_becomes_plain() -> None:
    assert plain_peer_address(("::ffff:192.0.2.1", 4000, 0, 0)) == ("192.0.2.1", 4000)


@pytest.mark.parametrize(
    "address",
    [
        ("::1", 4000, 0, 0),
        ("2001:db8::1", 1, 0, 3),
        ("::ffff:0:0", 4000, 0, 0),  # in the mapped range, but no dotted quad
        ("192.0.2.1", 4000),
        "/run/app.sock",
        "\0abstract",
        b"/run/app.sock",
        "",
        None,
        ["::ffff:192.0.2.1", 4000, 0, 0],  # not a tuple: not a socket address
    ],
)
def test_other_addresses_are_unchanged(address: object) -> None:
    assert plain_peer_address(address) is address


def test_plain_ipv4_becomes_mapped() -> None:
    assert mapped_ipv6_address(("192.0.2.1", 4000)) == ("::ffff:192.0.2.1", 4000, 0, 0)


@pytest.mark.parametrize(
    "address",
    [("::1", 4000), ("::1", 4000, 0, 0), ("::ffff:192.0.2.1", 4000, 0, 0), "/run/a.sock", None],
)
def test_mapping_leaves_ipv6_and_others_alone(address: object) -> None:
    assert mapped_ipv6_address(address) is address


@given(ipv4_hosts, ports)
def test_plain_of_mapped_is_identity(host: str, port: int) -> None:
    assert plain_peer_address(mapped_ipv6_address((host, port))) == (host, port)


@given(ipv4_hosts, ports)
def test_mapped_of_plain_is_identity(host: str, port: int) -> None:
    mapped = ("::ffff:" + host, port, 0, 0)
    assert mapped_ipv6_address(plain_peer_address(mapped)) == mapped


@given(ipv4_hosts, ports)
def test_mapped_form_is_what_ipaddress_calls_ipv4_mapped(host: str, port: int) -> None:
    mapped_host = mapped_ipv6_address((host, port))[0]
    assert ipaddress.IPv6Address(mapped_host).ipv4_mapped == ipaddress.IPv4Address(host)


@given(ipv6_hosts, ports, st.integers(0, 2**20 - 1), st.integers(0, 2**32 - 1))
def test_real_ipv6_peers_pass_through_both_ways(
    host: str, port: int, flowinfo: int, scope_id: int
) -> None:
    address = (host, port, flowinfo, scope_id)
    assert plain_peer_address(address) is address
    assert mapped_ipv6_address(address) is address


# -- format_address -----------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (("127.0.0.1", 8000), "127.0.0.1:8000"),
        (("example.com", 80), "example.com:80"),
        (("::1", 8000), "[::1]:8000"),
        (("::1", 8000, 0, 0), "[::1]:8000"),
        (("fe80::1%eth0", 22, 0, 2), "[fe80::1%eth0]:22"),
        ("/run/app.sock", "/run/app.sock"),
        (b"/run/app.sock", "/run/app.sock"),
        ("\0portico-test", "@portico-test"),
        (b"\0portico-test", "@portico-test"),
        (b"/tmp/\xff.sock", "/tmp/\\xff.sock"),
        ("", "<unnamed>"),
        (b"", "<unnamed>"),
        (None, "<unnamed>"),
    ],
)
def test_format_address(address: object, text: str) -> None:
    assert format_address(address) == text


@given(ipv4_hosts, ports)
def test_format_ipv4(host: str, port: int) -> None:
    assert format_address((host, port)) == f"{host}:{port}"


@given(ipv6_hosts, ports)
def test_format_ipv6_is_bracketed(host: str, port: int) -> None:
    assert format_address((host, port, 0, 0)) == f"[{host}]:{port}"


@given(st.text(min_size=1).filter(lambda s: not s.startswith("\0")))
def test_format_path_is_the_path(path: str) -> None:
    assert format_address(path) == path


@given(st.binary(max_size=30))
def test_format_bytes_never_fails(raw: bytes) -> None:
    assert isinstance(format_address(raw), str)
