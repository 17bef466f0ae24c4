"""Services: every type answers from every node, through the backends that are ready, and only them.

Three ready agnhost netexec backends spread over the nodes, plus one that never becomes Ready,
sit behind Services created for this module in the topology's namespace (run-id labelled). Rows
are the probe pods' keys (``<node>/a`` a pod on that node, ``<node>/node`` the node itself via a
hostNetwork pod); columns name the Service, address and port, so a failure names the pair. A cell
is right when a READY backend answered (netexec ``/hostname``), not merely when something did.

Not covered here: LoadBalancer needs the ``load-balancer`` capability (an implementation that
writes ``status.loadBalancer.ingress``); ExternalName points at the upstream name of the DNS
module (``KNETCHECK_UPSTREAM_NAME``) and skips when no node resolves it; the multi-port check
proves both ports answer, not which container port each reached (both containers are netexec).
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
from suites.conformance.conftest import converge_timeout
from suites.connectivity import Check, Judge, Outcome, Verify, source_ip_is
from suites.probe import ProbeJob, Prober
from suites.progress import Progress
from suites.reports import Recorder
from suites.sampling import Sampled, one_responder, responders_within, run_sampled
from suites.topology import Placed, Topology
from suites.truthtable import TruthTable

pytestmark = pytest.mark.conformance

APP = "web"
READY_BACKENDS = 3
SAMPLES = 10
"""Requests per client for the affinity and readiness samples."""
LB_TIMEOUT = 120.0
MAX_WORKERS = 64
WEB, NODE_PORT, AFFINITY, HEADLESS, EXTERNAL, LB = (
    "web",
    "web-nodeport",
    "web-affinity",
    "web-headless",
    "web-external",
    "web-lb",
)

JobFor = Callable[[Placed], ProbeJob]


@dataclass(frozen=True)
class World:
    topology: Topology
    deployed: bk.Deployed

    @property
    def clients(self) -> list[Placed]:
        """The client of every Service check."""
        return self.topology.one_per_node

    @property
    def ready(self) -> frozenset[str]:
        return self.deployed.ready_names

    def svc(self, name: str) -> bk.ServiceInfo:
        return self.deployed.service(name)


def _manifests(namespace: str, run_id: str) -> list[dict[str, Any]]:
    http = bk.port("http", 80, bk.HTTP_PORT)
    discard = bk.port("discard", bk.DISCARD_PORT, bk.DISCARD_PORT, "UDP")
    specs: dict[str, dict[str, Any]] = {
        WEB: {
            "ports": [
                http,
                bk.port("udp", 80, bk.UDP_PORT, "UDP"),
                bk.port("alt", 81, bk.ALT_HTTP_PORT),
                discard,
            ]
        },
        NODE_PORT: {"type": "NodePort", "ports": [http]},
        AFFINITY: {"sessionAffinity": "ClientIP", "ports": [http]},
        HEADLESS: {"clusterIP": "None", "ports": [bk.port("http", bk.HTTP_PORT, bk.HTTP_PORT), discard]},
    }
    return [bk.service_manifest(namespace, run_id, name, spec, APP) for name, spec in specs.items()]


@pytest.fixture(scope="module")
def world(cluster: Cluster, topology: Topology, run_id: str, progress: Progress) -> Iterator[World]:
    """Three ready backends round-robin over the probe nodes, one never-ready backend, the Services."""
    nodes = list({p.pod.node.name: p.pod.node for p in topology.pods}.values())
    plan = [
        bk.Backend(b.name, b.node, b.app, hostname=b.name, subdomain=HEADLESS)
        for b in bk.spread("backend", APP, nodes, READY_BACKENDS)
    ]
    plan.append(
        bk.Backend(
            "backend-unready", nodes[-1], APP, ready=False, hostname="backend-unready", subdomain=HEADLESS
        )
    )
    manifests = _manifests(topology.namespace, run_id)
    try:
        try:
            deployed = bk.deploy(cluster, topology.namespace, plan, manifests, progress, run_id=run_id)
        except bk.BackendsNotReady as exc:
            pytest.fail(str(exc), pytrace=False)
        yield World(topology, deployed)
    finally:
        bk.delete(
            cluster,
            topology.namespace,
            [b.name for b in plan],
            [str(m["metadata"]["name"]) for m in manifests],
        )


@pytest.fixture
def verify_sampled(
    probe_channel: topo.TopologyChannel, report: Recorder, progress: Progress
) -> Callable[[Sampled], Outcome]:
    """Like ``verify``, for cells judged over repeated requests (never re-probed: see suites.sampling)."""

    def run(sampled: Sampled) -> Outcome:
        outcome = run_sampled(probe_channel, sampled, progress=progress, max_workers=MAX_WORKERS)
        report.outcome(outcome)
        if not outcome.ok:
            pytest.fail(outcome.failure_message(), pytrace=False)
        return outcome

    return run


def table(
    name: str,
    froms: Sequence[Placed],
    columns: dict[str, JobFor],
    judge: Judge,
    expected: dict[str, bool] | None = None,
) -> Check:
    """Rows = sources, one column per target; every cell expected True unless ``expected`` says."""
    want = expected or {}
    cols = list(columns)
    exp = TruthTable.from_function([f.pod.key for f in froms], cols, lambda _s, d: want.get(d, True))
    jobs = {(f.pod.key, c): columns[c](f) for f in froms for c in cols}
    return Check(name, exp, jobs, judge)


def served_by(world: World, froms: Sequence[Placed], cols: Sequence[str]) -> Judge:
    """Answered by one of the ready backends."""
    return names.answered_by({(f.pod.key, c): world.ready for f in froms for c in cols})


def dial(host: str, port: int, protocol: str = "TCP", request: str = "hostname") -> JobFor:
    return lambda src: names.dial_job(src.ref, host, port, protocol, request)


def resolve(name: str) -> JobFor:
    return lambda src: names.resolve_job(src.ref, name)


def test_cluster_ip(world: World, verify: Verify) -> None:
    ip = world.svc(WEB).cluster_ip
    froms = world.clients + world.topology.hosts
    col = f"{WEB} {ip}:80/TCP"
    verify(
        table(
            f"ClusterIP {WEB}: answered by a ready backend from every node's pod and the node itself",
            froms,
            {col: dial(ip, 80)},
            served_by(world, froms, [col]),
        )
    )


def test_node_port(world: World, cluster: Cluster, verify: Verify) -> None:
    port = world.svc(NODE_PORT).port("http").node_port
    nodes = [n for n in topo.list_nodes(cluster) if n.ip]
    froms = world.clients + world.topology.hosts
    columns = {f"{n.label} {n.ip}:{port}": dial(n.ip, port) for n in nodes}
    verify(
        table(
            f"NodePort {NODE_PORT}:{port} on every node's InternalIP, from pods and nodes",
            froms,
            columns,
            served_by(world, froms, list(columns)),
        )
    )


@pytest.mark.requires("load-balancer")
def test_load_balancer(world: World, cluster: Cluster, run_id: str, verify: Verify) -> None:
    ns = world.topology.namespace
    manifest = bk.service_manifest(
        ns, run_id, LB, {"type": "LoadBalancer", "ports": [bk.port("http", 80, 8080)]}, APP
    )
    bk.create_service(cluster, manifest)
    try:
        try:
            address = bk.wait_load_balancer(cluster, ns, LB, LB_TIMEOUT)
        except bk.BackendsNotReady as exc:
            pytest.fail(str(exc), pytrace=False)
        froms = world.clients + world.topology.hosts
        col = f"{LB} {address}:80"
        verify(
            table(
                f"LoadBalancer {LB} at its status.loadBalancer.ingress address, from pods and nodes",
                froms,
                {col: dial(address, 80)},
                served_by(world, froms, [col]),
            )
        )
    finally:
        bk.delete(cluster, ns, [], [LB])


def test_external_name(
    world: World, cluster: Cluster, run_id: str, probe_channel: topo.TopologyChannel, verify: Verify
) -> None:
    """An ExternalName Service's name resolves to what its target resolves to (CNAME followed)."""
    target = names.upstream_name()
    seen = _resolve_from(probe_channel, world.topology.hosts + world.clients, target)
    from_nodes = {k: a for k, a in seen.items() if k.endswith("/node")}
    if world.topology.hosts and not any(from_nodes.values()):
        pytest.skip(
            f"ExternalName target {target!r} does not resolve from any node's own resolver "
            f"({names.UPSTREAM_NAME_ENV} names a host outside the cluster; set it to one the "
            "nodes resolve)"
        )
    ns = world.topology.namespace
    bk.create_service(
        cluster, bk.service_manifest(ns, run_id, EXTERNAL, {"type": "ExternalName", "externalName": target})
    )
    try:
        addresses = frozenset(a for a in seen.values() if a)
        col = f"{EXTERNAL} -> {target}"
        froms = world.clients
        check = table(
            f"ExternalName {EXTERNAL} resolves to its target's addresses {sorted(addresses)}",
            froms,
            {col: resolve(EXTERNAL)},
            names.resolves_to({(f.pod.key, col): addresses for f in froms}),
        )
        verify(check)
    finally:
        bk.delete(cluster, ns, [], [EXTERNAL])


