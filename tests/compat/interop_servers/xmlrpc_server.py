"""xmlrpc.server's SimpleXMLRPCServer, unchanged, on portico.

    python as_socketserver.py xmlrpc_server.py

Prints ``port N`` once listening on 127.0.0.1, serves until its
stdin closes, then prints ``stopped``.

The server handles requests in its main thread, so a SIGINT could land in
the middle of one.  It stops through shutdown() instead, from a thread that
waits for stdin to close: shutdown() lets the request in progress finish,
then ends serve_forever().
"""

from __future__ import annotations

import sys
import threading
import xmlrpc.server

import portico


def shut_down_when_stdin_closes(server: portico.BaseServer) -> None:
    def watch() -> None:
        sys.stdin.read()
        server.shutdown()

    threading.Thread(target=watch, name="stdin watcher", daemon=True).start()


def add(a: int, b: int) -> int:
    return a + b


def upper(text: str) -> str:
    return text.upper()


def divide(a: int, b: int) -> float:
    return a / b


def main() -> None:
    assert xmlrpc.server.socketserver is portico, "run me through as_socketserver.py"  # type: ignore[attr-defined]
    with xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False) as server:
        assert isinstance(server, portico.TCPServer), type(server).__mro__
        server.register_function(add)
        server.register_function(upper)
        server.register_function(divide)
        server.register_introspection_functions()
        server.register_multicall_functions()
        print(f"port {server.server_address[1]}", flush=True)
        shut_down_when_stdin_closes(server)
        server.serve_forever()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
