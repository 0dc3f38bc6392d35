"""``portico``: the command line: ``portico serve``, and ``portico bench`` in a checkout.

This is the one place where exceptions become exit codes: 0 for a clean stop,
2 for a usage or configuration error (argparse's convention), 1 for a server
that cannot listen or fails while serving, 3 for a prefork worker that could
not boot (the master stops rather than crash-loop).  Expected errors are reported as
one line on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from portico import __version__
from portico.cli import bench, serve
from portico.cli.settings import Command, add_arguments, resolve
from portico.errors import ConfigurationError, PorticoError
from portico.prefork import EXIT_WORKER_BOOT, WorkerBootError

__all__ = [
    "COMMANDS",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_WORKER_BOOT",
    "build_parser",
    "main",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # Ctrl-C before serving started, as shells report it

COMMANDS: tuple[Command, ...] = (serve.COMMAND, bench.COMMAND)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are exceptions, reported like any other."""

    def error(self, message: str) -> NoReturn:
        raise ConfigurationError(f"{message} (see '{self.prog} --help')")


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    parser = _Parser(prog="portico", description="portico: socketserver, for production.")
    parser.add_argument("--version", action="version", version=f"portico {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in commands:
        subparser = subparsers.add_parser(
            command.name, help=command.summary, description=command.summary
        )
        add_arguments(subparser, command.settings)
        subparser.set_defaults(_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        return _run(argv)
    except ConfigurationError as exc:
        return _fail(exc, EXIT_USAGE)
    except WorkerBootError as exc:
        return _fail(exc, EXIT_WORKER_BOOT)
    except (PorticoError, OSError) as exc:
        return _fail(exc, EXIT_FAILURE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _run(argv: Sequence[str] | None) -> int:
    try:
        parsed = vars(build_parser().parse_args(argv))
    except SystemExit as exc:  # --help and --version print, then exit
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    command: Command = parsed.pop("_command")
    return command.run(resolve(command.settings, parsed, os.environ))


def _fail(exc: BaseException, code: int) -> int:
    message = " | ".join(str(exc).splitlines()) or type(exc).__name__
    print(f"portico: {message}", file=sys.stderr)
    return code
