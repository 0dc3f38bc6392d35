"""Send one line to udp_server.py and print the reply.

Usage::

    python examples/udp_client.py [--port PORT] WORDS...
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

    # UDP has no connection: one datagram out, one back (or a timeout if it is lost).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(line.encode() + b"\n", (HOST, args.port))
        received = sock.recv(1024).decode()

    print(f"Sent:     {line}")
    print(f"Received: {received}")


if __name__ == "__main__":
    main()
