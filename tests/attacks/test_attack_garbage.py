"""Garbage and rude clients, one at a time against each engine.

Random bytes, a 100 MiB line, NUL bytes, a reset while replies are in
flight, a half-close, and a client that never reads.  Each time the server
keeps running, a normal client is answered correctly (SHA-256 of the
replies) alongside or after the attack, no traceback is logged (a client's
misbehaviour is not a server error), and the server's peak memory stays
bounded.
"""

from __future__ import annotations

import os
import socket
import struct

import pytest
from attack_support import (
    DEADLINE,
    MIB,
    AttackServer,
    assert_same,
    checked_conversation,
    closed_by_server,
    pump,
)

pytestmark = pytest.mark.timeout(60)

BOUND_MIB = 100  # a portico serve process is about 20-30 MiB; generous, and bounded
LONG_LINE_BOUND_MIB = 50  # well under the 100 MiB the client sends
MAX_LINE = 65536  # --max-line-length, portico serve's default


def assert_no_traceback(server: AttackServer) -> None:
    """After ``finish()``, which read the whole log."""
    assert server.count("Traceback") == 0, server.explain("a client's doing logged a traceback")


def test_random_bytes(attack_server, engine: str) -> None:
    """Random bytes (newlines every 256 bytes or so), then random bytes with none, in a line
    just under the limit: every line answered upper-cased, the last partial one at the close."""
    server = attack_server(engine)
    noise = os.urandom(4 * MIB)
    no_newlines = os.urandom(MAX_LINE).replace(b"\n", b"")[: MAX_LINE - 1] + b"\n"
    # The last one ends in a partial line, which is answered at the half-close.
    for payload in (noise, no_newlines, noise + b"\n" + no_newlines[:-1]):
        with socket.create_connection(server.address, timeout=DEADLINE) as sock:
            exchange = pump(sock, payload)  # half-closes, reads to the end
        assert exchange.ended == "eof"
        assert_same(bytes(exchange.received), payload.upper(), "random bytes")
    server.finish("random bytes", bound_mib=BOUND_MIB)
    assert_no_traceback(server)


def test_nul_bytes(attack_server, engine: str) -> None:
    server = attack_server(engine)
    payload = b"".join(
        [b"\x00\n", b"\x00" * 60000 + b"\n", b"nul\x00inside\x00\n", b"\x00a\x00b" * 1000 + b"\n"]
    )
    with socket.create_connection(server.address, timeout=DEADLINE) as sock:
        exchange = pump(sock, payload, expect=len(payload))
    assert_same(bytes(exchange.received), payload.upper(), "NUL bytes")
    server.finish("NUL bytes", bound_mib=BOUND_MIB)
    assert_no_traceback(server)


def test_a_100_mib_line_is_cut_at_the_limit(attack_server, engine: str) -> None:
    """100 MiB and no newline: closed after --max-line-length, never buffered whole.

    The client reads (and drops) whatever comes back while it sends, and
    stops when the connection breaks; it gives up after the 100 MiB.
    """
    server = attack_server(engine, "--max-line-length", str(MAX_LINE))
    with socket.create_connection(server.address, timeout=DEADLINE) as sock:
        exchange = pump(sock, b"a" * MIB, repeat=100, keep=False, timeout=30)
    server.finish("100 MiB line", bound_mib=LONG_LINE_BOUND_MIB, client_sent_bytes=exchange.sent)
    assert exchange.sent < 100 * MIB and exchange.ended in ("eof", "reset"), (
        f"the server took all 100 MiB of one line ({exchange.sent} bytes sent, "
        f"{exchange.received_count} received): it did not close the connection at "
        f"--max-line-length {MAX_LINE}"
    )
    # What the client got in: the limit, plus at most what the kernel buffers on both sides.
    assert exchange.sent < 50 * MIB, exchange
    server.expect_log(rf"a line longer than {MAX_LINE} bytes \(max_line_length\)", "no log")
    assert_no_traceback(server)


def test_a_reset_while_replies_are_in_flight(attack_server, engine: str) -> None:
    """4 MiB of lines; once 64 KiB of replies came back, close with SO_LINGER 0 (a reset)."""
    server = attack_server(engine)
    line = b"reset me while answering " * 20 + b"\n"
    with socket.create_connection(server.address, timeout=DEADLINE) as sock:
        port = sock.getsockname()[1]
        exchange = pump(sock, line, repeat=4 * MIB // len(line), expect=65536, keep=False)
        assert exchange.ended == "expected", exchange
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    checked_conversation(server.address)
    server.expect_log(rf"from 127\.0\.0\.1:{port} closed after", "the reset connection never ended")
    server.finish("reset mid-reply", bound_mib=BOUND_MIB)
    assert_no_traceback(server)


def test_a_half_closed_client_gets_every_reply(attack_server, engine: str) -> None:
    server = attack_server(engine)
    for count in (1, 1000):
        checked_conversation(server.address, count=count, half_close=True)
    server.finish("half-close", bound_mib=BOUND_MIB)
    assert_no_traceback(server)


def test_a_client_that_never_reads_its_replies(attack_server, engine: str) -> None:
    """Lines sent as fast as the server takes them, no reply read: --send-timeout 2 closes it.

    The server must push back (stop reading) rather than buffer the replies:
    the client's sends stall well before its 256 MiB budget.
    """
    server = attack_server(engine)
    line = b"never read the answer " * 40 + b"\n"
    closed: str | AssertionError
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as deaf:
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        deaf.connect(server.address)
        sent = flood_until_stalled(deaf, line, budget=256 * MIB)
        checked_conversation(server.address)  # served while the deaf client is connected
        try:
            server.expect_log(
                r"did not take its replies for 2 s \(send_timeout\)",
                "the client that reads nothing was not closed by --send-timeout 2",
            )
            closed = closed_by_server(deaf)
        except AssertionError as exc:
            closed = exc  # raised once the figures are recorded
    server.finish("never reads", bound_mib=BOUND_MIB, client_sent_bytes=sent)
    if isinstance(closed, AssertionError):
        raise closed
    assert closed in ("eof", "reset")
    assert_no_traceback(server)


def flood_until_stalled(sock: socket.socket, line: bytes, *, budget: int) -> int:
    """Send copies of ``line`` without reading until a send stalls for a second (the server
    stopped reading) or the connection breaks; the bytes sent, which must be under budget."""
    sent = 0
    sock.settimeout(1.0)  # a stall this long means the server pushes back
    chunk = line * (65536 // len(line))
    try:
        while sent < budget:
            sent += sock.send(chunk)
    except TimeoutError:
        pass
    except (ConnectionResetError, BrokenPipeError):
        pass  # send_timeout fired while we were still sending
    finally:
        sock.settimeout(DEADLINE)
    assert sent < budget, f"the server read {sent} bytes from a client that reads nothing"
    return sent
