"""portico.server.admission: what counts as one client, the counts, the token bucket."""

from __future__ import annotations

import ipaddress
import resource
import time

import pytest

from portico.errors import ConfigurationError
from portico.server.admission import Admission, AdmissionLimits, auto_max_connections, client_key


def test_a_client_is_its_address_or_its_network() -> None:
    assert client_key(("10.1.2.3", 5), (32, 128)) == ipaddress.ip_network("10.1.2.3/32")
    assert client_key(("10.1.2.3", 5), (24, 128)) == ipaddress.ip_network("10.1.2.0/24")
    assert client_key(("2001:db8::1", 5, 0, 0), (32, 64)) == ipaddress.ip_network("2001:db8::/64")
    # An IPv4 client of a dual-stack listener is an IPv4 client.
    assert client_key(("::ffff:10.1.2.3", 5, 0, 0), (24, 64)) == ipaddress.ip_network("10.1.2.0/24")


@pytest.mark.parametrize("address", ["", "/run/app.sock", b"\0abstract", ("not-an-ip", 1)])
def test_peers_without_an_ip_address_are_not_limited_per_client(address: object) -> None:
    assert client_key(address, (32, 128)) is None


def test_slots_are_counted_per_client_and_freed_once() -> None:
    admission = Admission(AdmissionLimits(max_connections=3, per_client=2))
    a, b, c, d = object(), object(), object(), object()
    assert admission.admit(a, ("10.0.0.1", 1)) is None
    assert admission.admit(b, ("10.0.0.1", 2)) is None
    assert admission.admit(c, ("10.0.0.1", 3)) == "max_connections_per_client"
    assert admission.admit(c, ("10.0.0.2", 3)) is None
    assert admission.full
    assert admission.admit(d, ("10.0.0.3", 4)) == "max_connections"
    assert admission.release(a) is True  # it was full, now it is not
    assert admission.release(a) is False  # freed already: nothing happens
    assert admission.release(d) is False  # never admitted
    assert admission.open == 2
    assert admission.rejected == {"max_connections_per_client": 1, "max_connections": 1}


def test_a_detached_slot_is_held_until_freed() -> None:
    admission = Admission(AdmissionLimits(max_connections=1))
    request = object()
    assert admission.admit(request, ("10.0.0.1", 1)) is None
    slot = admission.detach(request)  # a forked child holds it now
    assert admission.release(request) is False
    assert admission.full
    assert admission.free(slot) is True
    assert admission.open == 0


def test_the_accept_rate_is_a_bucket_of_one_seconds_worth() -> None:
    admission = Admission(AdmissionLimits(accept_rate=50))
    admitted = [admission.admit(object(), ("10.0.0.1", n)) for n in range(60)]
    assert admitted.count(None) in range(50, 53)  # 50, and what refilled meanwhile
    assert "max_accept_rate" in admitted
    delay = admission.accept_delay()
    assert 0 < delay <= 1 / 50
    time.sleep(delay)  # the rate itself is under test: after this long, one more fits
    assert admission.admit(object(), ("10.0.0.1", 99)) is None


@pytest.mark.parametrize(
    "limits",
    [
        {"max_connections": 0},
        {"per_client": -1},
        {"accept_rate": 0.0},
        {"max_connections": "many"},
        {"policy": "drop"},
        {"client_prefix": (33, 128)},
    ],
)
def test_bad_limits_are_refused_with_the_setting_named(limits: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        AdmissionLimits(**limits)  # type: ignore[arg-type]


def test_auto_keeps_a_reserve_of_descriptors() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert 0 < auto_max_connections() < soft
