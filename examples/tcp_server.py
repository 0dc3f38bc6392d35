"""An upper-case echo server on TCP, written against BaseRequestHandler.

Run it, then send it a line with tcp_client.py (or ``nc 127.0.0.1 9999``)::

    python examples/tcp_server.py [PORT]      # PORT 0 picks a free one

This is the classic socketserver example, with portico in its place: the
only change a stdlib program needs is the import.
"""

import argparse

import portico as socketserver

HOST = "127.0.0.1"


class UpperHandler(socketserver.BaseRequestHandler):
    """Called once per connection: self.request is the client's socket."""

    def handle(self) -> None:
        # One recv() is enough for one short line; a real protocol would frame its messages.
        data = self.request.recv(1024).strip()
        print(f"{self.client_address[0]} wrote: {data!r}", flush=True)
        self.request.sendall(data.upper())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, nargs="?", default=9999)
    port = parser.parse_args().port

    with socketserver.TCPServer((HOST, port), UpperHandler) as server:
        print(f"serving on {HOST}:{server.server_address[1]}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
