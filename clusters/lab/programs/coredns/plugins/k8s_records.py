"""The Kubernetes DNS-Based Service Discovery spec as a pure function: (index, name, type) → records.

Kept apart from the plugin (informers, fallthrough, SOA) so each rule of the spec is testable
with a hand-built index. Names follow CoreDNS's parseRequest: from the zone leftwards
``svc|pod``, namespace, service, then either one endpoint label or ``_port._proto``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from dnslib import AAAA, CNAME, NS, PTR, QTYPE, RR, SOA, SRV, TXT, A

from clusters.lab.programs.coredns.plugins.k8s_index import Index, Kind, Port, Service

DNS_SCHEMA_VERSION = "1.1.0"


class PodMode(Enum):
    DISABLED = "disabled"
    INSECURE = "insecure"
    VERIFIED = "verified"


class Outcome(Enum):
    ANSWER = "answer"
    NODATA = "nodata"  # the name exists, not with this type
    NXDOMAIN = "nxdomain"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    answer: tuple[Any, ...] = ()
    extra: tuple[Any, ...] = ()
    chase: str = ""  # an ExternalName target to resolve through the server (CoreDNS upstream)


NX = Result(Outcome.NXDOMAIN)
NODATA = Result(Outcome.NODATA)


@dataclass(frozen=True)
class Options:
    zone: str  # the forward zone answers are built under, e.g. "cluster.local."
    ttl: int = 5
    pods: PodMode = PodMode.DISABLED
    pod_ips: frozenset[str] = field(default_factory=frozenset)  # for ``pods verified``


def soa(zone: str, serial: int, ttl: int) -> Any:
    return RR(
        zone,
        QTYPE.SOA,
        ttl=min(ttl, 300),
        rdata=SOA(f"ns.dns.{zone}", f"hostmaster.{zone}", (serial, 7200, 1800, 86400, ttl)),
    )


def resolve(index: Index, qname: str, qtype: int, zone: str, opt: Options) -> Result:
    """Answer ``qname`` (fully qualified, lower case) inside ``zone``, one of the plugin's zones."""
    if zone.endswith("in-addr.arpa.") or zone.endswith("ip6.arpa."):
        return _reverse(index, qname, qtype, opt)
    rel = qname[: -len(zone)].rstrip(".") if qname != zone else ""
    labels = rel.split(".") if rel else []
    if not labels:
        return _apex(index, zone, qtype, opt)
    if labels == ["dns-version"]:
        if qtype != QTYPE.TXT:
            return NODATA
        return Result(Outcome.ANSWER, (RR(qname, QTYPE.TXT, ttl=opt.ttl, rdata=TXT(DNS_SCHEMA_VERSION)),))
    if labels == ["ns", "dns"]:
        return _ns_address(index, qname, qtype, opt)
    kind = labels[-1]
    if kind == "pod":
        return _pod(labels, qname, qtype, opt)
    if kind != "svc":
        return NX
    if len(labels) == 1:
        return NODATA
    ns = labels[-2]
    if len(labels) == 2:
        return NODATA if ns in index.namespaces else NX
    svc = index.services.get((ns, labels[-3]))
    if svc is None:
        return NX
    if len(labels) == 3:
        return _service(svc, qname, qtype, opt, port="", proto="")
    if len(labels) == 4:
        return _endpoint(svc, labels[0], qname, qtype, opt)
    if len(labels) == 5:
        port, proto = labels[0].removeprefix("_"), labels[1].removeprefix("_")
        return _service(svc, qname, qtype, opt, port=_any(port), proto=_any(proto))
    return NX


def _any(label: str) -> str:
    return "*" if label == "any" else label


def _apex(index: Index, zone: str, qtype: int, opt: Options) -> Result:
    if qtype == QTYPE.SOA:
        return Result(Outcome.ANSWER, (soa(zone, index.serial, opt.ttl),))
    if qtype == QTYPE.NS:
        ns_name = f"ns.dns.{zone}"
        extra = _ns_address(index, ns_name, QTYPE.A, opt).answer
        return Result(Outcome.ANSWER, (RR(zone, QTYPE.NS, ttl=opt.ttl, rdata=NS(ns_name)),), extra)
    return NODATA


def _ns_address(index: Index, qname: str, qtype: int, opt: Options) -> Result:
    """``ns.dns.<zone>``: CoreDNS answers with the kube-dns Service address."""
    svc = index.services.get(("kube-system", "kube-dns"))
    ips = svc.cluster_ips if svc else ()
    rrs = tuple(_addr(qname, ip, opt.ttl) for ip in ips if _family_ok(ip, qtype))
    return Result(Outcome.ANSWER, rrs) if rrs else NODATA


