"""wsgiref.simple_server.make_server, unchanged, on portico.

    python as_socketserver.py wsgi_server.py

Prints ``port N`` once listening on 127.0.0.1, serves a small WSGI
application until its stdin closes, then prints ``stopped``.  The
application answers ``METHOD PATH QUERY`` and the request body upper-cased.

The server handles requests in its main thread, so a SIGINT could land in
the middle of one, where a handler may swallow it (wsgiref's catches every
exception to answer 500).  So it stops through shutdown() instead, from a
thread that waits for stdin to close: shutdown() lets the request in
progress finish, then ends serve_forever().
"""

from __future__ import annotations

import sys
import threading
import wsgiref.simple_server
from collections.abc import Callable, Iterable
from typing import Any

import portico


def shut_down_when_stdin_closes(server: portico.BaseServer) -> None:
    def watch() -> None:
        sys.stdin.read()
        server.shutdown()

    threading.Thread(target=watch, name="stdin watcher", daemon=True).start()


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    head = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} {environ['QUERY_STRING']}\n"
    reply = head.encode() + body.upper()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(reply)))])
    return [reply]


def main() -> None:
    server_class = wsgiref.simple_server.WSGIServer
    assert issubclass(server_class, portico.TCPServer), server_class.__mro__
    with wsgiref.simple_server.make_server("127.0.0.1", 0, application) as httpd:
        assert isinstance(httpd, portico.TCPServer), type(httpd).__mro__
        print(f"port {httpd.server_address[1]}", flush=True)
        shut_down_when_stdin_closes(httpd)
        httpd.serve_forever()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
