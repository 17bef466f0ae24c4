"""cache [TTL] [ZONES…] { success|denial CAP [TTL [MINTTL]]; disable success|denial [ZONES…]; keepttl … }

kubeadm ≥ 1.32 writes ``disable success cluster.local`` and ``disable denial cluster.local`` so
Service changes show at once; cluster names then always reach the kubernetes plugin. Answers
are cached by (name, type, class, DO), their TTLs counted down when served, as CoreDNS does.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from dnslib import QTYPE, RCODE, DNSRecord

from clusters.lab.programs.coredns.corefile import Directive, fqdn
from clusters.lab.programs.coredns.plugin import (
    Handler,
    Plugin,
    Request,
    SetupContext,
    arg_error,
    parse_duration,
    setup_error,
    zone_match,
)

MAX_TTL = 3600
MAX_DENIAL_TTL = 1800
MIN_TTL = 5
CAPACITY = 9984
ACCEPTED = frozenset({"prefetch", "serve_stale", "servfail"})


@dataclass(frozen=True)
class Policy:
    capacity: int = CAPACITY
    max_ttl: int = MAX_TTL
    min_ttl: int = MIN_TTL
    disabled_zones: tuple[str, ...] | None = None  # None: caching on; (): off for every zone


@dataclass(frozen=True)
class Entry:
    wire: bytes
    stored: float
    ttl: int


class Cache(Plugin):
    name = "cache"

    def __init__(self, zones: tuple[str, ...]) -> None:
        self.zones = zones
        self.success = Policy()
        self.denial = Policy(max_ttl=MAX_DENIAL_TTL)
        self.keepttl = False
        self._store: dict[str, OrderedDict[tuple[str, int, int, bool], Entry]] = {
            "success": OrderedDict(),
            "denial": OrderedDict(),
        }

    async def serve(self, req: Request, nxt: Handler) -> Any:
        if not zone_match(self.zones, req.qname):
            return await nxt(req)
        key = (req.qname, req.qtype, int(req.msg.q.qclass), _do(req.msg))
        now = time.monotonic()
        for kind in ("success", "denial"):
            hit = self._store[kind].get(key)
            if hit is not None:
                age = int(now - hit.stored)
                if age < hit.ttl:
                    return self._serve_hit(req, hit, age)
                del self._store[kind][key]
        resp = await nxt(req)
        self._maybe_store(req, key, resp, now)
        return resp

    def _serve_hit(self, req: Request, hit: Entry, age: int) -> Any:
        resp = DNSRecord.parse(hit.wire)
        resp.header.id = req.msg.header.id
        if not self.keepttl:  # CoreDNS serves every record with the entry's remaining (capped) TTL
            for rr in (*resp.rr, *resp.auth, *resp.ar):
                if rr.rtype != QTYPE.OPT:
                    rr.ttl = max(0, hit.ttl - age)
        return resp

    def _maybe_store(self, req: Request, key: tuple[str, int, int, bool], resp: Any, now: float) -> None:
        if resp is None or resp.header.tc:
            return
        rcode = resp.header.rcode
        if rcode == RCODE.NOERROR and resp.rr:
            kind, pol = "success", self.success
            ttls = [rr.ttl for rr in resp.rr]
        elif rcode == RCODE.NXDOMAIN or (rcode == RCODE.NOERROR and not resp.rr):
            kind, pol = "denial", self.denial
            ttls = [min(rr.ttl, rr.rdata.times[4]) for rr in resp.auth if rr.rtype == QTYPE.SOA] or [
                pol.min_ttl
            ]
        else:
            return
        if pol.disabled_zones is not None and (
            not pol.disabled_zones or zone_match(pol.disabled_zones, req.qname)
        ):
            return
        ttl = max(pol.min_ttl, min(pol.max_ttl, min(ttls)))
        if ttl <= 0:
            return
        store = self._store[kind]
        store[key] = Entry(resp.pack(), now, ttl)
        while len(store) > pol.capacity:
            store.popitem(last=False)


def _do(msg: Any) -> bool:
    return any(rr.rtype == QTYPE.OPT and (rr.ttl >> 15) & 1 for rr in msg.ar)


def setup(d: Directive, ctx: SetupContext) -> Cache:
    args = list(d.args)
    c = Cache(ctx.zones)
    if args and args[0].isdigit():
        ttl = int(args.pop(0))
        if ttl <= 0:
            raise setup_error("cache", ctx.path, d.line, f"cache TTL can not be zero or negative: {ttl}")
        c.success = Policy(max_ttl=ttl)
        c.denial = Policy(max_ttl=ttl)
    if args:
        c.zones = tuple(fqdn(z) for z in args)
    for opt in d.block:
        a = opt.args
        if opt.name in ("success", "denial"):
            if not 1 <= len(a) <= 3 or not all(x.isdigit() for x in a):
                raise arg_error("cache", ctx.path, opt)
            cur = c.success if opt.name == "success" else c.denial
            new = Policy(
                int(a[0]),
                int(a[1]) if len(a) > 1 else cur.max_ttl,
                int(a[2]) if len(a) > 2 else cur.min_ttl,
                cur.disabled_zones,
            )
            if opt.name == "success":
                c.success = new
            else:
                c.denial = new
        elif opt.name == "disable":
            if not a or a[0] not in ("success", "denial"):
                raise setup_error(
                    "cache", ctx.path, opt.line, "cache type for disable must be success or denial"
                )
            zones = tuple(fqdn(z) for z in a[1:])
            if a[0] == "success":
                c.success = Policy(c.success.capacity, c.success.max_ttl, c.success.min_ttl, zones)
            else:
                c.denial = Policy(c.denial.capacity, c.denial.max_ttl, c.denial.min_ttl, zones)
        elif opt.name == "keepttl":
            c.keepttl = True
        elif opt.name in ACCEPTED:
            if opt.name == "servfail" and a:
                try:
                    parse_duration(a[0])
                except ValueError as err:
                    raise setup_error("cache", ctx.path, opt.line, str(err)) from err
        else:
            raise setup_error("cache", ctx.path, opt.line, f"unknown property '{opt.name}'")
    return c
