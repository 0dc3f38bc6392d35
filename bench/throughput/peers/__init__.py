"""The servers under test, each a small script: ``python -m bench.throughput.peers.NAME``.

Every one does the same job as ``portico serve`` with its built-in ``upper``
handler: over TCP, answer each line upper-cased for as long as the client keeps
the connection open; over UDP (``--udp``), answer each datagram upper-cased.
Each takes ``--port`` (and ``--host``, 127.0.0.1 by default) and serves until
killed.  ``common`` holds their shared command line.
"""
