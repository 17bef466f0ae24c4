"""Cluster DNS as pods use it: service names, search path, headless and pod records, upstream, NXDOMAIN.

Probes resolve names through the pod's own resolv.conf (dnsPolicy ClusterFirst: the cluster DNS
Service, the ``<ns>.svc.<domain>`` search path, ndots:5) with agnhost, which has no DNS client:
where a name points is read from ``agnhost connect <name>:9/udp``'s failure line, who answers
behind it from netexec ``/dial`` (see :mod:`suites.namecheck`). Rows are one probe pod per node
(``<node>/a``); columns are the names typed, so a failure names the pair. hostNetwork pods are
not rows: under ClusterFirst they use the node's resolver, which is what the upstream check
asks them first ("does the node itself resolve the upstream name?").

Settings: ``KNETCHECK_UPSTREAM_NAME`` (default ``kubernetes.io``) is a name only the upstream
resolvers know; when no node resolves it (a cluster without internet) the upstream check skips
and says so. ``KNETCHECK_CLUSTER_DOMAIN`` (default ``cluster.local``).

Not covered, and reported as skipped rather than faked: SRV and PTR records. They need a DNS
client in the probe pod (dig/nslookup); agnhost ``connect`` and netexec ``/dial`` resolve only
A/AAAA (Go's ``net.Resolve*Addr``), and agnhost's own DNS subcommands only print resolv.conf.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from clusters.handle import Cluster
from suites import backends as bk
from suites import namecheck as names
from suites import topology as topo
from suites.connectivity import Check, Judge, Verify
from suites.probe import ProbeJob, ProbeKind, Prober
from suites.progress import Progress
from suites.topology import Placed, Topology
from suites.truthtable import TruthTable

pytestmark = pytest.mark.conformance

APP = "dns"
WEB = "web"
SUB = "sub"
"""The headless Service whose name is the backends' ``spec.subdomain``."""
HOSTS = ("host-0", "host-1")
NX_TIMEOUT = 2.0
MAX_WORKERS = 64

JobFor = Callable[[Placed], ProbeJob]


@dataclass(frozen=True)
class World:
    topology: Topology
    deployed: bk.Deployed
    kubernetes_ip: str
    """The ClusterIP of default/kubernetes: a Service in another namespace, on every cluster."""

    @property
    def namespace(self) -> str:
        return self.topology.namespace

    @property
    def clients(self) -> list[Placed]:
        return self.topology.one_per_node


def _manifests(namespace: str, run_id: str) -> list[dict[str, Any]]:
    discard = bk.port("discard", bk.DISCARD_PORT, bk.DISCARD_PORT, "UDP")
    return [
        bk.service_manifest(
            namespace, run_id, WEB, {"ports": [bk.port("http", 80, bk.HTTP_PORT), discard]}, APP
        ),
        bk.service_manifest(
            namespace,
            run_id,
            SUB,
            {"clusterIP": "None", "ports": [bk.port("http", bk.HTTP_PORT, bk.HTTP_PORT), discard]},
            APP,
        ),
    ]


@pytest.fixture(scope="module")
def world(cluster: Cluster, topology: Topology, run_id: str, progress: Progress) -> Iterator[World]:
    """Two backends with ``spec.hostname`` + ``spec.subdomain`` on different nodes, a ClusterIP
    Service and the headless Service named by their subdomain."""
    nodes = list({p.pod.node.name: p.pod.node for p in topology.pods}.values())
    plan = [
        bk.Backend(f"dns-{h}", nodes[i % len(nodes)], APP, hostname=h, subdomain=SUB)
        for i, h in enumerate(HOSTS)
    ]
    manifests = _manifests(topology.namespace, run_id)
    try:
        try:
            deployed = bk.deploy(cluster, topology.namespace, plan, manifests, progress, run_id=run_id)
        except bk.BackendsNotReady as exc:
            pytest.fail(str(exc), pytrace=False)
        kubernetes = bk.service_info(bk.read_service(cluster, "default", "kubernetes"))
        yield World(topology, deployed, kubernetes.cluster_ip)
    finally:
        bk.delete(
            cluster,
            topology.namespace,
            [b.name for b in plan],
            [str(m["metadata"]["name"]) for m in manifests],
        )


def table(
    name: str, froms: Sequence[Placed], columns: dict[str, JobFor], judge: Judge, expected: bool = True
) -> Check:
    cols = list(columns)
    exp = TruthTable.filled([f.pod.key for f in froms], cols, expected)
    return Check(name, exp, {(f.pod.key, c): columns[c](f) for f in froms for c in cols}, judge)


def resolve(name: str) -> JobFor:
    return lambda src: names.resolve_job(src.ref, name)


def dial(host: str, port: int) -> JobFor:
    return lambda src: names.dial_job(src.ref, host, port)


def every_cell(froms: Sequence[Placed], columns: dict[str, Any], value: Any) -> dict[tuple[str, str], Any]:
    return {(f.pod.key, c): value(c) for f in froms for c in columns}


def test_service_a_record(world: World, verify: Verify) -> None:
    svc = world.deployed.service(WEB)
    fqdn = names.service_fqdn(WEB, world.namespace)
    froms = world.clients
    to_ip, answers = f"{fqdn} -> {svc.cluster_ip}", f"{fqdn}:80 answers"
    columns: dict[str, JobFor] = {
        to_ip: resolve(fqdn),
        answers: dial(fqdn, 80),
    }
    judge = names.by_column(
        {
            to_ip: names.resolves_to(every_cell(froms, {to_ip: 0}, lambda _c: frozenset({svc.cluster_ip}))),
            answers: names.answered_by(
                every_cell(froms, {answers: 0}, lambda _c: world.deployed.ready_names)
            ),
        },
        names.resolves,
    )
    verify(
        table(
            f"A record of service {WEB}: resolves to its ClusterIP, and connecting by name works",
            froms,
            columns,
            judge,
        )
    )


