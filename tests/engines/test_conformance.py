"""The conformance suite: what every engine must do, run on each of them.

Each test is parametrized by the ``engine`` fixture (every engine available
here) and serves the handlers of ``engine_handlers.py``: each line (or
datagram) answered upper-cased, ``boom`` raising ZeroDivisionError.  Every
server is stopped and checked for leaked threads, descriptors and child
processes, by the test or at teardown.
"""

from __future__ import annotations

import socket
import struct

import pytest
from engine_support import DEADLINE, Served, client_threads

pytestmark = pytest.mark.timeout(30)

CLIENTS = 50
LINES = 20


def connect(served: Served) -> socket.socket:
    return socket.create_connection(served.address, timeout=DEADLINE)


def converse(sock: socket.socket, lines: list[bytes]) -> list[bytes]:
    """Send each line and read its answer before sending the next."""
    replies = []
    with sock.makefile("rb") as answers:
        for line in lines:
            sock.sendall(line)
            replies.append(answers.readline())
    return replies


def half_close_and_read(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    with sock.makefile("rb") as answers:
        return answers.read()


def mixed_case_line(client: int, line: int) -> bytes:
    # Lengths vary with the line, so that replies cannot be confused with each other.
    return b"client %02d line %02d: mIxEd %s\n" % (client, line, b"abC" * (client + line))


def test_replies_are_correct_under_concurrency(serve) -> None:
    served = serve()

    def client(index: int) -> None:
        lines = [mixed_case_line(index, n) for n in range(LINES)]
        with connect(served) as sock:
            assert converse(sock, lines) == [line.upper() for line in lines]

    client_threads(client, CLIENTS)
    served.stop().assert_clean()


def test_a_one_mebibyte_line_comes_back_whole(serve) -> None:
    served = serve()
    line = bytes(range(97, 123)) * (1024 * 1024 // 26) + b"\n"
    assert len(line) > 1024 * 1024 - 64
    with connect(served) as sock:
        assert half_close_and_read(sock, line + b"and after\n") == line.upper() + b"AND AFTER\n"
    served.stop().assert_clean()


def test_a_client_that_shuts_down_writing_still_gets_every_reply(serve) -> None:
    served = serve()
    with connect(served) as sock:
        assert half_close_and_read(sock, b"one\ntwo\nthree\n") == b"ONE\nTWO\nTHREE\n"
    served.stop().assert_clean()


def test_a_client_reset_mid_request_does_not_disturb_the_others(serve) -> None:
    served = serve()
    with connect(served) as sock:
        assert converse(sock, [b"hello\n"]) == [b"HELLO\n"]  # the handler is running
        sock.sendall(b"half a li")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # close() with a zero linger sent a reset.
    with connect(served) as sock:
        assert converse(sock, [b"next\n", b"one\n"]) == [b"NEXT\n", b"ONE\n"]
    report = served.stop()
    report.assert_clean()
    # The reset may reach the handler as an error; nothing else may.
    assert set(report.error_types()) <= {"ConnectionResetError"}


def test_handler_exceptions_are_isolated_and_logged(serve) -> None:
    served = serve()

    def client(index: int) -> list[bytes]:
        with connect(served) as sock:
            if index % 2:
                lines = [mixed_case_line(index, n) for n in range(5)]
                assert converse(sock, lines) == [line.upper() for line in lines]
                return []
            return converse(sock, [b"fine\n", b"boom\n"])

    results = client_threads(client, 10)
    # The failing handler's connection is closed; the client reads an end of file.
    assert results[::2] == [[b"FINE\n", b""]] * 5
    with connect(served) as sock:
        assert converse(sock, [b"still serving\n"]) == [b"STILL SERVING\n"]
    report = served.stop()
    report.assert_clean()
    assert report.error_types() == ["ZeroDivisionError"] * 5
    for _, message in report.errors:
        assert message.startswith("Exception occurred during processing of request from 127.0.0.1:")


def test_shutdown_lets_requests_in_flight_finish_then_releases_everything(serve) -> None:
    served = serve()
    for index in range(5):
        with connect(served) as sock:
            assert half_close_and_read(sock, b"warm %d\n" % index) == b"WARM %d\n" % index
    with connect(served) as sock:
        assert converse(sock, [b"before\n"]) == [b"BEFORE\n"]
        served.begin_stop()
        # Stopping ends the serving loop, not the conversation under way.
        assert converse(sock, [b"during\n", b"stop\n"]) == [b"DURING\n", b"STOP\n"]
    report = served.finish_stop()
    report.assert_clean()
    assert report.errors == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(served.address, timeout=DEADLINE).close()


def test_datagrams_are_each_answered_under_concurrency(serve) -> None:
    served = serve("datagram")

    def client(index: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(DEADLINE)
            for n in range(10):
                datagram = mixed_case_line(index, n)
                sock.sendto(datagram, served.address)
                reply, sender = sock.recvfrom(65536)
                assert (reply, sender) == (datagram.upper(), served.address)

    client_threads(client, 10)
    report = served.stop()
    report.assert_clean()
    assert report.errors == []


def test_a_failing_datagram_handler_is_logged_and_the_next_datagram_served(serve) -> None:
    served = serve("datagram")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(DEADLINE)
        sock.sendto(b"boom\n", served.address)
        sock.sendto(b"after\n", served.address)
        # finish() still runs after a failed handle(): it sends what wfile holds, nothing.
        replies = sorted(sock.recvfrom(65536)[0] for _ in range(2))
        assert replies == [b"", b"AFTER\n"]
    report = served.stop()
    report.assert_clean()
    assert report.error_types() == ["ZeroDivisionError"]
