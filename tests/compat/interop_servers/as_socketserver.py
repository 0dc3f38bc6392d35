"""Run a program with portico installed as the standard library's ``socketserver``.

    python as_socketserver.py SCRIPT [ARGS...]
    python as_socketserver.py -m MODULE [ARGS...]

``sys.modules["socketserver"]`` becomes portico before any module built on
socketserver is imported, so ``http.server``, ``xmlrpc.server``,
``logging.config``, ``wsgiref`` and werkzeug all build their servers on
portico's classes, with their own code unchanged.  This is the drop-in
promise: nothing but the module behind the name ``socketserver`` changes.

SIGINT is made to raise KeyboardInterrupt even when this process inherited it
ignored (as background jobs of a shell do), so the servers that stop on Ctrl+C
can be stopped the same way by the tests.
"""

from __future__ import annotations

import runpy
import signal
import sys

import portico

# Modules that import socketserver: none may be loaded before the swap.
BUILT_ON_SOCKETSERVER = (
    "socketserver",
    "http.server",
    "xmlrpc.server",
    "logging.config",
    "wsgiref.simple_server",
    "werkzeug.serving",
)


def install_portico() -> None:
    early = [name for name in BUILT_ON_SOCKETSERVER if name in sys.modules]
    if early:
        raise SystemExit(f"imported before portico could take their socketserver: {early}")
    sys.modules["socketserver"] = portico


def main(argv: list[str]) -> None:
    if not argv or argv == ["-m"]:
        raise SystemExit(__doc__)
    install_portico()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if argv[0] == "-m":
        sys.argv = argv[1:]  # run_module() puts the module's file in sys.argv[0]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