def test_search_path_short_names(world: World, verify: Verify) -> None:
    ns, domain = world.namespace, names.cluster_domain()
    ip = world.deployed.service(WEB).cluster_ip
    forms = {
        WEB: ip,
        f"{WEB}.{ns}": ip,
        f"{WEB}.{ns}.svc": ip,
        f"{WEB}.{ns}.svc.{domain}.": ip,
        "kubernetes.default": world.kubernetes_ip,
    }
    froms = world.clients
    columns = {name: resolve(name) for name in forms}
    judge = names.resolves_to(every_cell(froms, columns, lambda c: frozenset({forms[c]})))
    verify(
        table(
            f"short names through the search path resolve to the ClusterIP ({WEB} {ip}, "
            f"kubernetes.default {world.kubernetes_ip})",
            froms,
            columns,
            judge,
        )
    )


def test_headless_records(world: World, verify: Verify) -> None:
    """The headless name resolves to a ready pod; each pod's ``<hostname>.<service>`` record to it."""
    ns = world.namespace
    ips = {b.backend.hostname: b.ip for b in world.deployed.ready}
    froms = world.clients
    columns: dict[str, JobFor] = {SUB: resolve(names.service_fqdn(SUB, ns))}
    expect: dict[str, frozenset[str]] = {SUB: frozenset(ips.values())}
    for host, ip in ips.items():
        fqdn = f"{host}.{names.service_fqdn(SUB, ns)}"
        columns[fqdn] = resolve(fqdn)
        expect[fqdn] = frozenset({ip})
    judge = names.resolves_to(every_cell(froms, columns, lambda c: expect[c]))
    verify(
        table(
            f"headless service {SUB}: the name -> a pod IP, each per-pod record -> that pod ({ips})",
            froms,
            columns,
            judge,
        )
    )


def test_pod_hostname_and_subdomain(world: World, verify: Verify) -> None:
    """A pod with ``spec.hostname`` and ``spec.subdomain`` is reachable as ``<hostname>.<subdomain>``
    (search path) and reports that hostname."""
    froms = world.clients
    columns: dict[str, JobFor] = {f"{host}.{SUB}": dial(f"{host}.{SUB}", bk.HTTP_PORT) for host in HOSTS}
    judge = names.answered_by(every_cell(froms, columns, lambda c: frozenset({c.split(".", 1)[0]})))
    verify(
        table(
            f"<hostname>.{SUB}:{bk.HTTP_PORT} answered by the pod with that hostname", froms, columns, judge
        )
    )


def test_upstream_forwarding(world: World, probe_channel: topo.TopologyChannel, verify: Verify) -> None:
    """A name only the upstream resolvers know resolves in pods (CoreDNS forwards it)."""
    name = names.upstream_name()
    hosts = world.topology.hosts
    if hosts:
        results = Prober(probe_channel, max_workers=MAX_WORKERS).probe_all(
            {h.pod.key: names.resolve_job(h.ref, name) for h in hosts}
        )
        if not any(names.resolved_address(r) for r in results.values()):
            why = "; ".join(f"{k}: {r.verdict.value} {r.detail}" for k, r in sorted(results.items()))
            pytest.skip(
                f"upstream name {name!r} does not resolve from any node's own resolver ({why}); "
                f"the cluster may have no upstream DNS: set {names.UPSTREAM_NAME_ENV} to a name the "
                "nodes resolve"
            )
    froms = world.clients
    verify(
        table(
            f"upstream name {name} resolves in pods (forwarded by the cluster DNS)",
            froms,
            {name: resolve(name)},
            names.resolves,
        )
    )


def test_nxdomain(world: World, run_id: str, verify: Verify) -> None:
    """Names that exist nowhere fail with a DNS error (X = did not resolve, as expected)."""
    in_zone = names.service_fqdn("no-such-service", world.namespace)
    short = f"knetcheck-no-such-name-{run_id.lower()}"
    froms = world.clients

    def connect(name: str) -> JobFor:
        return lambda src: ProbeJob(src.ref, name, 80, "TCP", ProbeKind.CONNECT, NX_TIMEOUT)

    columns = {in_zone: connect(in_zone), short: connect(short)}
    # in the cluster zone the answer is authoritative (NXDOMAIN: "no such host"); a bare name ends at
    # the upstream, where a cluster without internet may time out instead: still a DNS error
    judge = names.by_column(
        {in_zone: names.nxdomain(require_no_such_host=True)}, names.nxdomain(require_no_such_host=False)
    )
    verify(
        table(
            "names that exist nowhere: DNS error expected (X = did not resolve)",
            froms,
            columns,
            judge,
            expected=False,
        )
    )


def test_srv_records() -> None:
    pytest.skip(
        "not covered: SRV lookups (_http._tcp.<svc>) need a DNS client in the probe pod; agnhost "
        "connect and netexec /dial resolve A/AAAA only"
    )


def test_ptr_records() -> None:
    pytest.skip(
        "not covered: reverse (PTR) lookups need a DNS client in the probe pod; agnhost connect "
        "and netexec /dial resolve A/AAAA only"
    )
