"""forward FROM TO… — proxy queries to upstreams; ``/etc/resolv.conf`` as TO reads its nameservers.

The resolv.conf is read once at setup, like CoreDNS, through the container's root (the kubelet
writes it per dnsPolicy: ``Default`` gives the node's). UDP first, TCP when the answer is truncated
(or with ``force_tcp``); 2 s per try, 5 s per query, then SERVFAIL. Forwarding to ourselves (or to
the kube-dns Service that leads back to us) is the loop the loop plugin catches.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from dnslib import RCODE, DNSRecord

from clusters.lab.programs import container
from clusters.lab.programs.coredns.corefile import Directive, fqdn
from clusters.lab.programs.coredns.dnsclient import ExchangeError, exchange_tcp, exchange_udp
from clusters.lab.programs.coredns.plugin import (
    Handler,
    Plugin,
    PluginError,
    Request,
    SetupContext,
    arg_error,
    parse_duration,
    setup_error,
    zone_match,
)

log = logging.getLogger(__name__)

TRY_TIMEOUT = 2.0
QUERY_TIMEOUT = 5.0
POLICIES = ("random", "round_robin", "sequential")
ACCEPTED = frozenset(
    {"prefer_udp", "expire", "max_fails", "tls", "tls_servername", "health_check", "next",
     "failfast_all_unhealthy_upstreams", "failover", "max_idle_conns"}
)  # fmt: skip


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Forward(Plugin):
    name = "forward"

    def __init__(self, origin: str, upstreams: tuple[Upstream, ...]) -> None:
        self.origin = origin
        self.upstreams = upstreams
        self.ignored: tuple[str, ...] = ()
        self.force_tcp = False
        self.policy = "random"
        self.max_concurrent = 0
        self._inflight = 0
        self._rr = itertools.count()

    def _order(self) -> list[Upstream]:
        ups = list(self.upstreams)
        if self.policy == "random":
            random.shuffle(ups)
        elif self.policy == "round_robin":
            k = next(self._rr) % len(ups)
            ups = ups[k:] + ups[:k]
        return ups

    async def serve(self, req: Request, nxt: Handler) -> Any:
        if not zone_match((self.origin,), req.qname) or zone_match(self.ignored, req.qname):
            return await nxt(req)
        if self.max_concurrent and self._inflight >= self.max_concurrent:
            raise PluginError(
                self.name, f"concurrent queries exceeded maximum {self.max_concurrent}", RCODE.REFUSED
            )
        self._inflight += 1
        try:
            return await self._forward(req)
        finally:
            self._inflight -= 1

    async def _forward(self, req: Request) -> Any:
        query = DNSRecord.parse(req.msg.pack())
        client_id = query.header.id
        query.header.id = random.randrange(65536)
        wire = query.pack()
        deadline = time.monotonic() + QUERY_TIMEOUT
        last = "no upstream"
        for up in self._order():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                data = await self._exchange(up, wire, min(TRY_TIMEOUT, left))
            except ExchangeError as err:
                last = str(err)
                continue
            resp = DNSRecord.parse(data)
            resp.header.id = client_id
            return resp
        raise PluginError("", last)

    async def _exchange(self, up: Upstream, wire: bytes, timeout: float) -> bytes:
        if not self.force_tcp:
            data = await exchange_udp(up.host, up.port, wire, timeout)
            if not DNSRecord.parse(data).header.tc:
                return data
        return await exchange_tcp(up.host, up.port, wire, timeout)


def setup(d: Directive, ctx: SetupContext) -> Forward:
    if len(d.args) < 2:
        raise arg_error("forward", ctx.path, d)
    origin = fqdn(d.args[0])
    ups: list[Upstream] = []
    for to in d.args[1:]:
        ups.extend(_upstreams(to, ctx.path, d.line))
    if not ups:
        raise setup_error("forward", ctx.path, d.line, f"no nameservers found in {d.args[1]}")
    f = Forward(origin, tuple(ups))
    for opt in d.block:
        a = opt.args
        if opt.name == "except":
            f.ignored = tuple(fqdn(z) for z in a)
        elif opt.name == "force_tcp":
            f.force_tcp = True
        elif opt.name == "policy":
            if len(a) != 1 or a[0] not in POLICIES:
                raise setup_error("forward", ctx.path, opt.line, f"unknown policy '{' '.join(a)}'")
            f.policy = a[0]
        elif opt.name == "max_concurrent":
            if len(a) != 1 or not a[0].isdigit():
                raise arg_error("forward", ctx.path, opt)
            f.max_concurrent = int(a[0])
        elif opt.name in ACCEPTED:
            if opt.name in ("expire", "health_check") and a:
                try:
                    parse_duration(a[0])
                except ValueError as err:
                    raise setup_error("forward", ctx.path, opt.line, str(err)) from err
        else:
            raise setup_error("forward", ctx.path, opt.line, f"unknown property '{opt.name}'")
    return f


def _upstreams(to: str, path: str, line: int) -> list[Upstream]:
    text = to.removeprefix("dns://")
    parsed = _host_port(text)
    if parsed is not None:
        return [parsed]
    if to.startswith(("tls://", "grpc://", "https://")):
        raise setup_error(
            "forward", path, line, f"{to.split('://')[0]}:// upstreams are not supported in the lab"
        )
    conf = container.container_path(to)
    try:
        text = conf.read_text()
    except OSError as err:
        raise setup_error("forward", path, line, f"not an IP address or file: {to!r}") from err
    out: list[Upstream] = []
    for raw in text.splitlines():
        parts = raw.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            up = _host_port(parts[1])
            if up is not None:
                out.append(up)
    return out


def _host_port(text: str) -> Upstream | None:
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif text.count(":") == 1:
        host, p = text.split(":")
        if not p.isdigit():
            return None
        port = int(p)
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    return Upstream(host, port)
