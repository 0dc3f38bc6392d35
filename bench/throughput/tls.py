"""The TLS cells' certificates: a throwaway CA and a ``localhost`` certificate it signed.

Made once into ``bench/.build/tls/`` (git-ignored), at the first TLS cell, with
``trustme`` (a test dependency of portico; ECDSA P-256 keys, as trustme makes
them by default), or, without it, with the ``openssl`` command (the same key
type, self-signed).  Every TLS server of a run serves the same certificate and
key: ``cert.pem`` and ``key.pem``; the readiness probe verifies the server
against ``ca.pem``.  A set older than :data:`MAX_AGE` is made again, so that it
never expires during a run.  Concurrent makers (tests under xdist) each write
a directory of their own and rename it into place: the first one wins whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.throughput.build import BUILD_DIR, BuildError

__all__ = ["CERTIFICATE", "SERVER_NAME", "TLS_DIR", "CertificateError", "TLSFiles", "tls_files"]

TLS_DIR = BUILD_DIR / "tls"
SERVER_NAME = "localhost"  # the name the load generator asks for (SNI) and the probe checks
CERTIFICATE = "ECDSA P-256 (prime256v1), signed with ecdsa-with-SHA256 by a throwaway CA"
MAX_AGE = 7 * 24 * 3600.0  # seconds
MAKE_TIMEOUT = 60.0


class CertificateError(BuildError):
    """Neither trustme nor the openssl command could make the certificates."""


@dataclass(frozen=True)
class TLSFiles:
    """The certificate a TLS server serves, its key, and the CA that signed it."""

    certfile: Path
    keyfile: Path
    ca: Path

    @classmethod
    def under(cls, directory: Path) -> TLSFiles:
        return cls(directory / "cert.pem", directory / "key.pem", directory / "ca.pem")

    def exist(self) -> bool:
        return all(path.is_file() for path in (self.certfile, self.keyfile, self.ca))


def tls_files(directory: Path = TLS_DIR) -> TLSFiles:
    """The certificates under ``directory``, made now if missing or old."""
    files = TLSFiles.under(directory)
    if _usable(files):
        return files
    directory.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        _make(TLSFiles.under(fresh))
        if not _usable(files):  # else another maker's set took the place meanwhile: use it
            old = directory.with_name(f".{directory.name}-old-{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):
                directory.rename(old)  # the stale set, out of the way
            with contextlib.suppress(OSError):
                fresh.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    if not files.exist():
        raise CertificateError(f"the TLS certificates did not appear in {directory}")
    return files


def _usable(files: TLSFiles) -> bool:
    try:
        return files.exist() and time.time() - files.certfile.stat().st_mtime < MAX_AGE
    except OSError:  # replaced as we looked
        return False


def _make(files: TLSFiles) -> None:
    try:
        import trustme  # noqa: PLC0415 (a test dependency: the openssl command otherwise)
    except ImportError:
        _make_with_openssl(files)
        return
    ca = trustme.CA()
    leaf = ca.issue_cert(SERVER_NAME, "127.0.0.1")
    ca.cert_pem.write_to_path(str(files.ca))
    leaf.cert_chain_pems[0].write_to_path(str(files.certfile))
    leaf.private_key_pem.write_to_path(str(files.keyfile))


def _make_with_openssl(files: TLSFiles) -> None:
    """A self-signed certificate (its own CA) with the openssl command."""
    command = [
        *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
        *("-sha256", "-nodes", "-days", "30", "-subj", f"/CN={SERVER_NAME}"),
        *("-addext", f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1"),
        *("-keyout", str(files.keyfile), "-out", str(files.certfile)),
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=MAKE_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CertificateError(
            f"no trustme (pip install trustme) and no usable openssl command: {exc}"
        ) from exc
    if done.returncode != 0:
        raise CertificateError(f"{' '.join(command)} failed:\n{done.stderr.strip()}")
    shutil.copyfile(files.certfile, files.ca)
