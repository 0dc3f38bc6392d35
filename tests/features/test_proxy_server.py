"""Servers behind a proxy: the PROXY header read off the accept path, for every engine.

Clients here play the proxy: they send a v1 or v2 header (made with the
module's encoders, which tests/unit/test_proxy_protocol.py checks against
the specification) and then talk.  The handler reports what it sees: its
client address and the header's TLVs.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

import pytest
import trustme

import portico
from portico.engines import AsyncStreamRequestHandler, available_engines, server_class
from portico.net.proxy_protocol import PP2_TYPE_AUTHORITY, PP2_TYPE_UNIQUE_ID, encode_v1, encode_v2
from portico.server.proxy import parse_networks, proxy_header
from portico.tls import Certificate, TLSConfig

pytestmark = pytest.mark.timeout(30)

DEADLINE = 10.0
ENGINES = [e for e in ("serial", "threads", "pool", "event") if e in available_engines()]
CLIENT = ("203.0.113.7", 40000)
SERVER = ("198.51.100.1", 443)


class Report(portico.StreamRequestHandler):
    """Each line back upper-cased, after the client address and the header's authority."""

    def handle(self) -> None:
        header = proxy_header()
        authority = (header.authority if header else None) or "-"
        for line in self.rfile:
            host, port = self.client_address[:2]
            self.wfile.write(f"{host}:{port} {authority} ".encode() + line.upper())


class DatagramReport(portico.DatagramRequestHandler):
    def handle(self) -> None:
        header = proxy_header()  # the reply goes to the proxy: client_address is its own
        assert header is not None and isinstance(header.source, tuple)
        host, port = header.source
        self.wfile.write(f"{host}:{port} ".encode() + self.rfile.read().upper())


@pytest.fixture
def serve(serving: Any) -> Any:
    def start(engine: str = "threads", base: type = portico.TCPServer, **attributes: Any) -> Any:
        handler = DatagramReport if base is portico.UDPServer else Report
        if engine == "async":
            handler = AsyncReport
        server = server_class(engine, base)(("127.0.0.1", 0), handler)
        server.proxy_protocol = "auto"
        for name, value in attributes.items():
            setattr(server, name, value)
        return serving(server)

    return start


def exchange(server: Any, chunks: list[bytes], lines: int = 1) -> list[bytes]:
    """Send ``chunks`` one send() each, then read ``lines`` replies."""
    with socket.create_connection(server.server_address, timeout=DEADLINE) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
        replies = sock.makefile("rb")
        return [replies.readline() for _ in range(lines)]


