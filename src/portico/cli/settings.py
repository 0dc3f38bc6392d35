"""Command-line settings, each declared once, and the commands that own them.

A :class:`Setting` is one record: its name in the resolved values, its flag,
its environment variable, its default and its help.  From a command's tuple
of settings, :func:`add_arguments` builds the argparse arguments and
:func:`resolve` turns the parsed command line and the environment into typed
values: the command line wins over the environment, which wins over the
default.  Every value, the default included, goes through the setting's
``parse``, so a default is written the way a user would type it and is
checked the same way.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from portico.errors import ConfigurationError

__all__ = [
    "Command",
    "Resolved",
    "Setting",
    "add_arguments",
    "parse_access_level",
    "parse_bool",
    "parse_choice",
    "parse_count",
    "parse_log_level",
    "parse_octal_mode",
    "parse_positive_int",
    "parse_positive_seconds",
    "parse_seconds",
    "resolve",
]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Setting:
    """One setting: where it comes from, how it is parsed, what it means."""

    name: str
    parse: Callable[[str], Any]
    help: str
    flag: str | None = None  # None: the command's positional argument
    metavar: str | None = None
    default: str | None = None  # as a user would type it; None: unset
    env: str | None = None
    repeat: bool = False  # the flag may be given again; the value is a tuple
    switch: bool = False  # a flag without a value; the value is a bool

    @property
    def label(self) -> str:
        """How messages name the setting: its flag, or its metavar if positional."""
        return self.flag or self.metavar or self.name


@dataclass(frozen=True)
class Resolved:
    """The values of a command's settings, and which ones the user gave."""

    values: Mapping[str, Any]
    given: frozenset[str]


@dataclass(frozen=True)
class Command:
    """A subcommand: its settings, and what runs once they are resolved."""

    name: str
    summary: str
    settings: tuple[Setting, ...]
    run: Callable[[Resolved], int]


def add_arguments(parser: argparse.ArgumentParser, settings: Iterable[Setting]) -> None:
    """Declare each setting as an argparse argument whose absence reads as None."""
    for setting in settings:
        if setting.flag is None:
            parser.add_argument(
                setting.name, nargs="?", metavar=setting.metavar, help=_help(setting)
            )
        elif setting.switch:
            parser.add_argument(
                setting.flag,
                dest=setting.name,
                action="store_true",
                default=None,
                help=_help(setting),
            )
        else:
            parser.add_argument(
                setting.flag,
                dest=setting.name,
                metavar=setting.metavar,
                action="append" if setting.repeat else "store",
                help=_help(setting),
            )


def _help(setting: Setting) -> str:
    notes = []
    if setting.repeat:
        notes.append("repeatable")
    if setting.default is not None and not setting.switch:
        notes.append(f"default: {setting.default}")
    if setting.env is not None:
        notes.append(f"env: {setting.env}")
    text = f"{setting.help} ({'; '.join(notes)})" if notes else setting.help
    return text.replace("%", "%%")


def resolve(
    settings: Iterable[Setting], parsed: Mapping[str, Any], environ: Mapping[str, str]
) -> Resolved:
    """Parse every setting from the command line, else the environment, else its default.

    Raises :class:`ConfigurationError` naming the flag or variable at fault.
    """
    values: dict[str, Any] = {}
    given: set[str] = set()
    for setting in settings:
        raw, source = _raw_value(setting, parsed.get(setting.name), environ)
        if source is not None:
            given.add(setting.name)
        values[setting.name] = _parse(setting, raw, source or setting.label)
    return Resolved(values, frozenset(given))


def _raw_value(
    setting: Setting, from_cli: Any, environ: Mapping[str, str]
) -> tuple[Any, str | None]:
    """The unparsed value and where it came from (None for the default)."""
    if from_cli is not None:
        return from_cli, setting.label
    from_env = environ.get(setting.env) if setting.env else None
    if from_env:  # an empty variable counts as unset
        return _split(setting, from_env), setting.env
    if setting.default is None:
        return ([] if setting.repeat else None), None
    return _split(setting, setting.default), None


def _split(setting: Setting, text: str) -> Any:
    """Text for a repeatable setting is comma-separated."""
    return [item.strip() for item in text.split(",")] if setting.repeat else text


def _parse(setting: Setting, raw: Any, where: str) -> Any:
    try:
        if setting.repeat:
            return tuple(setting.parse(item) for item in raw)
        if raw is None or isinstance(raw, bool):
            return raw
        return setting.parse(raw)
    except ValueError as exc:  # ConfigurationError included
        raise ConfigurationError(f"{where}: {exc}") from None


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"{text!r} is not a yes/no value (use 1/0, true/false, yes/no)")


def parse_octal_mode(text: str) -> int:
    """Permission bits in octal: ``660``, ``0660`` or ``0o660``."""
    digits = text.strip().lower().removeprefix("0o")
    try:
        mode = int(digits, 8)
    except ValueError:
        raise ConfigurationError(f"{text!r} is not an octal mode such as 660") from None
    if not 0 <= mode <= 0o7777:
        raise ConfigurationError(f"{text!r} is outside 0-7777")
    return mode


def parse_count(text: str) -> int:
    """A whole number, zero included."""
    try:
        number = int(text.strip())
    except ValueError:
        raise ConfigurationError(f"{text!r} is not a whole number") from None
    if number < 0:
        raise ConfigurationError(f"{text!r} is negative")
    return number


def parse_choice(choices: Iterable[str]) -> Callable[[str], str]:
    """A parser that takes one of ``choices`` (any case) and refuses anything else."""
    allowed = tuple(choices)

    def parse(text: str) -> str:
        choice = text.strip().lower()
        if choice not in allowed:
            raise ConfigurationError(f"{text!r} is not one of {', '.join(allowed)}")
        return choice

    return parse


def parse_positive_int(text: str) -> int:
    try:
        number = int(text.strip())
    except ValueError:
        raise ConfigurationError(f"{text!r} is not a whole number") from None
    if number < 1:
        raise ConfigurationError(f"{text!r} is not a positive number")
    return number


def parse_log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in _LOG_LEVELS:
        raise ConfigurationError(f"{text!r} is not one of {', '.join(_LOG_LEVELS)}")
    return level


def parse_access_level(text: str) -> str:
    """A log level, or OFF."""
    return "OFF" if text.strip().upper() == "OFF" else parse_log_level(text)


def parse_seconds(text: str) -> float:
    """A duration in seconds, zero included."""
    try:
        seconds = float(text.strip())
    except ValueError:
        raise ConfigurationError(f"{text!r} is not a number of seconds") from None
    if not seconds >= 0:  # NaN too
        raise ConfigurationError(f"{text!r} is negative")
    return seconds


def parse_positive_seconds(text: str) -> float:
    """A duration in seconds, more than zero."""
    seconds = parse_seconds(text)
    if seconds == 0:
        raise ConfigurationError(f"{text!r} is not a positive number of seconds")
    return seconds
