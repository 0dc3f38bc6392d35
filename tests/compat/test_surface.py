"""portico's public surface matches the stdlib socketserver of the running Python.

Names, class hierarchies, every attribute and hook and their default values,
and method signatures: what the stdlib offers, portico offers, with the same
meaning.  portico may add keyword-only parameters with defaults, and new
methods; it may not drop or rename anything.
"""

from __future__ import annotations

import inspect
import socket
import socketserver

import pytest

import portico
from portico.net.listeners import system_max_backlog

# Documented differences in default values (docs/server-behavior.md).
CHANGED_DEFAULTS = {
    # The stdlib's 5 drops connections under any burst; portico uses the system
    # maximum, as Python 3.15 will.
    "request_queue_size": system_max_backlog(),
}

STDLIB_CLASSES = [getattr(socketserver, name) for name in socketserver.__all__]


def portico_twin(stdlib_class: type) -> type:
    twin = getattr(portico, stdlib_class.__name__)
    assert isinstance(twin, type)
    return twin


def stdlib_members(cls: type) -> dict[str, object]:
    """Every attribute a program can reach on the class, bar object's own."""
    return {
        name: inspect.getattr_static(cls, name)
        for name in dir(cls)
        if not (name.startswith("__") and name.endswith("__")) or name in ("__enter__", "__exit__")
    }


def test_all_is_the_stdlib_all() -> None:
    assert portico.__all__ == socketserver.__all__


def test_star_import_brings_exactly_the_stdlib_names() -> None:
    namespace: dict[str, object] = {}
    exec("from portico import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(socketserver.__all__)


def test_platform_conditional_names_follow_the_stdlib() -> None:
    for name in ("ForkingMixIn", "ForkingTCPServer", "UnixStreamServer", "ForkingUnixStreamServer"):
        assert hasattr(portico, name) == hasattr(socketserver, name), name


@pytest.mark.parametrize("stdlib_class", STDLIB_CLASSES, ids=lambda c: c.__name__)
def test_class_hierarchy_has_the_stdlib_shape(stdlib_class: type) -> None:
    ours = [c.__name__ for c in portico_twin(stdlib_class).__mro__]
    theirs = [c.__name__ for c in stdlib_class.__mro__]
    assert ours == theirs


@pytest.mark.parametrize("stdlib_class", STDLIB_CLASSES, ids=lambda c: c.__name__)
def test_every_stdlib_attribute_and_hook_exists(stdlib_class: type) -> None:
    ours = portico_twin(stdlib_class)
    missing = [name for name in stdlib_members(stdlib_class) if not hasattr(ours, name)]
    assert missing == []


@pytest.mark.parametrize("stdlib_class", STDLIB_CLASSES, ids=lambda c: c.__name__)
def test_data_attributes_have_the_stdlib_defaults(stdlib_class: type) -> None:
    ours = portico_twin(stdlib_class)
    for name, value in stdlib_members(stdlib_class).items():
        if callable(value) or isinstance(value, (staticmethod, classmethod, property)):
            continue
        if name == "_threads":
            assert type(getattr(ours, name)).__name__ == type(value).__name__
            continue
        expected = CHANGED_DEFAULTS.get(name, value)
        assert getattr(ours, name) == expected, name


@pytest.mark.parametrize("stdlib_class", STDLIB_CLASSES, ids=lambda c: c.__name__)
def test_method_signatures_accept_every_stdlib_call(stdlib_class: type) -> None:
    ours = portico_twin(stdlib_class)
    for name, value in stdlib_members(stdlib_class).items():
        if not inspect.isfunction(value):
            continue
        theirs_sig = inspect.signature(value)
        ours_sig = inspect.signature(getattr(ours, name))
        theirs_params = list(theirs_sig.parameters.values())
        ours_params = list(ours_sig.parameters.values())
        assert [(p.name, p.kind, p.default) for p in ours_params[: len(theirs_params)]] == [
            (p.name, p.kind, p.default) for p in theirs_params
        ], name
        extra = ours_params[len(theirs_params) :]
        assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in extra), name


def test_stdlib_docstrings_listing_hooks_are_kept() -> None:
    for name in ("BaseServer", "TCPServer"):
        ours = inspect.getdoc(getattr(portico, name)) or ""
        for hook in ("server_bind()", "get_request()", "verify_request", "process_request"):
            assert hook in ours, (name, hook)


def test_socket_types_and_families() -> None:
    assert portico.TCPServer.socket_type == socket.SOCK_STREAM
    assert portico.UDPServer.socket_type == socket.SOCK_DGRAM
    assert portico.TCPServer.address_family == socket.AF_INET
    if hasattr(socket, "AF_UNIX"):
        assert portico.UnixStreamServer.address_family == socket.AF_UNIX
        assert portico.UnixDatagramServer.address_family == socket.AF_UNIX


def test_public_classes_say_they_are_portico_s() -> None:
    for name in portico.__all__:
        assert getattr(portico, name).__module__ == "portico"
