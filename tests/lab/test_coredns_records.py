"""The Kubernetes DNS spec as the lab CoreDNS answers it, from a hand-built index (no processes)."""

from __future__ import annotations

import asyncio
from typing import Any

from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from clusters.lab.programs.coredns.plugin import Request
from clusters.lab.programs.coredns.plugins.cache import Cache, Policy
from clusters.lab.programs.coredns.plugins.k8s_index import build_index
from clusters.lab.programs.coredns.plugins.k8s_records import Options, Outcome, PodMode, resolve
from clusters.lab.programs.coredns.plugins.simple import LoadBalance

Z = "cluster.local."
OPT = Options(Z, ttl=30, pods=PodMode.INSECURE)


def _svc(ns: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


def _slice(ns: str, svc: str, endpoints: list[dict[str, Any]], ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": f"{svc}-abc", "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }


INDEX = build_index(
    [
        _svc(
            "web",
            "front",
            clusterIP="10.96.0.20",
            clusterIPs=["10.96.0.20"],
            ports=[
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ],
        ),
        _svc("web", "db", clusterIP="None", ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]),
        _svc("web", "empty", clusterIP="None"),
        _svc("web", "ext", type="ExternalName", externalName="example.lab.test"),
        _svc("kube-system", "kube-dns", clusterIP="10.96.0.10", clusterIPs=["10.96.0.10"]),
    ],
    [
        _slice(
            "web",
            "db",
            [
                {"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": True}},
                {"addresses": ["10.244.2.6"], "conditions": {}},
                {"addresses": ["10.244.2.7"], "conditions": {"ready": False}},
            ],
            [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        )
    ],
    [{"metadata": {"name": "web"}}, {"metadata": {"name": "kube-system"}}],
    serial=1700000000,
)


def _q(name: str, qtype: str) -> tuple[Outcome, list[str]]:
    res = resolve(
        INDEX, name, getattr(QTYPE, qtype), Z if not name.endswith("arpa.") else "in-addr.arpa.", OPT
    )
    return res.outcome, sorted(str(rr.rdata) for rr in res.answer)


def test_cluster_ip_service_a_and_aaaa() -> None:
    assert _q("front.web.svc.cluster.local.", "A") == (Outcome.ANSWER, ["10.96.0.20"])
    assert _q("front.web.svc.cluster.local.", "AAAA") == (Outcome.NODATA, [])


def test_srv_named_port_and_all_ports() -> None:
    assert _q("_http._tcp.front.web.svc.cluster.local.", "SRV") == (
        Outcome.ANSWER,
        ["0 100 80 front.web.svc.cluster.local."],
    )
    assert _q("front.web.svc.cluster.local.", "SRV") == (
        Outcome.ANSWER,
        ["0 50 53 front.web.svc.cluster.local.", "0 50 80 front.web.svc.cluster.local."],
    )
    assert _q("_http._udp.front.web.svc.cluster.local.", "SRV")[0] is Outcome.NXDOMAIN


def test_headless_ready_endpoints_and_hostnames() -> None:
    assert _q("db.web.svc.cluster.local.", "A") == (Outcome.ANSWER, ["10.244.1.5", "10.244.2.6"])
    assert _q("db-0.db.web.svc.cluster.local.", "A") == (Outcome.ANSWER, ["10.244.1.5"])
    assert _q("10-244-2-6.db.web.svc.cluster.local.", "A") == (Outcome.ANSWER, ["10.244.2.6"])
    assert _q("10-244-2-7.db.web.svc.cluster.local.", "A")[0] is Outcome.NXDOMAIN  # not ready
    assert _q("_pg._tcp.db.web.svc.cluster.local.", "SRV") == (
        Outcome.ANSWER,
        ["0 50 5432 10-244-2-6.db.web.svc.cluster.local.", "0 50 5432 db-0.db.web.svc.cluster.local."],
    )
    assert _q("empty.web.svc.cluster.local.", "A")[0] is Outcome.NXDOMAIN