def dropped(server: Any, chunks: list[bytes]) -> bool:
    """Whether the server closed the connection without answering (a FIN, or a reset
    when it closed with our bytes unread)."""
    try:
        return exchange(server, chunks) == [b""]
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_sees_the_original_client(serve, engine: str) -> None:
    server = serve(engine)
    v1 = encode_v1(CLIENT, SERVER)
    assert exchange(server, [v1 + b"hello\n"]) == [b"203.0.113.7:40000 - HELLO\n"]
    v2 = encode_v2(CLIENT, SERVER, tlvs=[(PP2_TYPE_AUTHORITY, b"api.example.test")])
    assert exchange(server, [v2, b"again\n"]) == [b"203.0.113.7:40000 api.example.test AGAIN\n"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_header_arriving_byte_by_byte_is_read_exactly(serve, engine: str) -> None:
    server = serve(engine)
    header = encode_v2(("2001:db8::5", 1234), ("2001:db8::1", 80))
    with socket.create_connection(server.server_address, timeout=DEADLINE) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index in range(len(header)):
            sock.sendall(header[index : index + 1])
        sock.sendall(b"after the header\n")
        assert sock.makefile("rb").readline() == b"2001:db8::5:1234 - AFTER THE HEADER\n"


def test_the_handler_reads_the_tlvs(serve) -> None:
    class Tlvs(portico.StreamRequestHandler):
        def handle(self) -> None:
            header = proxy_header()
            assert header is not None
            self.wfile.write(header.unique_id or b"-")

    server = serve()
    server.RequestHandlerClass = Tlvs
    header = encode_v2(CLIENT, SERVER, tlvs=[(PP2_TYPE_UNIQUE_ID, b"req-42")], crc32c=True)
    with socket.create_connection(server.server_address, timeout=DEADLINE) as sock:
        sock.sendall(header)
        assert sock.recv(100) == b"req-42"


def test_local_keeps_the_proxys_address(serve) -> None:
    server = serve()
    reply = exchange(server, [encode_v2(None, None, command="LOCAL") + b"check\n"])[0]
    assert reply.startswith(b"127.0.0.1:") and reply.endswith(b" - CHECK\n")


def test_untrusted_peers_malformed_headers_and_silence_are_dropped(serve, caplog) -> None:
    server = serve(proxy_header_timeout=0.5)
    closed = serve(proxy_allow=parse_networks(["10.0.0.0/8"]))
    with caplog.at_level(logging.INFO, logger="portico.proxy"):
        assert dropped(closed, [encode_v1(CLIENT, SERVER) + b"x\n"])
        assert dropped(server, [b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\nx\n"])
        silent = socket.create_connection(server.server_address, timeout=DEADLINE)
        with silent:
            # Others are served meanwhile; the silent one is closed at its deadline.
            assert exchange(server, [encode_v1(CLIENT, SERVER) + b"ok\n"])[0].endswith(b"OK\n")
            assert silent.recv(10) == b""
    assert "not an allowed proxy (proxy_allow)" in caplog.text
    assert "bad PROXY header: v1 header: destination port '99999'" in caplog.text or (
        "bad PROXY header: v1 header: source port" in caplog.text
    )
    assert "no PROXY header in time" in caplog.text


def test_v2_datagrams(serve) -> None:
    server = serve(base=portico.UDPServer)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(DEADLINE)
        header = encode_v2(CLIENT, SERVER, socket_type=socket.SOCK_DGRAM)
        client.sendto(header + b"datagram", server.server_address)
        assert client.recvfrom(100)[0] == b"203.0.113.7:40000 DATAGRAM"


def test_proxy_header_then_tls(serve, tmp_path) -> None:
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(pem)
    server = serve()
    server.use_tls(TLSConfig(Certificate(str(pem))))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with socket.create_connection(server.server_address, timeout=DEADLINE) as raw:
        raw.sendall(encode_v1(CLIENT, SERVER))
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"secret\n")
            assert tls.makefile("rb").readline() == b"203.0.113.7:40000 - SECRET\n"


class AsyncReport(AsyncStreamRequestHandler):
    async def handle(self) -> None:
        header = proxy_header()
        assert header is self.request.proxy_header
        authority = (header.authority if header else None) or "-"
        async for line in self.reader:
            host, port = self.client_address[:2]
            self.writer.write(f"{host}:{port} {authority} ".encode() + line.upper())


def test_the_async_engine_reads_proxy_headers(serve, caplog) -> None:
    server = serve("async", proxy_header_timeout=0.5)
    v2 = encode_v2(CLIENT, SERVER, tlvs=[(PP2_TYPE_AUTHORITY, b"api.example.test")])
    chunks = [v2[:5], v2[5:17], v2[17:] + b"hello\n"]
    assert exchange(server, chunks) == [b"203.0.113.7:40000 api.example.test HELLO\n"]
    assert exchange(server, [encode_v1(CLIENT, SERVER), b"v1\n"]) == [b"203.0.113.7:40000 - V1\n"]
    with caplog.at_level(logging.INFO, logger="portico.proxy"):
        assert dropped(server, [b"GET / HTTP/1.0\r\n\r\n"])
        with socket.create_connection(server.server_address, timeout=DEADLINE) as silent:
            assert silent.recv(10) == b""  # dropped at the header deadline
    assert "bad PROXY header" in caplog.text and "no PROXY header in time" in caplog.text


def test_the_async_engine_drops_untrusted_proxies(serve) -> None:
    server = serve("async", proxy_allow=parse_networks(["10.0.0.0/8"]))
    assert dropped(server, [encode_v1(CLIENT, SERVER) + b"x\n"])
