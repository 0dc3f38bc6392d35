"""A threaded server and its clients in one script: each request gets its own thread.

The server runs in a background thread; three clients then connect one after
the other, and each reply names the thread that handled it::

    python examples/threaded_server.py [PORT]      # default 0: any free port

Unlike the other servers this one picks a free port by default, since its
clients are in the same script, and it stops by itself once they are done.
"""

import argparse
import socket
import threading

import portico as socketserver

HOST = "127.0.0.1"


class ThreadNamingHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = self.request.recv(1024).decode()
        thread = threading.current_thread()
        self.request.sendall(f"{thread.name}: {data}".encode())


def client(port: int, message: str) -> None:
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(message.encode())
        with sock.makefile("rb") as reply:
            print(f"Received: {reply.read().decode()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, nargs="?", default=0)
    port = parser.parse_args().port

    with socketserver.ThreadingTCPServer((HOST, port), ThreadNamingHandler) as server:
        port = server.server_address[1]
        print(f"serving on {HOST}:{port}", flush=True)
        server_thread = threading.Thread(target=server.serve_forever, name="server loop")
        server_thread.daemon = True  # do not keep the program alive if something fails
        server_thread.start()
        print(f"Server loop running in thread: {server_thread.name}", flush=True)

        for number in (1, 2, 3):
            client(port, f"Hello World {number}")

        server.shutdown()


if __name__ == "__main__":
    main()
