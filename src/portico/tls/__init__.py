"""TLS for every stream server: ``server.use_tls(TLSConfig(...))`` or ``server.ssl_context``.

See :mod:`portico.tls.config` (certificates, SNI, client certificates,
reload) and :mod:`portico.tls.stream` (what a handler's ``self.request``
is).  Importing it imports :mod:`ssl`; servers without TLS never do.
"""

from portico.tls.config import Certificate, TLSConfig
from portico.tls.stream import TLSStream

__all__ = ["Certificate", "TLSConfig", "TLSStream"]
