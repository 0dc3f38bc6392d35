"""The upper-case echo server again, written against StreamRequestHandler.

StreamRequestHandler wraps the connection in two file-like objects, so the
handler reads a line with ``self.rfile.readline()`` and answers with
``self.wfile.write()``, without counting bytes::

    python examples/tcp_stream_server.py [PORT]      # PORT 0 picks a free one

tcp_client.py talks to it just as it talks to tcp_server.py.
"""

import argparse

import portico as socketserver

HOST = "127.0.0.1"


class UpperLineHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        data = self.rfile.readline().strip()
        print(f"{self.client_address[0]} wrote: {data!r}", flush=True)
        self.wfile.write(data.upper())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, nargs="?", default=9999)
    port = parser.parse_args().port

    with socketserver.TCPServer((HOST, port), UpperLineHandler) as server:
        print(f"serving on {HOST}:{server.server_address[1]}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
