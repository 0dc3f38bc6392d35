"""``portico serve --certfile ...``: TLS from the command line, reached by real clients.

The stdlib's ``http.server`` handler is served over TLS by portico and
fetched with curl and ``openssl s_client``; certificates come from a
``trustme`` CA made for the test.  SIGHUP reloads the certificates (a broken
file keeps the old ones serving), in one process and under ``--workers``.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import trustme
from conversations import DEADLINE

from portico.engines import available_engines

pytestmark = pytest.mark.timeout(40)

LOCAL = "127.0.0.1:0"
HTTP = "http.server:SimpleHTTPRequestHandler"
CURL = shutil.which("curl")
OPENSSL = shutil.which("openssl")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def site(tmp_path: Path, ca: trustme.CA) -> Path:
    """A folder to serve (with hello.txt), its certificate, and the CA file."""
    (tmp_path / "hello.txt").write_text("hello over tls\n")
    issue(ca, tmp_path / "server.pem", "first")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return tmp_path


def issue(ca: trustme.CA, path: Path, common_name: str) -> None:
    cert = ca.issue_cert("localhost", "127.0.0.1", common_name=common_name)
    cert.private_key_and_cert_chain_pem.write_to_path(str(path))


def common_name(address: tuple[str, int], cafile: Path) -> str:
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection(address, timeout=DEADLINE) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return str(dict(item[0] for item in tls.getpeercert()["subject"])["commonName"])


@pytest.mark.skipif(CURL is None, reason="needs curl")
def test_curl_fetches_from_http_server_handlers_over_tls(portico_serve, site: Path) -> None:
    server = portico_serve(HTTP, "--bind", LOCAL, "--certfile", str(site / "server.pem"), cwd=site)
    port = server.addresses[0][1]
    result = subprocess.run(
        [CURL, "--silent", "--show-error", "--cacert", str(site / "ca.pem"),
         "--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/hello.txt"],
        capture_output=True, timeout=DEADLINE, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello over tls\n"
    assert server.stop() == 0


@pytest.mark.skipif(OPENSSL is None, reason="needs openssl")
def test_openssl_s_client_verifies_and_talks(portico_serve, site: Path) -> None:
    server = portico_serve(HTTP, "--bind", LOCAL, "--certfile", str(site / "server.pem"), cwd=site)
    port = server.addresses[0][1]
    result = subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
         "-CAfile", str(site / "ca.pem"), "-verify_return_error", "-ign_eof"],
        input=b"GET /hello.txt HTTP/1.0\r\n\r\n",
        capture_output=True, timeout=DEADLINE, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert b"Verify return code: 0 (ok)" in result.stdout
    assert b"HTTP/1.0 200 OK" in result.stdout and b"hello over tls" in result.stdout
    assert server.stop() == 0


@pytest.mark.parametrize("workers", [None, "2"])
def test_sighup_reloads_certificates_and_a_broken_file_keeps_the_old(
    portico_serve, site: Path, ca: trustme.CA, workers: str | None
) -> None:
    prefork = ["--workers", workers] if workers else []
    server = portico_serve(
        "upper", "--bind", LOCAL, "--certfile", str(site / "server.pem"), *prefork
    )
    if workers:
        server.wait_for(r"portico\.prefork: master pid \d+: 2 workers serving")
    address = server.addresses[0]
    assert common_name(address, site / "ca.pem") == "first"
    issue(ca, site / "server.pem", "second")
    since = len(server.lines)
    server.popen.send_signal(signal.SIGHUP)
    if workers:
        server.wait_for(r"reload: the new workers serve; draining the old ones", since=since)
        server.wait_for(r"worker [12] \(pid \d+\) stopped \(exit status 0\)", 2, since=since)
    else:
        server.wait_for(r"portico\.tls: TLS certificates reloaded", since=since)
    assert common_name(address, site / "ca.pem") == "second"
    (site / "server.pem").write_text("not a certificate\n")
    since = len(server.lines)
    server.popen.send_signal(signal.SIGHUP)
    server.wait_for(r"TLS reload failed; the previous certificates go on serving", since=since)
    assert common_name(address, site / "ca.pem") == "second"
    assert server.stop() == 0


def test_tls_settings_are_checked(portico_run, site: Path) -> None:
    result = portico_run("serve", "--keyfile", "key.pem")
    assert result.returncode == 2 and "--keyfile needs --certfile" in result.stderr
    result = portico_run("serve", "--certfile", str(site / "missing.pem"), "--bind", LOCAL)
    assert result.returncode == 2 and "missing.pem: no such file" in result.stderr
    result = portico_run("serve", "--certfile", str(site / "server.pem"), "--udp")
    assert result.returncode == 2 and "cannot be used with --udp" in result.stderr
    result = portico_run(
        "serve", "--certfile", str(site / "server.pem"), "--client-cert", "required"
    )
    assert result.returncode == 2 and "needs ca_certs" in result.stderr


@pytest.mark.parametrize("engine", available_engines())
def test_every_engine_serves_tls(portico_serve, site: Path, engine: str) -> None:
    server = portico_serve(
        "upper", "--engine", engine, "--bind", LOCAL, "--certfile", str(site / "server.pem")
    )
    context = ssl.create_default_context(cafile=str(site / "ca.pem"))
    with (
        socket.create_connection(server.addresses[0], timeout=DEADLINE) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
        tls.makefile("rb") as replies,
    ):
        for line in (b"one\n", b"two " * 5000 + b"\n"):
            tls.sendall(line)
            assert replies.readline() == line.upper()
    assert server.stop() == 0
