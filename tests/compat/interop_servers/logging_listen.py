"""logging.config.listen(), unchanged, on portico.

    python as_socketserver.py logging_listen.py

Listens for a logging configuration on 127.0.0.1 (port 0) and prints
``port N``.  Each line read from stdin is then logged at INFO through the
``interop.listen`` logger and acknowledged with ``logged``: the record goes
wherever the configuration received over the socket sent that logger.  When
stdin closes, stops listening and prints ``stopped``.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

import portico

LISTEN_TIMEOUT = 10.0


def main() -> None:
    assert logging.config.ThreadingTCPServer is portico.ThreadingTCPServer  # type: ignore[attr-defined]
    # A threading.Thread to typeshed; in fact listen()'s own subclass, with rcvr, ready, port.
    listener: Any = logging.config.listen(0)
    assert issubclass(listener.rcvr, portico.ThreadingTCPServer), listener.rcvr.__mro__
    listener.start()
    if not listener.ready.wait(LISTEN_TIMEOUT):
        raise SystemExit("logging.config.listen() did not start listening")
    print(f"port {listener.port}", flush=True)
    log = logging.getLogger("interop.listen")
    for line in sys.stdin:
        log.info(line.rstrip("\n"))
        print("logged", flush=True)
    logging.config.stopListening()
    listener.join(LISTEN_TIMEOUT)
    if listener.is_alive():
        raise SystemExit("logging.config.stopListening() did not stop the listener")
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