def _service(svc: Service, qname: str, qtype: int, opt: Options, *, port: str, proto: str) -> Result:
    ports = tuple(p for p in svc.ports if _port_match(p, port, proto))
    if (port or proto) and not ports and svc.kind is not Kind.HEADLESS:
        return NX
    base = f"{svc.name}.{svc.namespace}.svc.{opt.zone}"
    if svc.kind is Kind.EXTERNAL_NAME:
        target = svc.external_name + "."
        cname = RR(qname, QTYPE.CNAME, ttl=opt.ttl, rdata=CNAME(target))
        if qtype == QTYPE.SRV:
            srv = tuple(_srv(qname, p.port, 100, target, opt.ttl) for p in ports)
            return Result(Outcome.ANSWER, srv) if srv else NODATA
        return Result(Outcome.ANSWER, (cname,), chase="" if qtype == QTYPE.CNAME else target)
    if svc.kind is Kind.CLUSTER_IP:
        if qtype == QTYPE.SRV:
            if not ports:
                return NODATA
            weight = 100 // len(ports)
            srv = tuple(_srv(qname, p.port, weight, base, opt.ttl) for p in ports)
            extra = tuple(_addr(base, ip, opt.ttl) for ip in svc.cluster_ips)
            return Result(Outcome.ANSWER, srv, extra)
        rrs = tuple(_addr(qname, ip, opt.ttl) for ip in svc.cluster_ips if _family_ok(ip, qtype))
        return Result(Outcome.ANSWER, rrs) if rrs else NODATA
    # headless: one record per ready endpoint
    if not svc.endpoints:
        return NX
    if qtype == QTYPE.SRV:
        pairs = [(ep, p) for ep in svc.endpoints for p in ep.ports if _port_match(p, port, proto)]
        if not pairs:
            return NX if (port or proto) else NODATA
        weight = 100 // len(pairs)
        srv = tuple(_srv(qname, p.port, weight, f"{ep.label}.{base}", opt.ttl) for ep, p in pairs)
        extra = tuple(_addr(f"{ep.label}.{base}", ep.ip, opt.ttl) for ep, _ in pairs)
        return Result(Outcome.ANSWER, srv, extra)
    eps = [
        ep
        for ep in svc.endpoints
        if not (port or proto) or any(_port_match(p, port, proto) for p in ep.ports)
    ]
    if not eps:
        return NX
    rrs = tuple(_addr(qname, ep.ip, opt.ttl) for ep in eps if _family_ok(ep.ip, qtype))
    return Result(Outcome.ANSWER, rrs) if rrs else NODATA


def _endpoint(svc: Service, label: str, qname: str, qtype: int, opt: Options) -> Result:
    eps = [ep for ep in svc.endpoints if ep.label == label]
    if not eps:
        return NX
    rrs = tuple(_addr(qname, ep.ip, opt.ttl) for ep in eps if _family_ok(ep.ip, qtype))
    return Result(Outcome.ANSWER, rrs) if rrs else NODATA


def _pod(labels: list[str], qname: str, qtype: int, opt: Options) -> Result:
    if len(labels) < 3:
        return NODATA
    if opt.pods is PodMode.DISABLED or len(labels) != 3:
        return NX
    text = labels[0]
    try:
        ip = ipaddress.ip_address(text.replace("-", ".") if text.count("-") == 3 else text.replace("-", ":"))
    except ValueError:
        return NX
    if opt.pods is PodMode.VERIFIED and str(ip) not in opt.pod_ips:
        return NX
    if not _family_ok(str(ip), qtype):
        return NODATA
    return Result(Outcome.ANSWER, (_addr(qname, str(ip), opt.ttl),))


def _reverse(index: Index, qname: str, qtype: int, opt: Options) -> Result:
    ip = _ptr_ip(qname)
    hit = index.reverse.get(ip) if ip else None
    if hit is None:
        return NX
    ns, svc, label = hit
    target = f"{svc}.{ns}.svc.{opt.zone}"
    if label:
        target = f"{label}.{target}"
    if qtype != QTYPE.PTR:
        return NODATA
    return Result(Outcome.ANSWER, (RR(qname, QTYPE.PTR, ttl=opt.ttl, rdata=PTR(target)),))


def _ptr_ip(qname: str) -> str:
    name = qname.rstrip(".")
    try:
        if name.endswith(".in-addr.arpa"):
            parts = name.removesuffix(".in-addr.arpa").split(".")
            if len(parts) != 4:
                return ""
            return str(ipaddress.IPv4Address(".".join(reversed(parts))))
        if name.endswith(".ip6.arpa"):
            nib = name.removesuffix(".ip6.arpa").split(".")
            if len(nib) != 32:
                return ""
            h = "".join(reversed(nib))
            return str(ipaddress.IPv6Address(":".join(h[i : i + 4] for i in range(0, 32, 4))))
    except ValueError:
        return ""
    return ""


def _port_match(p: Port, port: str, proto: str) -> bool:
    return port in ("", "*", p.name) and proto in ("", "*", p.protocol)


def _family_ok(ip: str, qtype: int) -> bool:
    v6 = ":" in ip
    return (qtype == QTYPE.A and not v6) or (qtype == QTYPE.AAAA and v6) or qtype == QTYPE.ANY


def _addr(name: str, ip: str, ttl: int) -> Any:
    if ":" in ip:
        return RR(name, QTYPE.AAAA, ttl=ttl, rdata=AAAA(ip))
    return RR(name, QTYPE.A, ttl=ttl, rdata=A(ip))


def _srv(name: str, port: int, weight: int, target: str, ttl: int) -> Any:
    return RR(name, QTYPE.SRV, ttl=ttl, rdata=SRV(priority=0, weight=weight, port=port, target=target))
