"""TLS on portico servers, in this process, with Python's ssl as the client.

Certificates are made at test time by ``trustme`` (a throwaway CA).  Each
engine that runs a blocking-style handler serves the same conversation;
then what TLS adds: TLS 1.2 at least, ALPN, SNI with wildcards, client
certificates and the peer identity in the handler, reload (good and bad
files), and clients that connect and never handshake delaying nobody.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme

import portico
from portico.engines import AsyncStreamRequestHandler, available_engines, server_class
from portico.errors import ConfigurationError
from portico.tls import Certificate, TLSConfig

pytestmark = pytest.mark.timeout(60)

DEADLINE = 10.0
ENGINES = [e for e in ("serial", "threads", "pool", "event") if e in available_engines()]


class Upper(portico.StreamRequestHandler):
    """Each line upper-cased; "who" answers with the TLS session as the handler sees it."""

    def handle(self) -> None:
        for line in self.rfile:
            if line.strip() == b"who":
                self.wfile.write(describe(self.request).encode() + b"\n")
            else:
                self.wfile.write(line.upper())


def describe(stream: Any) -> str:
    cert = stream.getpeercert() or {}
    subject = dict(item[0] for item in cert.get("subject", ()))
    sans = ",".join(value for _, value in cert.get("subjectAltName", ()))
    return f"{stream.version()}|{stream.server_name}|{subject.get('commonName', '-')}|{sans}"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files: the CA, a server pair for localhost, another for *.example.test."""
    folder = tmp_path_factory.mktemp("tls")
    paths: dict[str, str] = {}
    for name, cert in (
        ("local", ca.issue_cert("localhost", "127.0.0.1")),
        ("wild", ca.issue_cert("*.example.test")),
    ):
        paths[name] = str(folder / f"{name}.pem")
        cert.private_key_and_cert_chain_pem.write_to_path(paths[name])
    paths["ca"] = str(folder / "ca.pem")
    ca.cert_pem.write_to_path(paths["ca"])
    return paths


@pytest.fixture
def serve(serving: Any) -> Any:
    def start(engine: str, config: TLSConfig, **attributes: Any) -> Any:
        server = server_class(engine, portico.TCPServer)(("127.0.0.1", 0), Upper)
        for name, value in attributes.items():
            setattr(server, name, value)
        server.use_tls(config)
        return serving(server)

    return start


def client_context(files: dict[str, str], **kwargs: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=files["ca"])
    for name, value in kwargs.items():
        setattr(context, name, value)
    return context


@contextmanager
def tls_connection(server: Any, context: ssl.SSLContext, name: str = "localhost") -> Iterator[Any]:
    raw = socket.create_connection(server.server_address, timeout=DEADLINE)
    with raw, context.wrap_socket(raw, server_hostname=name) as tls:
        yield tls


def talk(
    server: Any, context: ssl.SSLContext, lines: list[bytes], name: str = "localhost"
) -> list[bytes]:
    with tls_connection(server, context, name) as tls, tls.makefile("rb") as reader:
        answers = []
        for line in lines:
            tls.sendall(line)
            answers.append(reader.readline())
        return answers


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_serves_a_tls_conversation(serve, files, engine: str) -> None:
    server = serve(engine, TLSConfig(Certificate(files["local"])))
    lines = [b"hello\n", b"x" * 20000 + b"\n", b"who\n"]
    answers = talk(server, client_context(files), lines)
    assert answers[:2] == [b"HELLO\n", b"X" * 20000 + b"\n"]
    assert answers[2].split(b"|")[:2] == [b"TLSv1.3", b"localhost"]


def test_tls_1_2_is_the_minimum_and_is_served(serve, files) -> None:
    server = serve("threads", TLSConfig(Certificate(files["local"])))
    # What the server accepts is the context's floor (a TLS 1.1 client could not prove it:
    # this OpenSSL refuses to speak TLS 1.1 itself).
    assert server.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_2
    capped = client_context(files, maximum_version=ssl.TLSVersion.TLSv1_2)
    assert talk(server, capped, [b"who\n"])[0].startswith(b"TLSv1.2|")


def test_alpn_is_negotiated(serve, files) -> None:
    server = serve("threads", TLSConfig(Certificate(files["local"]), alpn=("h2", "upper/1")))
    context = client_context(files)
    context.set_alpn_protocols(["upper/1"])
    with tls_connection(server, context) as tls:
        assert tls.selected_alpn_protocol() == "upper/1"


