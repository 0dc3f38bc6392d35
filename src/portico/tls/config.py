"""What a TLS server presents, as one reloadable record: certificates, client checks, ALPN.

:class:`TLSConfig` holds file paths and choices, not an ``SSLContext``:
:meth:`TLSConfig.load` reads the files and builds a fresh context every
time, so a reload sees the files as they are now, and a broken new pair
fails in ``load()`` (with the reason) before anything is swapped.

Defaults are what an operator would choose: TLS 1.2 at least, no
compression, the server's cipher preference, session tickets on.  Several
certificates are chosen by the name the client asks for (SNI), with
``*.example.com`` wildcards matching one label; a client that asks for no
known name gets the first certificate.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from portico.errors import ConfigurationError
from portico.tls.stream import SERVER_NAME_ATTRIBUTE

__all__ = ["CLIENT_CERT_MODES", "Certificate", "TLSConfig"]

log = logging.getLogger("portico.tls")

CLIENT_CERT_MODES: Mapping[str, ssl.VerifyMode] = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


@dataclass(frozen=True)
class Certificate:
    """A certificate chain and its private key (in the same file when ``keyfile`` is None)."""

    certfile: str
    keyfile: str | None = None


@dataclass(frozen=True)
class TLSConfig:
    """Everything a TLS listener presents; ``load()`` makes the ``SSLContext``."""

    certificate: Certificate
    by_name: Mapping[str, Certificate] = field(default_factory=dict)  # SNI: name -> certificate
    ca_certs: str | None = None  # the CAs that client certificates must chain to
    client_cert: str = "none"  # none | optional | required
    alpn: Sequence[str] = ()
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2

    def __post_init__(self) -> None:
        if self.client_cert not in CLIENT_CERT_MODES:
            modes = ", ".join(CLIENT_CERT_MODES)
            raise ConfigurationError(f"client_cert {self.client_cert!r} is not one of {modes}")
        if self.client_cert != "none" and self.ca_certs is None:
            raise ConfigurationError(f"client_cert {self.client_cert!r} needs ca_certs")
        for name in self.by_name:
            _check_server_name(name)

    def load(self) -> ssl.SSLContext:
        """A new context from the files as they are now; ConfigurationError says what is wrong."""
        default = self._context(self.certificate)
        if self.by_name:
            named = {name.lower(): self._context(cert) for name, cert in self.by_name.items()}
            default.sni_callback = _choose_by_name(named)
        else:
            default.sni_callback = _remember_name
        return default

    def _context(self, certificate: Certificate) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = self.minimum_version
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
        _load_pair(context, certificate)
        context.verify_mode = CLIENT_CERT_MODES[self.client_cert]
        if self.ca_certs is not None:
            try:
                context.load_verify_locations(cafile=self.ca_certs)
            except (OSError, ssl.SSLError) as exc:
                message = f"cannot load CA certificates {self.ca_certs}: {exc}"
                raise ConfigurationError(message) from None
        if self.alpn:
            context.set_alpn_protocols(list(self.alpn))
        return context


def _load_pair(context: ssl.SSLContext, certificate: Certificate) -> None:
    try:
        context.load_cert_chain(certificate.certfile, certificate.keyfile)
    except FileNotFoundError:
        paths = [certificate.certfile, certificate.keyfile]
        missing = next((path for path in paths if path and not os.path.exists(path)), paths[0])
        raise ConfigurationError(f"cannot read {missing}: no such file") from None
    except ssl.SSLError as exc:
        # "KEY_VALUES_MISMATCH", "PEM lib": OpenSSL's words, with the files named.
        files = certificate.certfile + (
            f" and {certificate.keyfile}" if certificate.keyfile else ""
        )
        raise ConfigurationError(f"cannot load the certificate {files}: {exc}") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {certificate.certfile}: {exc}") from None


def _check_server_name(name: str) -> None:
    labels = name.split(".")
    wildcard = labels[0] == "*"
    if not name or any(not label for label in labels) or "*" in "".join(labels[wildcard:]):
        raise ConfigurationError(
            f"{name!r} is not a server name (a wildcard is a whole first label: *.example.com)"
        )


def _remember_name(tls: Any, name: str | None, context: ssl.SSLContext) -> None:
    setattr(tls, SERVER_NAME_ATTRIBUTE, name)


def _choose_by_name(named: Mapping[str, ssl.SSLContext]) -> Any:
    """The SNI callback: the exact name's context, else the wildcard's, else the default."""

    def choose(tls: Any, name: str | None, context: ssl.SSLContext) -> None:
        setattr(tls, SERVER_NAME_ATTRIBUTE, name)
        if name is None:
            return
        wanted = name.lower()
        chosen = named.get(wanted)
        if chosen is None and "." in wanted:
            chosen = named.get("*." + wanted.split(".", 1)[1])
        if chosen is not None:
            tls.context = chosen

    return choose
