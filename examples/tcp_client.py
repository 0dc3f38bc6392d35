"""Send one line to tcp_server.py or tcp_stream_server.py and print the reply.

Usage::

    python examples/tcp_client.py [--port PORT] WORDS...
"""

import argparse
import socket

HOST = "127.0.0.1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("words", nargs="+", help="the line to send")
    args = parser.parse_args()
    line = " ".join(args.words)

    with socket.create_connection((HOST, args.port), timeout=10) as sock:
        sock.sendall(line.encode() + b"\n")
        # The server closes the connection after answering: read until it does.
        with sock.makefile("rb") as reply:
            received = reply.read().decode()

    print(f"Sent:     {line}")
    print(f"Received: {received}")


if __name__ == "__main__":
    main()