def test_sni_picks_the_certificate_by_name_with_wildcards(serve, files) -> None:
    config = TLSConfig(
        Certificate(files["local"]), by_name={"*.example.test": Certificate(files["wild"])}
    )
    server = serve("threads", config)
    context = client_context(files)
    # Each handshake verifies the certificate against the name asked for.
    assert talk(server, context, [b"who\n"], "api.example.test")[0].split(b"|")[1] == (
        b"api.example.test"
    )
    assert talk(server, context, [b"a\n"], "localhost") == [b"A\n"]
    with pytest.raises(ssl.SSLCertVerificationError):
        talk(server, context, [b"a\n"], "deep.api.example.test")  # one label only


def test_client_certificates_identify_the_peer(serve, files, ca, tmp_path: Path) -> None:
    config = TLSConfig(Certificate(files["local"]), ca_certs=files["ca"], client_cert="required")
    server = serve("threads", config)
    client_pem = tmp_path / "client.pem"
    ca.issue_cert(
        "alice@example.test", common_name="alice"
    ).private_key_and_cert_chain_pem.write_to_path(client_pem)
    context = client_context(files)
    context.load_cert_chain(client_pem)
    who = talk(server, context, [b"who\n"])[0].decode().strip().split("|")
    assert who[2:] == ["alice", "alice@example.test"]
    with pytest.raises((ssl.SSLError, ConnectionError)):
        talk(server, client_context(files), [b"who\n", b"who\n"])  # no certificate: refused


