"""The settings registry, handler loading and exit-code mapping, in-process (no sockets)."""

from __future__ import annotations

import dataclasses
import functools
import http.server

import pytest

from portico import DatagramRequestHandler, StreamRequestHandler
from portico.cli import builtin, main, serve
from portico.cli.handlers import load_handler
from portico.cli.settings import Setting, parse_bool, parse_octal_mode, resolve
from portico.errors import ConfigurationError

pytestmark = pytest.mark.timeout(10)


def resolve_serve(argv: list[str], environ: dict[str, str] | None = None):
    parsed = vars(main.build_parser().parse_args(["serve", *argv]))
    command = parsed.pop("_command")
    return resolve(command.settings, parsed, environ or {})


def test_every_serve_setting_is_a_config_field_and_back():
    fields = {field.name for field in dataclasses.fields(serve.ServeConfig)}
    assert {setting.name for setting in serve.SETTINGS} == fields


def test_defaults():
    config = serve.ServeConfig.from_settings(resolve_serve([]))
    assert config == serve.ServeConfig(
        handler="upper",
        bind=(("127.0.0.1", 9999),),
        udp=False,
        unix=None,
        unix_mode=None,
        log_level="INFO",
    )
    assert config.addresses == (("127.0.0.1", 9999),)


def test_command_line_beats_environment_beats_default():
    environ = {"PORTICO_BIND": "[::1]:1, 127.0.0.1:2", "PORTICO_LOG_LEVEL": "debug"}
    from_env = resolve_serve([], environ)
    assert from_env.values["bind"] == (("::1", 1), ("127.0.0.1", 2))
    assert from_env.values["log_level"] == "DEBUG"
    assert from_env.given == {"bind", "log_level"}
    from_cli = resolve_serve(["--bind", "127.0.0.1:3", "--log-level", "error"], environ)
    assert from_cli.values["bind"] == (("127.0.0.1", 3),)
    assert from_cli.values["log_level"] == "ERROR"


def test_switch_from_environment_and_command_line():
    assert resolve_serve([], {"PORTICO_UDP": "yes"}).values["udp"] is True
    assert resolve_serve([], {"PORTICO_UDP": "0"}).values["udp"] is False
    assert resolve_serve(["--udp"], {"PORTICO_UDP": "no"}).values["udp"] is True


def test_unix_path_and_mode():
    config = serve.ServeConfig.from_settings(
        resolve_serve(["--unix", "s.sock", "--unix-mode", "0o660"])
    )
    assert config.addresses == ("s.sock",)
    assert config.unix_mode == 0o660


@pytest.mark.parametrize(("text", "mode"), [("660", 0o660), ("0600", 0o600), ("0o777", 0o777)])
def test_parse_octal_mode(text, mode):
    assert parse_octal_mode(text) == mode


@pytest.mark.parametrize("text", ["8", "rw", "", "17777"])
def test_parse_octal_mode_rejects(text):
    with pytest.raises(ConfigurationError):
        parse_octal_mode(text)


def test_parse_bool_rejects_other_words():
    with pytest.raises(ConfigurationError, match="yes/no"):
        parse_bool("maybe")


def test_error_names_the_setting_source():
    setting = Setting("port", int, "a number", flag="--port", env="PORT")
    with pytest.raises(ConfigurationError, match=r"^PORT: "):
        resolve([setting], {"port": None}, {"PORT": "x"})
    with pytest.raises(ConfigurationError, match=r"^--port: "):
        resolve([setting], {"port": "x"}, {})


@pytest.mark.parametrize("name", list(builtin.BUILTINS))
def test_builtins_have_a_stream_and_a_datagram_variant(name):
    assert issubclass(load_handler(name, datagram=False), StreamRequestHandler)
    assert issubclass(load_handler(name, datagram=True), DatagramRequestHandler)


def test_handler_factories_are_accepted():
    # http.server's documentation passes a partial as the handler class.
    assert isinstance(load_handler("functools:partial", datagram=False), type)
    handler = load_handler("http.server:SimpleHTTPRequestHandler", datagram=False)
    assert handler is http.server.SimpleHTTPRequestHandler
    assert callable(functools.partial(handler, directory="."))


def test_main_returns_exit_codes(capsys):
    assert main.main(["--version"]) == 0
    assert main.main(["serve", "--bind", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("portico: --bind: ") and err.count("\n") == 1
