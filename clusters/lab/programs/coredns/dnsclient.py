"""Asyncio DNS exchanges over UDP and TCP: what forward and loop send, with Go-like error texts.

Each UDP exchange uses a fresh connected socket (a random source port), as a new Go ``dns.Conn``
does; the reply must carry the query's ID or it is ignored, like miekg/dns.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any


class ExchangeError(OSError):
    """The upstream did not answer (timeout, refused, reset); the text mimics Go's net errors."""


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, qid: bytes) -> None:
        self.qid = qid
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data[:2] == self.qid and not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def exchange_udp(host: str, port: int, query: bytes, timeout: float) -> bytes:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(lambda: _Udp(query[:2]), remote_addr=(host, port))
    local = transport.get_extra_info("sockname")
    try:
        transport.sendto(query)
        return await asyncio.wait_for(proto.answer, timeout)
    except TimeoutError as err:
        raise ExchangeError(f"read udp {_hp(local)}->{_hp((host, port))}: i/o timeout") from err
    except ConnectionRefusedError as err:
        raise ExchangeError(f"read udp {_hp(local)}->{_hp((host, port))}: connection refused") from err
    finally:
        transport.close()


async def exchange_tcp(host: str, port: int, query: bytes, timeout: float) -> bytes:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError as err:
        raise ExchangeError(f"dial tcp {_hp((host, port))}: i/o timeout") from err
    except OSError as err:
        raise ExchangeError(f"dial tcp {_hp((host, port))}: {err.strerror or err}") from err
    try:
        writer.write(struct.pack("!H", len(query)) + query)
        await writer.drain()
        head = await asyncio.wait_for(reader.readexactly(2), timeout)
        return await asyncio.wait_for(reader.readexactly(struct.unpack("!H", head)[0]), timeout)
    except TimeoutError as err:
        raise ExchangeError(f"read tcp {_hp((host, port))}: i/o timeout") from err
    except (OSError, asyncio.IncompleteReadError) as err:
        raise ExchangeError(f"read tcp {_hp((host, port))}: {err}") from err
    finally:
        writer.close()


def _hp(addr: Any) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
