"""The lab's upstream resolver: a tiny authoritative DNS server that never forwards anywhere.

Why: CoreDNS's ``forward . /etc/resolv.conf`` must reach *something* for upstream forwarding to
be testable, and the lab may not touch the internet. The lab runs this inside one of its
namespaces; the node resolv.conf points at it. It knows a few names of its own and answers
NXDOMAIN (with the lab.test SOA) for everything else, including CoreDNS's loop probes.

``python -m clusters.lab.programs.upstream --listen 172.18.255.253:53 [--listen …]
[--record NAME=IP …]``
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from dnslib import AAAA, PTR, QTYPE, RCODE, RR, SOA, TXT, A, DNSError, DNSRecord

log = logging.getLogger(__name__)

ZONE = "lab.test."
UPSTREAM_IP = "172.18.255.253"
DEFAULT_RECORDS: Mapping[str, tuple[str, ...]] = {
    "upstream.lab.test.": (UPSTREAM_IP,),
    "example.lab.test.": ("192.0.2.10", "2001:db8::10"),
    "www.example.lab.test.": ("192.0.2.10",),
}
TTL = 60
TXT_TEXT = "knetcheck lab upstream resolver"


@dataclass(frozen=True)
class Zone:
    records: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_RECORDS))

    def reverse(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, ips in self.records.items():
            for ip in ips:
                out.setdefault(ipaddress.ip_address(ip).reverse_pointer + ".", name)
        return out

    def answer(self, query: Any) -> Any:
        resp = query.reply(ra=1, aa=1)
        qname = str(query.q.qname).lower()
        qname = qname if qname.endswith(".") else qname + "."
        qtype = int(query.q.qtype)
        ptr = self.reverse().get(qname)
        if ptr is not None:
            if qtype == QTYPE.PTR:
                resp.add_answer(RR(qname, QTYPE.PTR, ttl=TTL, rdata=PTR(ptr)))
            return resp
        ips = self.records.get(qname)
        if ips is None:
            resp.header.rcode = RCODE.NXDOMAIN
            resp.add_auth(_soa())
            return resp
        for ip in ips:
            v6 = ":" in ip
            if qtype in (QTYPE.A, QTYPE.ANY) and not v6:
                resp.add_answer(RR(qname, QTYPE.A, ttl=TTL, rdata=A(ip)))
            elif qtype in (QTYPE.AAAA, QTYPE.ANY) and v6:
                resp.add_answer(RR(qname, QTYPE.AAAA, ttl=TTL, rdata=AAAA(ip)))
        if qtype == QTYPE.TXT:
            resp.add_answer(RR(qname, QTYPE.TXT, ttl=TTL, rdata=TXT(TXT_TEXT)))
        if not resp.rr:
            resp.add_auth(_soa())
        return resp


def _soa() -> Any:
    return RR(
        ZONE, QTYPE.SOA, ttl=TTL, rdata=SOA(f"ns.{ZONE}", f"hostmaster.{ZONE}", (1, 7200, 1800, 86400, TTL))
    )


def answer_wire(zone: Zone, data: bytes) -> bytes | None:
    try:
        query = DNSRecord.parse(data)
    except (DNSError, struct.error, IndexError, ValueError):
        return None
    if query.header.qr or not query.questions:
        return None
    return bytes(zone.answer(query).pack())


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # selector transports don't subclass it

    def datagram_received(self, data: bytes, addr: Any) -> None:
        out = answer_wire(self.zone, data)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)


async def _tcp(zone: Zone, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await asyncio.wait_for(reader.readexactly(2), 10.0)
            out = answer_wire(zone, await reader.readexactly(struct.unpack("!H", head)[0]))
            if out is None:
                break
            writer.write(struct.pack("!H", len(out)) + out)
            await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _listen_arg(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host.strip("[]"), int(port)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--listen wants IP:PORT, e.g. 127.0.0.1:5353, not {text!r}"
        ) from err


def _record_arg(text: str) -> tuple[str, str]:
    name, _, ip = text.partition("=")
    try:
        ipaddress.ip_address(ip)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--record wants NAME=IP, e.g. db.lab.test=192.0.2.20, not {text!r}"
        ) from err
    return (name.lower().rstrip(".") + ".", ip)


async def serve(listen: Sequence[tuple[str, int]], zone: Zone, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    closers: list[Any] = []
    try:
        for host, port in listen:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(zone), local_addr=(host, port))
            closers.append(transport)
            server = await asyncio.start_server(lambda r, w: _tcp(zone, r, w), host, port, reuse_address=True)
            closers.append(server)
            log.info("upstream resolver listening on %s:%d (udp+tcp)", host, port)
        await stop.wait()
    finally:
        for c in closers:
            c.close()


def main(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    parser = argparse.ArgumentParser(prog="upstream", description="the lab's upstream DNS resolver")
    parser.add_argument("--listen", type=_listen_arg, action="append", required=True, help="IP:PORT")
    parser.add_argument(
        "--record", type=_record_arg, action="append", default=[], help="NAME=IP (extra A/AAAA)"
    )
    args = parser.parse_args(argv)
    records: dict[str, tuple[str, ...]] = dict(DEFAULT_RECORDS)
    for name, ip in args.record:
        records[name] = (*records.get(name, ()), ip)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(args.listen, Zone(records), stop)

    try:
        asyncio.run(run())
    except OSError as err:
        sys.stderr.write(f"upstream: cannot listen: {err.strerror or err}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
