"""http.server's ThreadingHTTPServer and SimpleHTTPRequestHandler, unchanged, on portico.

    python as_socketserver.py http_server.py DIRECTORY

Prints ``port N`` once listening on 127.0.0.1, serves DIRECTORY until
interrupted (SIGINT), then prints ``stopped``.
"""

from __future__ import annotations

import functools
import http.server
import sys

import portico


def main(directory: str) -> None:
    assert http.server.socketserver is portico, "run me through as_socketserver.py"  # type: ignore[attr-defined]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        assert isinstance(httpd, portico.TCPServer), type(httpd).__mro__
        assert isinstance(httpd, portico.ThreadingMixIn), type(httpd).__mro__
        print(f"port {httpd.server_address[1]}", flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            print("stopped", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