def _resolve_from(
    channel: topo.TopologyChannel, sources: Sequence[Placed], name: str
) -> dict[str, str | None]:
    """Where ``name`` points as seen from each source (None: it did not resolve there)."""
    prober = Prober(channel, max_workers=MAX_WORKERS)
    results = prober.probe_all({s.pod.key: names.resolve_job(s.ref, name) for s in sources})
    return {k: names.resolved_address(r) for k, r in results.items()}


def test_headless(world: World, verify: Verify) -> None:
    """No ClusterIP; the name resolves to ready pod IPs; each ready pod has its own record, and the
    unready one has none."""
    svc = world.svc(HEADLESS)
    assert svc.cluster_ip == "None", f"headless service {HEADLESS} got clusterIP {svc.cluster_ip!r}"
    ns = world.topology.namespace
    froms = world.clients
    ready_ips = frozenset(b.ip for b in world.deployed.ready)
    columns: dict[str, JobFor] = {HEADLESS: resolve(HEADLESS)}
    judges: dict[str, Judge] = {
        HEADLESS: names.resolves_to({(f.pod.key, HEADLESS): ready_ips for f in froms})
    }
    for b in world.deployed.ready:
        fqdn = f"{b.backend.hostname}.{names.service_fqdn(HEADLESS, ns)}"
        col = f"{b.backend.hostname}.{HEADLESS}"
        columns[col] = dial(fqdn, bk.HTTP_PORT)
        judges[col] = names.answered_by({(f.pod.key, col): frozenset({b.backend.answers_as}) for f in froms})
    expected: dict[str, bool] = {}
    for b in world.deployed.unready:
        fqdn = f"{b.backend.hostname}.{names.service_fqdn(HEADLESS, ns)}"
        col = f"{b.backend.hostname}.{HEADLESS} (unready: no record)"
        columns[col] = resolve(fqdn)
        judges[col] = names.nxdomain(require_no_such_host=True)
        expected[col] = False
    verify(
        table(
            f"headless {HEADLESS}: '.' = resolves to / answered by the ready pods; X = does not resolve",
            froms,
            columns,
            names.by_column(judges, names.resolves),
            expected,
        )
    )


