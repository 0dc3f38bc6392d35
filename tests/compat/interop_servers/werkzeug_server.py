"""werkzeug's development server (the one ``flask run`` starts), via run_simple, on portico.

    python as_socketserver.py werkzeug_server.py threaded|processes

``threaded`` serves each request in a thread (werkzeug's ThreadedWSGIServer,
on portico's ThreadingMixIn), ``processes`` in a child process
(ForkingWSGIServer, on portico's ForkingMixIn).
werkzeug announces its address itself: its log (sent to stdout here) says
`` * Running on http://127.0.0.1:N``.  Serves until interrupted (SIGINT),
which werkzeug handles itself, then prints ``stopped``.

Each response names the server class and whether it is built on portico, as
seen from inside the request.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import werkzeug.serving
from werkzeug.wrappers import Request, Response

import portico

SERVER_KEY = "interop.server"


class ServerRevealingHandler(werkzeug.serving.WSGIRequestHandler):
    """werkzeug's handler, passing the server instance on to the application."""

    def make_environ(self) -> Any:
        environ = super().make_environ()
        environ[SERVER_KEY] = self.server
        return environ


@Request.application
def application(request: Request) -> Response:
    server = request.environ[SERVER_KEY]
    mixins = tuple(getattr(portico, name) for name in ("ThreadingMixIn", "ForkingMixIn"))
    on_portico = isinstance(server, portico.TCPServer) and isinstance(server, mixins)
    if request.method == "POST":
        return Response(request.get_data().upper())
    name = request.args.get("name", "nobody")
    return Response(f"hello {name} from {type(server).__name__}, on portico: {on_portico}\n")


def main(mode: str) -> None:
    assert werkzeug.serving.socketserver is portico, "run me through as_socketserver.py"  # type: ignore[attr-defined]
    log = logging.getLogger("werkzeug")
    log.setLevel(logging.INFO)
    log.addHandler(logging.StreamHandler(sys.stdout))
    modes: dict[str, dict[str, Any]] = {
        "threaded": {"threaded": True},
        "processes": {"processes": 4},
    }
    concurrency = modes[mode]
    werkzeug.serving.run_simple(
        "127.0.0.1", 0, application, request_handler=ServerRevealingHandler, **concurrency
    )
    print("stopped", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
