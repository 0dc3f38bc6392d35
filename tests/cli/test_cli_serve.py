"""``portico serve`` end to end: a real subprocess, real sockets on loopback."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import stat
import textwrap

import pytest
from conversations import DEADLINE, converse, converse_on, udp_exchange

pytestmark = pytest.mark.timeout(10)

LOCAL = "127.0.0.1:0"


def test_upper_is_the_default_and_answers_every_line_of_a_connection(portico_serve):
    server = portico_serve("--bind", LOCAL)
    lines = [b"hello\n", b"Mixed Case 123\n", b"last one\n"]
    assert converse(server.addresses[0], lines) == [b"HELLO\n", b"MIXED CASE 123\n", b"LAST ONE\n"]
    server.wait_for(r"INFO portico\.cli: handler upper over tcp$")


def test_lines_sent_together_are_each_answered(portico_serve):
    server = portico_serve("upper", "--bind", LOCAL)
    with socket.create_connection(server.addresses[0], timeout=DEADLINE) as sock:
        sock.sendall(b"one\ntwo\nthree\n")
        sock.shutdown(socket.SHUT_WR)
        with sock.makefile("rb") as answers:
            assert answers.read() == b"ONE\nTWO\nTHREE\n"


def test_echo_answers_unchanged(portico_serve):
    server = portico_serve("echo", "--bind", LOCAL)
    assert converse(server.addresses[0], [b"Hello\n", b"again\n"]) == [b"Hello\n", b"again\n"]


def test_discard_reads_everything_and_answers_nothing(portico_serve):
    server = portico_serve("discard", "--bind", LOCAL)
    payload = b"x" * 100_000
    with socket.create_connection(server.addresses[0], timeout=DEADLINE) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""  # EOF: the server closed without a byte
    server.wait_for(rf"closed after [\d.]+ s: {len(payload)} bytes in, 0 bytes out; completed$")


def test_udp_answers_each_datagram_upper_cased(portico_serve):
    server = portico_serve("--udp", "--bind", LOCAL)
    address = server.addresses[0]
    assert udp_exchange(address, b"hello") == b"HELLO"
    assert udp_exchange(address, b"two\nlines\n") == b"TWO\nLINES\n"
    server.wait_for(
        r"INFO portico\.access: datagram \d+ from 127\.0\.0\.1:\d+ "
        r".*: 5 bytes in, 5 bytes out; completed$"
    )


def test_udp_discard_sends_no_reply(portico_serve):
    server = portico_serve("discard", "--udp", "--bind", LOCAL)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"drop me", server.addresses[0])
        port = sock.getsockname()[1]
        # The log line is written after the handler finished; a reply would be queued by now.
        server.wait_for(
            rf"datagram \d+ from 127\.0\.0\.1:{port} .*: 7 bytes in, 0 bytes out; completed$"
        )
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(1)


def test_unix_stream_socket_with_mode_is_removed_on_stop(portico_serve, short_tmp):
    path = short_tmp / "portico.sock"
    server = portico_serve("--unix", str(path), "--unix-mode", "600")
    assert server.addresses == [str(path)]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(DEADLINE)
        sock.connect(str(path))
        assert converse_on(sock, [b"unix\n", b"again\n"]) == [b"UNIX\n", b"AGAIN\n"]
    assert server.stop() == 0
    assert not path.exists()


def test_unix_datagram_socket(portico_serve, short_tmp):
    path = short_tmp / "server.sock"
    server = portico_serve("echo", "--udp", "--unix", str(path))
    server.wait_for(r"handler echo over unix datagram$")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.settimeout(DEADLINE)
        sock.bind(str(short_tmp / "client.sock"))  # so that the reply has somewhere to go
        sock.sendto(b"ping", str(path))
        assert sock.recv(100) == b"ping"


def test_several_binds_serve_ipv4_and_ipv6(portico_serve, ipv6_loopback):
    server = portico_serve("--bind", LOCAL, "--bind", f"[{ipv6_loopback}]:0", listeners=2)
    v4, v6 = server.addresses
    assert v4[0] == "127.0.0.1"
    assert v6[0] == "::1"
    assert converse(v4, [b"four\n"]) == [b"FOUR\n"]
    assert converse(v6, [b"six\n"]) == [b"SIX\n"]
    server.wait_for(r"connection \d+ from \[::1\]:\d+ closed after")


def test_two_ipv4_binds(portico_serve):
    server = portico_serve("echo", "--bind", LOCAL, "--bind", LOCAL, listeners=2)
    first, second = server.addresses
    assert first[1] != second[1]
    for address in server.addresses:
        assert converse(address, [b"hi\n"]) == [b"hi\n"]


def test_module_class_handler_from_pythonpath(portico_serve, tmp_path):
    (tmp_path / "reverser.py").write_text(
        textwrap.dedent(
            """
            import socketserver  # the standard library's classes work too

            class Reverse(socketserver.StreamRequestHandler):
                def handle(self):
                    for line in self.rfile:
                        self.wfile.write(line.rstrip(b"\\n")[::-1] + b"\\n")
            """
        )
    )
    server = portico_serve("reverser:Reverse", "--bind", LOCAL, pythonpath=tmp_path)
    assert converse(server.addresses[0], [b"abc\n", b"portico\n"]) == [b"cba\n", b"ocitrop\n"]
    server.wait_for(r"handler reverser:Reverse over tcp$")


def test_http_server_handler_from_the_standard_library(portico_serve, tmp_path):
    (tmp_path / "hello.txt").write_text("hello from portico\n")
    server = portico_serve("http.server:SimpleHTTPRequestHandler", "--bind", LOCAL, cwd=tmp_path)
    host, port = server.addresses[0]
    connection = http.client.HTTPConnection(host, port, timeout=DEADLINE)
    try:
        connection.request("GET", "/hello.txt")
        response = connection.getresponse()
        assert response.status == 200
        assert response.read() == b"hello from portico\n"
    finally:
        connection.close()


def test_each_connection_gets_one_access_line_and_a_debug_line_when_it_opens(portico_serve):
    server = portico_serve("--bind", LOCAL, "--log-level", "DEBUG")
    with socket.create_connection(server.addresses[0], timeout=DEADLINE) as sock:
        port = sock.getsockname()[1]
        (opened,) = server.wait_for(
            rf"DEBUG portico\.access: connection (\d+) from 127\.0\.0\.1:{port} opened$"
        )
        assert converse_on(sock, [b"hello\n", b"bye\n"]) == [b"HELLO\n", b"BYE\n"]
    number = opened.group(1)
    server.wait_for(
        rf"INFO portico\.access: connection {number} from 127\.0\.0\.1:{port} "
        r"closed after \d+\.\d{3} s: 10 bytes in, 10 bytes out; completed$"
    )


def test_environment_variables_configure_serve(portico_serve):
    server = portico_serve(
        env={"PORTICO_HANDLER": "echo", "PORTICO_BIND": f"{LOCAL},{LOCAL}"}, listeners=2
    )
    assert converse(server.addresses[1], [b"From Env\n"]) == [b"From Env\n"]


def test_the_command_line_beats_the_environment(portico_serve):
    server = portico_serve("upper", "--bind", LOCAL, env={"PORTICO_HANDLER": "echo"})
    assert converse(server.addresses[0], [b"cli\n"]) == [b"CLI\n"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signals_stop_cleanly_with_exit_code_0(portico_serve, signum):
    server = portico_serve("--bind", LOCAL, "--drain-timeout", "0")
    with socket.create_connection(server.addresses[0], timeout=DEADLINE) as idle:
        assert converse_on(idle, [b"still here\n"]) == [b"STILL HERE\n"]
        # With no time to drain, a client still connected does not hold the stop up.
        assert server.stop(signum) == 0
    name = signal.Signals(signum).name
    assert f"INFO portico.server: stopping on {name}" in server.stderr
    assert "Traceback" not in server.stderr


def test_help_and_version_exit_0(portico_run):
    result = portico_run("serve", "--help")
    assert result.returncode == 0
    assert "--bind HOST:PORT" in result.stdout
    assert "upper" in result.stdout
    version = portico_run("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("portico ")


def test_lines_are_bounded_by_default_and_the_bound_is_settable(portico_serve) -> None:
    server = portico_serve("upper", "--bind", "127.0.0.1:0", "--max-line-length", "64")
    address = server.addresses[0]
    assert converse(address, [b"x" * 63 + b"\n"]) == [b"X" * 63 + b"\n"]
    with socket.create_connection(address, timeout=DEADLINE) as sock:
        sock.sendall(b"y" * 200)
        assert sock.recv(10) == b""  # closed: no newline within 64 bytes
    server.wait_for(r"WARNING portico\.server: connection from .* closed: a line longer than 64")
    assert server.stop() == 0


def test_a_slowloris_client_is_dropped_by_the_defaults_made_short(portico_serve) -> None:
    server = portico_serve(
        "upper", "--bind", "127.0.0.1:0", "--min-receive-rate-window", "0.5",
        "--first-byte-timeout", "0.5",
    )  # fmt: skip
    address = server.addresses[0]
    with socket.create_connection(address, timeout=DEADLINE) as silent:
        assert silent.recv(10) == b""
    server.wait_for(r"closed: nothing received within 0\.5 s \(first_byte_timeout\)")
    assert converse(address, [b"still serving\n"]) == [b"STILL SERVING\n"]
    assert server.stop() == 0
