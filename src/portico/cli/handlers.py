"""The HANDLER argument: a built-in name or ``module:Class``, turned into a handler class.

``module:Class`` imports ``module`` (the current directory is importable, as
with ``python -m``) and follows ``Class``, which may be dotted
(``module:Outer.Inner``).  Anything callable as ``Handler(request,
client_address, server)`` is accepted, so ``functools.partial`` objects and
the standard library's ``socketserver`` and ``http.server`` handlers work.
"""

from __future__ import annotations

import importlib
import os
import socketserver
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from portico.cli.builtin import BUILTINS
from portico.errors import ConfigurationError
from portico.server.handlers import DatagramRequestHandler, StreamRequestHandler

__all__ = ["load_callable", "load_handler", "parse_handler_spec"]

_STREAM_BASES = (StreamRequestHandler, socketserver.StreamRequestHandler)
_DATAGRAM_BASES = (DatagramRequestHandler, socketserver.DatagramRequestHandler)


def parse_handler_spec(text: str) -> str:
    """Check the form of HANDLER (a built-in name or ``module:Class``); import nothing yet."""
    if text in BUILTINS:
        return text
    module, sep, name = text.partition(":")
    if not (sep and module and name):
        builtins = ", ".join(BUILTINS)
        raise ConfigurationError(
            f"unknown handler {text!r}: use one of {builtins}, or module:Class"
        )
    return text


def load_handler(spec: str, *, datagram: bool) -> Callable[..., Any]:
    """The handler class for ``spec`` on a datagram or a stream transport."""
    builtin = BUILTINS.get(spec)
    if builtin is not None:
        return builtin.variant(datagram=datagram)
    handler = _import_handler(spec)
    _check_transport(spec, handler, datagram=datagram)
    return handler


def _import_handler(spec: str) -> Callable[..., Any]:
    return load_callable(spec, what="handler", expected="a request handler class")


def load_callable(spec: str, *, what: str, expected: str) -> Callable[..., Any]:
    """Import ``module:name`` (a dotted name is looked up attribute by attribute).

    ``what`` names the setting in messages ("handler", "--worker-init");
    ``expected`` says what the object must be.
    """
    module_name, sep, qualname = spec.partition(":")
    if not (sep and module_name and qualname):
        raise ConfigurationError(f"{what} {spec!r}: use module:name")
    found: Any = _import_module(spec, module_name, what)
    for name in qualname.split("."):
        try:
            found = getattr(found, name)
        except AttributeError:
            raise ConfigurationError(
                f"{what} {spec!r}: module {module_name!r} has no attribute {qualname!r}"
            ) from None
    if not callable(found):
        raise ConfigurationError(f"{what} {spec!r} is not {expected}")
    return found  # type: ignore[no-any-return]


def _import_module(spec: str, module_name: str, what: str) -> ModuleType:
    _make_cwd_importable()
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # whatever the module raised while importing
        raise ConfigurationError(
            f"{what} {spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc


def _make_cwd_importable() -> None:
    """As ``python -m`` does; the ``portico`` script otherwise has only its own directory."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def _check_transport(spec: str, handler: Callable[..., Any], *, datagram: bool) -> None:
    """Refuse a handler class that is known to expect the other transport."""
    if not isinstance(handler, type):
        return
    if datagram and issubclass(handler, _STREAM_BASES):
        raise ConfigurationError(f"handler {spec!r} serves streams, not datagrams: drop --udp")
    if not datagram and issubclass(handler, _DATAGRAM_BASES):
        raise ConfigurationError(f"handler {spec!r} serves datagrams: add --udp")
