"""The command line every peer script shares, and the TLS context they serve with."""

from __future__ import annotations

import argparse
import ssl

# Longer lines are answered in pieces, as portico's built-in handler does.
MAX_LINE = 64 * 1024


def parser(description: str) -> argparse.ArgumentParser:
    """A parser with ``--host``, ``--port``, ``--udp`` and TLS's ``--certfile``/``--keyfile``.

    Callers add their own options; a peer that serves TLS passes :func:`server_context`.
    """
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--host", default="127.0.0.1")
    result.add_argument("--port", type=int, required=True)
    result.add_argument("--udp", action="store_true", help="serve datagrams")
    result.add_argument("--certfile", help="serve TLS with this PEM certificate chain")
    result.add_argument("--keyfile", help="the private key of --certfile (default: in it)")
    return result


def server_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A TLS server context set up as portico's ``TLSConfig`` sets up its own.

    TLS 1.2 at least, no compression, the server's cipher order, OpenSSL's default
    ciphers and session tickets: the peers and portico do the same TLS work.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(certfile, keyfile)
    return context
