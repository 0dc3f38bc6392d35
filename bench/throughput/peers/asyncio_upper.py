"""asyncio servers: streams or protocols, on the default event loop or on uvloop.

``--api streams``: ``asyncio.start_server`` with a handler that reads a line
and writes it back upper-cased (no datagram variant: asyncio has no datagram
streams).  ``--api protocol``: a ``Protocol`` that upper-cases every complete
line it has received and writes them in one call, pausing reads while the
transport's buffer is full; over UDP, a ``DatagramProtocol``.  ``--uvloop``
runs either on uvloop.  ``--certfile`` (and ``--keyfile``) serves either over
TLS, with ``ssl=`` (asyncio's own TLS, or uvloop's), set up as portico's
``TLSConfig`` sets up its context.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine, Sequence
from typing import Any

from bench.throughput.peers.common import MAX_LINE, parser, server_context


async def upper_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class UpperProtocol(asyncio.Protocol):
    """Answer each complete line upper-cased; keep the partial one for later."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.partial = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.partial:
            data, self.partial = self.partial + data, b""
        end = data.rfind(b"\n") + 1
        if not end and len(data) >= MAX_LINE:
            end = len(data)
        if end:
            assert self.transport is not None
            self.transport.write(data[:end].upper())
        self.partial = data[end:]

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()


class UpperDatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data.upper(), addr)


async def serve(
    api: str, host: str, port: int, *, udp: bool, tls: ssl.SSLContext | None = None
) -> None:
    loop = asyncio.get_running_loop()
    if udp:
        if api != "protocol":
            raise SystemExit("asyncio has no datagram streams: use --api protocol")
        await loop.create_datagram_endpoint(UpperDatagramProtocol, local_addr=(host, port))
        await asyncio.Event().wait()
    elif api == "streams":
        server = await asyncio.start_server(upper_stream, host, port, reuse_address=True, ssl=tls)
        await server.serve_forever()
    else:
        server = await loop.create_server(UpperProtocol, host, port, reuse_address=True, ssl=tls)
        await server.serve_forever()


def run(main: Coroutine[Any, Any, None], *, use_uvloop: bool) -> None:
    if use_uvloop:
        import uvloop  # noqa: PLC0415 (optional: only the uvloop variants need it)

        uvloop.run(main)
    else:
        asyncio.run(main)


def main(argv: Sequence[str] | None = None) -> None:
    options = parser(__doc__ or "")
    options.add_argument("--api", choices=("streams", "protocol"), required=True)
    options.add_argument("--uvloop", action="store_true")
    args = options.parse_args(argv)
    if args.certfile and args.udp:
        options.error("TLS (--certfile) serves streams, not --udp")
    tls = server_context(args.certfile, args.keyfile) if args.certfile else None
    run(serve(args.api, args.host, args.port, udp=args.udp, tls=tls), use_uvloop=args.uvloop)


if __name__ == "__main__":
    main()