def test_multi_port(world: World, verify: Verify) -> None:
    ip = world.svc(WEB).cluster_ip
    froms = world.clients
    columns = {
        f"{WEB}:80/TCP -> {bk.HTTP_PORT}": dial(ip, 80),
        f"{WEB}:81/TCP -> {bk.ALT_HTTP_PORT}": dial(ip, 81),
    }
    verify(
        table(
            f"multi-port {WEB} ({ip}): both ports answered by a ready backend",
            froms,
            columns,
            served_by(world, froms, list(columns)),
        )
    )


def test_tcp_and_udp_on_one_port(world: World, verify: Verify) -> None:
    ip = world.svc(WEB).cluster_ip
    froms = world.clients
    columns = {f"{WEB}:80/TCP": dial(ip, 80), f"{WEB}:80/UDP": dial(ip, 80, "UDP")}
    verify(
        table(
            f"TCP and UDP on port 80 of {WEB} ({ip}), UDP to netexec's UDP server",
            froms,
            columns,
            served_by(world, froms, list(columns)),
        )
    )


def test_session_affinity_client_ip(
    world: World, verify: Verify, verify_sampled: Callable[[Sampled], Outcome]
) -> None:
    ip = world.svc(AFFINITY).cluster_ip
    froms = world.clients
    col = f"{AFFINITY} {ip}:80"
    verify(table(f"{AFFINITY} reachable", froms, {col: dial(ip, 80)}, served_by(world, froms, [col])))
    keys = [f.pod.key for f in froms]
    scol = f"{col} x{SAMPLES}: one backend"
    verify_sampled(
        Sampled(
            f"sessionAffinity ClientIP: all {SAMPLES} requests of a client land on one ready backend",
            TruthTable.filled(keys, [scol]),
            {(f.pod.key, scol): dial(ip, 80)(f) for f in froms},
            SAMPLES,
            one_responder(world.ready),
        )
    )