def test_reload_swaps_good_files_and_keeps_serving_on_bad_ones(
    serve, files, ca, tmp_path: Path, caplog
) -> None:
    live = tmp_path / "live.pem"
    ca.issue_cert("localhost", common_name="first").private_key_and_cert_chain_pem.write_to_path(
        live
    )
    server = serve("threads", TLSConfig(Certificate(str(live))))

    def served_common_name() -> str:
        with tls_connection(server, client_context(files)) as tls:
            subject = dict(item[0] for item in tls.getpeercert()["subject"])
            return str(subject["commonName"])

    assert served_common_name() == "first"
    ca.issue_cert("localhost", common_name="second").private_key_and_cert_chain_pem.write_to_path(
        live
    )
    assert server.reload_tls()
    assert served_common_name() == "second"
    live.write_text("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    with caplog.at_level(logging.ERROR, logger="portico.tls"):
        assert not server.reload_tls()
    assert "the previous certificates go on serving" in caplog.text
    assert served_common_name() == "second"


def test_bad_files_are_configuration_errors(files, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such file"):
        TLSConfig(Certificate(str(tmp_path / "missing.pem"))).load()
    with pytest.raises(ConfigurationError, match="needs ca_certs"):
        TLSConfig(Certificate(files["local"]), client_cert="required")
    with pytest.raises(ConfigurationError, match="stream server"):
        portico.UDPServer(("127.0.0.1", 0), portico.DatagramRequestHandler).use_tls(
            TLSConfig(Certificate(files["local"]))
        )


@pytest.mark.parametrize("engine", ENGINES)
def test_silent_clients_delay_nobody(serve, files, engine: str, caplog) -> None:
    """200 clients connect and never start their handshake; a normal client is served.

    Even by ``serial`` and by a ``pool`` of fewer threads than silent clients: the serving
    loop holds a connection until its client speaks, so a silent one costs no thread.
    """
    server = serve(engine, TLSConfig(Certificate(files["local"])), tls_handshake_timeout=30.0)
    silent = [socket.create_connection(server.server_address, timeout=DEADLINE) for _ in range(200)]
    try:
        context = client_context(files)
        for n in range(100):
            assert talk(server, context, [b"request %d\n" % n]) == [b"REQUEST %d\n" % n]
    finally:
        for sock in silent:
            sock.close()


def test_garbage_instead_of_a_handshake_is_logged(serve, files, caplog) -> None:
    server = serve("threads", TLSConfig(Certificate(files["local"])))
    with caplog.at_level(logging.INFO, logger="portico.tls"):
        with socket.create_connection(server.server_address, timeout=DEADLINE) as raw:
            raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while raw.recv(4096):  # an alert, perhaps, then the server closes
                pass
        assert talk(server, client_context(files), [b"fine\n"]) == [b"FINE\n"]
    assert "TLS handshake with 127.0.0.1:" in caplog.text


class AsyncUpper(AsyncStreamRequestHandler):
    async def handle(self) -> None:
        async for line in self.reader:
            if line.strip() == b"who":
                tls = self.request.transport.get_extra_info("ssl_object")
                name = getattr(tls, "portico_server_name", None)
                self.writer.write(f"{tls.version()}|{name}\n".encode())
            else:
                self.writer.write(line.upper())


def test_the_async_engine_serves_tls_and_follows_reloads(files, ca, tmp_path: Path) -> None:
    live = tmp_path / "live.pem"
    ca.issue_cert("localhost", common_name="first").private_key_and_cert_chain_pem.write_to_path(
        live
    )
    server = server_class("async", portico.TCPServer)(("127.0.0.1", 0), AsyncUpper)
    server.use_tls(TLSConfig(Certificate(str(live))))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    try:
        context = client_context(files)
        assert talk(server, context, [b"hi\n", b"who\n"]) == [b"HI\n", b"TLSv1.3|localhost\n"]
        silent = [
            socket.create_connection(server.server_address, timeout=DEADLINE) for _ in range(50)
        ]
        for n in range(20):
            assert talk(server, context, [b"r %d\n" % n]) == [b"R %d\n" % n]
        for sock in silent:
            sock.close()
        ca.issue_cert(
            "localhost", common_name="second"
        ).private_key_and_cert_chain_pem.write_to_path(live)
        assert server.reload_tls()
        with tls_connection(server, context) as tls:
            assert dict(item[0] for item in tls.getpeercert()["subject"])["commonName"] == "second"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(DEADLINE)


class StartTLS(portico.StreamRequestHandler):
    """A STARTTLS-style protocol: plaintext lines until STARTTLS, then the same over TLS."""

    def handle(self) -> None:
        for line in self.rfile:
            self.server.heard.append(line)
            if line == b"STARTTLS\n":
                self.wfile.write(b"READY\n")
                self.start_tls()
                # The loop goes on over TLS: a new rfile.
                return self.handle()
            self.wfile.write(line.upper())


@pytest.fixture
def starttls_server(files) -> Iterator[Any]:
    server = portico.ThreadingTCPServer(("127.0.0.1", 0), StartTLS)
    server.starttls_context = TLSConfig(Certificate(files["local"])).load()
    server.heard = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(DEADLINE)


def test_start_tls_upgrades_a_plaintext_conversation(starttls_server, files) -> None:
    with socket.create_connection(starttls_server.server_address, timeout=DEADLINE) as raw:
        plain = raw.makefile("rb")
        raw.sendall(b"hello\n")
        assert plain.readline() == b"HELLO\n"
        raw.sendall(b"STARTTLS\n")
        assert plain.readline() == b"READY\n"
        with client_context(files).wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"secret\n")
            assert tls.makefile("rb").readline() == b"SECRET\n"
            assert tls.version() == "TLSv1.3"


def test_start_tls_never_obeys_a_command_injected_before_the_handshake(
    starttls_server, files
) -> None:
    with socket.create_connection(starttls_server.server_address, timeout=DEADLINE) as raw:
        raw.sendall(b"STARTTLS\nINJECTED\n")  # one packet: the classic injection
        assert raw.makefile("rb").readline() == b"READY\n"
        while raw.recv(4096):  # the server fails the handshake and closes
            pass
    assert starttls_server.heard == [b"STARTTLS\n"]


def test_tls_over_a_unix_socket(files, tmp_path: Path) -> None:
    path = str(tmp_path / "tls.sock")
    server = portico.ThreadingUnixStreamServer(path, Upper)
    server.use_tls(TLSConfig(Certificate(files["local"])))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    try:
        with socket.socket(socket.AF_UNIX) as raw:
            raw.settimeout(DEADLINE)
            raw.connect(path)
            with client_context(files).wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"unix\n")
                assert tls.makefile("rb").readline() == b"UNIX\n"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(DEADLINE)


def test_a_client_silent_past_the_handshake_timeout_is_closed_and_logged(
    serve, files, caplog
) -> None:
    server = serve("pool", TLSConfig(Certificate(files["local"])), tls_handshake_timeout=0.3)
    with (
        caplog.at_level(logging.INFO, logger="portico.tls"),
        socket.create_connection(server.server_address, timeout=DEADLINE) as silent,
    ):
        assert silent.recv(10) == b""  # closed by the server at its deadline
    assert "no handshake within the time allowed" in caplog.text
