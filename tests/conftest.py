"""Shared fixtures: loopback addresses and a serving helper."""

from __future__ import annotations

import socket

import pytest

HAS_IPV6 = socket.has_ipv6
try:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as _probe:
        _probe.bind(("::1", 0))
except OSError:
    HAS_IPV6 = False

requires_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback on this machine")