def test_source_ip_preserved_through_cluster_ip(world: World, verify: Verify) -> None:
    ip = world.svc(WEB).cluster_ip
    froms = world.clients
    col = f"{WEB} {ip}:80 /clientip"
    sources = {(f.pod.key, col): f.ip for f in froms}
    verify(
        table(
            "ClusterIP keeps the client pod's IP (backend /clientip == client pod IP)",
            froms,
            {col: dial(ip, 80, request="clientip")},
            source_ip_is(sources),
        )
    )


def test_endpoints_follow_readiness(
    world: World, cluster: Cluster, verify: Verify, verify_sampled: Callable[[Sampled], Outcome]
) -> None:
    """The never-ready backend is listed not-ready in the EndpointSlice and never answers through
    the ClusterIP, although it answers on its own IP."""
    ns = world.topology.namespace
    want = {b.ip: b.backend.ready for b in world.deployed.backends}
    seen = _poll(lambda: bk.read_endpoints(cluster, ns, WEB), want, converge_timeout())
    assert seen == want, (
        f"EndpointSlices of {ns}/{WEB}: expected {{ip: ready}} = {want}, the API says {seen} "
        f"(reproduce: kubectl -n {ns} get endpointslices -l {bk.SERVICE_NAME_LABEL}={WEB} -o yaml)"
    )
    unready = world.deployed.unready[0]
    froms = world.clients
    direct = f"{unready.backend.name} {unready.ip}:{bk.HTTP_PORT} (direct)"
    verify(
        table(
            "the unready backend itself answers on its pod IP",
            froms,
            {direct: dial(unready.ip, bk.HTTP_PORT)},
            names.answered_by({(f.pod.key, direct): frozenset({unready.backend.answers_as}) for f in froms}),
        )
    )
    ip = world.svc(WEB).cluster_ip
    reach = f"{WEB} {ip}:80"
    verify(table(f"{WEB} reachable", froms, {reach: dial(ip, 80)}, served_by(world, froms, [reach])))
    col = f"{reach} x{SAMPLES}"
    keys = [f.pod.key for f in froms]
    verify_sampled(
        Sampled(
            f"through the ClusterIP only ready backends answer (never {unready.backend.name})",
            TruthTable.filled(keys, [col]),
            {(f.pod.key, col): dial(ip, 80)(f) for f in froms},
            SAMPLES,
            responders_within(world.ready),
        )
    )


def _poll(read: Callable[[], dict[str, bool]], want: dict[str, bool], timeout: float) -> dict[str, bool]:
    """Read until it equals ``want`` or the deadline passes; the last reading either way."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        seen = read()
        if seen == want or time.monotonic() >= deadline:
            return seen
        time.sleep(0.5)
