"""What portico's in-memory TLS costs per request, against the stdlib's ``ssl.SSLSocket``.

portico runs TLS over the engine's own socket with ``SSLContext.wrap_bio``
(:class:`portico.tls.TLSStream`): every record is copied between the socket
and OpenSSL's memory BIOs, in Python.  The stdlib's ``SSLSocket`` hands
OpenSSL the descriptor and does its I/O in C.  Here one thread serves 64-byte
lines over a ``socketpair`` (no network) the way ``StreamRequestHandler`` does
(``makefile("rb").readline()``, then ``sendall()`` of the upper-cased line)
in three ways: plaintext, over an ``SSLSocket``, and over a ``TLSStream``;
another thread is the client.  The figure is the serving thread's own CPU
time per request (``time.thread_time()``), the median of ``--runs`` runs,
each mode in turn.  TLS 1.3 with the bench's certificate (``bench.throughput.tls``).

    python -m bench.tls_stream --requests 20000 --runs 3
"""

from __future__ import annotations

import argparse
import socket
import ssl
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from bench.throughput.peers.common import server_context
from bench.throughput.tls import SERVER_NAME, tls_files
from portico.tls import TLSStream

MODES = ("plaintext", "ssl.SSLSocket", "portico TLSStream")
LINE = b"x" * 63 + b"\n"
TIMEOUT = 10.0  # every socket wait is bounded


def serve(mode: str, sock: socket.socket, results: list[float]) -> None:
    """Answer lines upper-cased until the client closes; record CPU µs per request."""
    sock.settimeout(TIMEOUT)
    files = tls_files()
    context = server_context(str(files.certfile), str(files.keyfile))
    conn: Any = sock
    if mode == "ssl.SSLSocket":
        conn = context.wrap_socket(sock, server_side=True)
    elif mode == "portico TLSStream":
        conn = TLSStream(sock, context)
        conn.handshake(TIMEOUT)
    rfile = conn.makefile("rb")
    served = 0
    started = time.thread_time()
    try:
        while line := rfile.readline(65536):
            conn.sendall(line.upper())
            served += 1
    except (ssl.SSLError, OSError):
        pass
    results.append(1e6 * (time.thread_time() - started) / max(served, 1))
    if isinstance(conn, TLSStream):
        conn.close_notify()
    sock.close()


def run(mode: str, requests: int) -> float:
    client_sock, server_sock = socket.socketpair()
    results: list[float] = []
    thread = threading.Thread(target=serve, args=(mode, server_sock, results), daemon=True)
    thread.start()
    client_sock.settimeout(TIMEOUT)
    client: Any = client_sock
    if mode != "plaintext":
        context = ssl.create_default_context(cafile=str(tls_files().ca))
        client = context.wrap_socket(client_sock, server_hostname=SERVER_NAME)
    expected = LINE.upper()
    for _ in range(requests):
        client.sendall(LINE)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = client.recv(4096)
            if not chunk:
                raise ConnectionError("the server closed early")
            reply += chunk
        if reply != expected:
            raise AssertionError(f"wrong reply {reply!r}")
    if mode == "plaintext":
        client_sock.shutdown(socket.SHUT_WR)
    else:
        try:
            client.unwrap()
        except (ssl.SSLError, OSError):
            pass
    thread.join(TIMEOUT)
    client_sock.close()
    if not results:
        raise RuntimeError(f"{mode}: the server thread did not finish")
    return results[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tls_stream", description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="requests per run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each mode, interleaved")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.runs < 1:
        parser.error("--requests and --runs must be positive")
    figures: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.runs):
        for mode in MODES:
            figures[mode].append(run(mode, args.requests))
    plain = statistics.median(figures["plaintext"])
    print(f"server CPU per 64-byte request, median of {args.runs} runs ({ssl.OPENSSL_VERSION}):")
    for mode, values in figures.items():
        median = statistics.median(values)
        extra = f", TLS adds {median - plain:.1f} µs" if mode != "plaintext" else ""
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {mode:18} {median:6.1f} µs ({runs}){extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