def test_ptr_for_cluster_ip_and_endpoint() -> None:
    assert _q("20.0.96.10.in-addr.arpa.", "PTR") == (Outcome.ANSWER, ["front.web.svc.cluster.local."])
    assert _q("5.1.244.10.in-addr.arpa.", "PTR") == (Outcome.ANSWER, ["db-0.db.web.svc.cluster.local."])
    assert _q("9.9.9.10.in-addr.arpa.", "PTR")[0] is Outcome.NXDOMAIN


def test_external_name_is_a_cname_to_chase() -> None:
    res = resolve(INDEX, "ext.web.svc.cluster.local.", QTYPE.A, Z, OPT)
    assert [str(rr.rdata) for rr in res.answer] == ["example.lab.test."]
    assert res.chase == "example.lab.test."


def test_pods_insecure_disabled_and_verified() -> None:
    assert _q("10-244-1-9.web.pod.cluster.local.", "A") == (Outcome.ANSWER, ["10.244.1.9"])
    off = Options(Z, 30, PodMode.DISABLED)
    assert resolve(INDEX, "10-244-1-9.web.pod.cluster.local.", QTYPE.A, Z, off).outcome is Outcome.NXDOMAIN
    verified = Options(Z, 30, PodMode.VERIFIED, frozenset({"10.244.1.9"}))
    assert resolve(INDEX, "10-244-1-9.web.pod.cluster.local.", QTYPE.A, Z, verified).outcome is Outcome.ANSWER
    assert (
        resolve(INDEX, "10-244-1-8.web.pod.cluster.local.", QTYPE.A, Z, verified).outcome is Outcome.NXDOMAIN
    )


def test_missing_names_and_namespaces() -> None:
    assert _q("nope.web.svc.cluster.local.", "A")[0] is Outcome.NXDOMAIN
    assert _q("web.svc.cluster.local.", "A")[0] is Outcome.NODATA
    assert _q("ghost.svc.cluster.local.", "A")[0] is Outcome.NXDOMAIN
    assert _q("a.b.c.d.e.f.svc.cluster.local.", "A")[0] is Outcome.NXDOMAIN
    assert _q("cluster.local.", "SOA")[0] is Outcome.ANSWER
    assert _q("dns-version.cluster.local.", "TXT") == (Outcome.ANSWER, ['"1.1.0"'])
    assert _q("ns.dns.cluster.local.", "A") == (Outcome.ANSWER, ["10.96.0.10"])


def _request(name: str, qtype: str = "A") -> Request:
    return Request.of(DNSRecord.question(name, qtype), ("127.0.0.1", 5000), "udp")


def test_cache_serves_repeat_and_honours_disable() -> None:
    calls: list[str] = []

    async def upstream(req: Request) -> Any:
        calls.append(req.qname)
        resp = req.reply()
        resp.add_answer(RR(req.qname, QTYPE.A, ttl=60, rdata=A("192.0.2.1")))
        return resp

    cache = Cache((".",))
    cache.success = Policy(max_ttl=30, disabled_zones=("cluster.local.",))

    async def run() -> list[Any]:
        out = []
        for name in ("a.lab.test.", "a.lab.test.", "x.cluster.local.", "x.cluster.local."):
            out.append(await cache.serve(_request(name), upstream))
        return out

    results = asyncio.run(run())
    assert calls == ["a.lab.test.", "x.cluster.local.", "x.cluster.local."]
    assert results[1].rr[0].ttl <= 30  # capped by ``cache 30``
    assert results[1].header.rcode == RCODE.NOERROR


def test_loadbalance_rotates_address_records() -> None:
    async def upstream(req: Request) -> Any:
        resp = req.reply()
        for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
            resp.add_answer(RR(req.qname, QTYPE.A, ttl=5, rdata=A(ip)))
        return resp

    lb = LoadBalance()

    async def run() -> list[str]:
        return [str((await lb.serve(_request("x.test."), upstream)).rr[0].rdata) for _ in range(3)]

    assert sorted(asyncio.run(run())) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
