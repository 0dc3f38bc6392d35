"""An upper-case echo server on UDP.

For a datagram server, self.request is a pair: the datagram's bytes and the
socket to answer through::

    python examples/udp_server.py [PORT]      # PORT 0 picks a free one

Send it a line with udp_client.py.
"""

import argparse

import portico as socketserver

HOST = "127.0.0.1"


class UpperDatagramHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        data = data.strip()
        print(f"{self.client_address[0]} wrote: {data!r}", flush=True)
        sock.sendto(data.upper(), self.client_address)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, nargs="?", default=9999)
    port = parser.parse_args().port

    with socketserver.UDPServer((HOST, port), UpperDatagramHandler) as server:
        print(f"serving on {HOST}:{server.server_address[1]}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
