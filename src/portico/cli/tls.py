"""``portico serve --certfile ...``: the TLS settings, and the TLSConfig they make.

Every TLS option but ``--certfile`` refines it, so each needs it.  The
certificates are read when the server is built (a broken file is a usage
error, exit 2) and again on SIGHUP: a reload that fails leaves the previous
certificates serving.  :mod:`ssl` is imported only when TLS is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from portico.cli.settings import Setting, parse_choice, parse_positive_seconds
from portico.errors import ConfigurationError

if TYPE_CHECKING:
    from portico.tls.config import TLSConfig

__all__ = ["SETTINGS", "TLS_ONLY", "check_tls_settings", "tls_config"]

_CLIENT_CERT_MODES = ("none", "optional", "required")


def parse_path(text: str) -> str:
    if not text.strip():
        raise ConfigurationError("an empty path")
    return text


def parse_sni_cert(text: str) -> tuple[str, str, str | None]:
    """``NAME=CERTFILE`` or ``NAME=CERTFILE:KEYFILE``: (name, certfile, keyfile)."""
    name, sep, files = text.partition("=")
    if not (sep and name.strip() and files.strip()):
        raise ConfigurationError(f"{text!r} is not NAME=CERTFILE[:KEYFILE]")
    certfile, _, keyfile = files.partition(":")
    return name.strip(), certfile, keyfile or None


def parse_alpn(text: str) -> str:
    protocol = text.strip()
    if not protocol or len(protocol.encode()) > 255:
        raise ConfigurationError(f"{text!r} is not an ALPN protocol name (1-255 bytes)")
    return protocol


SETTINGS = (
    Setting(
        "certfile",
        parse_path,
        flag="--certfile",
        metavar="PATH",
        env="PORTICO_CERTFILE",
        help="serve TLS with this PEM certificate chain (and its key, unless --keyfile)",
    ),
    Setting(
        "keyfile",
        parse_path,
        flag="--keyfile",
        metavar="PATH",
        env="PORTICO_KEYFILE",
        help="the PEM private key of --certfile",
    ),
    Setting(
        "ca_certs",
        parse_path,
        flag="--ca-certs",
        metavar="PATH",
        env="PORTICO_CA_CERTS",
        help="PEM CA certificates that client certificates must chain to",
    ),
    Setting(
        "client_cert",
        parse_choice(_CLIENT_CERT_MODES),
        flag="--client-cert",
        metavar="MODE",
        default="none",
        env="PORTICO_CLIENT_CERT",
        help="ask clients for a certificate: none, optional or required (needs --ca-certs)",
    ),
    Setting(
        "sni_cert",
        parse_sni_cert,
        flag="--sni-cert",
        metavar="NAME=CERT[:KEY]",
        env="PORTICO_SNI_CERT",
        repeat=True,
        help="another certificate, for clients that ask for NAME (SNI; *.example.com matches "
        "one label)",
    ),
    Setting(
        "alpn",
        parse_alpn,
        flag="--alpn",
        metavar="PROTOCOL",
        env="PORTICO_ALPN",
        repeat=True,
        help="an ALPN protocol to offer, in order of preference (h2, http/1.1, ...)",
    ),
    Setting(
        "tls_handshake_timeout",
        parse_positive_seconds,
        flag="--tls-handshake-timeout",
        metavar="SECONDS",
        default="10",
        env="PORTICO_TLS_HANDSHAKE_TIMEOUT",
        help="a client that has not finished its TLS handshake by then is disconnected",
    ),
)

# Settings that mean nothing without --certfile.
TLS_ONLY = tuple(setting.name for setting in SETTINGS if setting.name != "certfile")


def check_tls_settings(values: Mapping[str, Any], given: frozenset[str]) -> None:
    """The TLS settings make sense together (ConfigurationError otherwise)."""
    if values["certfile"] is None:
        for name in TLS_ONLY:
            if name in given:
                raise ConfigurationError(f"--{name.replace('_', '-')} needs --certfile")
    elif values["udp"]:
        raise ConfigurationError("TLS (--certfile) serves streams: it cannot be used with --udp")


def tls_config(values: Mapping[str, Any]) -> TLSConfig | None:
    """The TLSConfig the settings ask for, or None without --certfile."""
    if values["certfile"] is None:
        return None
    from portico.tls.config import Certificate, TLSConfig  # noqa: PLC0415 (imports ssl)

    return TLSConfig(
        Certificate(values["certfile"], values["keyfile"]),
        by_name={name: Certificate(cert, key) for name, cert, key in values["sni_cert"]},
        ca_certs=values["ca_certs"],
        client_cert=values["client_cert"],
        alpn=values["alpn"],
    )
