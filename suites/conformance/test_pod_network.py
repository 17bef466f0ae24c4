"""The flat pod network: every pod reaches every pod and node, on any node, without NAT.

The Kubernetes network model: pods can communicate with all other pods on any node without NAT,
and agents on a node can communicate with all pods on that node. Each test is one truth table
(or one per node), expected all connected; rows and columns are ``<node>/<pod>`` (``<node>/node``
for the node itself, a hostNetwork pod), so a failure names the pairs. All cells of a test are
probed at once; wrong cells are re-probed until the convergence deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from suites.connectivity import Check, Judge, Verify, reachability, responder_is, source_ip_is
from suites.probe import ProbeJob, ProbeKind
from suites.topology import Placed, Topology
from suites.truthtable import TruthTable

pytestmark = pytest.mark.conformance

CONNECT_TIMEOUT = 2.0
"""Seconds for ``agnhost connect``: a healthy pod network answers in milliseconds."""
OWN_NODE = "own node"

JobFor = Callable[[Placed, Placed], ProbeJob]


def tcp(src: Placed, dst: Placed) -> ProbeJob:
    return ProbeJob(src.ref, dst.ip, dst.pod.http_port, "TCP", ProbeKind.CONNECT, CONNECT_TIMEOUT)


def udp(src: Placed, dst: Placed) -> ProbeJob:
    return ProbeJob(src.ref, dst.ip, dst.pod.udp_port, "UDP", ProbeKind.DIAL, request="hostname")


def client_ip(src: Placed, dst: Placed) -> ProbeJob:
    return ProbeJob(src.ref, dst.ip, dst.pod.http_port, "TCP", ProbeKind.DIAL, request="clientip")


def matrix(name: str, froms: Sequence[Placed], tos: Sequence[Placed], job: JobFor,
           judge: Judge = reachability) -> Check:
    expected = TruthTable.filled([f.pod.key for f in froms], [t.pod.key for t in tos], True)
    jobs = {(f.pod.key, t.pod.key): job(f, t) for f in froms for t in tos}
    return Check(name, expected, jobs, judge)


def need_nodes(topology: Topology, count: int) -> None:
    nodes = topology.pod_nodes
    if len(nodes) < count:
        pytest.skip(f"needs probe pods on {count} nodes; only {len(nodes)} node(s) admit pods "
                    f"({', '.join(nodes) or 'none'})")


def test_pod_to_pod_same_node(topology: Topology, verify: Verify) -> None:
    checks = []
    for node in topology.pod_nodes:
        pods = [p for p in topology.pods if p.pod.node.name == node]
        if len(pods) >= 2:
            checks.append(matrix(f"pod->pod on node {node}, TCP/{pods[0].pod.http_port}", pods, pods, tcp))
    if not checks:
        pytest.skip("no node runs two probe pods")
    verify(*checks)


def test_pod_to_pod_across_nodes(topology: Topology, verify: Verify) -> None:
    need_nodes(topology, 2)
    pods = topology.pods
    verify(matrix(f"pod->pod all pairs, TCP/{pods[0].pod.http_port}", pods, pods, tcp))


def test_pod_to_pod_across_nodes_udp(topology: Topology, verify: Verify) -> None:
    need_nodes(topology, 2)
    pods = topology.pods
    names = {(f.pod.key, t.pod.key): t.pod.name for f in pods for t in pods}
    verify(matrix(f"pod->pod all pairs, UDP/{pods[0].pod.udp_port} (netexec /dial hostname)",
                  pods, pods, udp, responder_is(names)))


def test_node_to_pod(topology: Topology, verify: Verify) -> None:
    if not topology.hosts:
        pytest.skip("no node admits a hostNetwork probe pod")
    verify(matrix("node->pod, TCP (from a hostNetwork pod on each node)", topology.hosts, topology.pods, tcp))


def test_pod_to_node(topology: Topology, verify: Verify) -> None:
    if not topology.hosts:
        pytest.skip("no node admits a hostNetwork probe pod")
    port = topology.hosts[0].pod.http_port
    verify(matrix(f"pod->node, TCP/{port} (to a hostNetwork pod on each node)",
                  topology.pods, topology.hosts, tcp))


def test_pod_to_own_node(topology: Topology, verify: Verify) -> None:
    pairs = [(p, host) for p in topology.pods if (host := topology.host_of(p)) is not None]
    if not pairs:
        pytest.skip("no pod's node runs a hostNetwork probe pod")
    expected = TruthTable.filled([p.pod.key for p, _ in pairs], [OWN_NODE], True)
    jobs = {(p.pod.key, OWN_NODE): tcp(p, host) for p, host in pairs}
    verify(Check("pod->own node IP, TCP (a hostNetwork pod on the pod's node)", expected, jobs))


def test_source_ip_preserved_pod_to_pod(topology: Topology, verify: Verify) -> None:
    """The target must see the source pod's own IP: no SNAT/masquerade between pods."""
    pods = topology.pods
    sources = {(f.pod.key, t.pod.key): f.ip for f in pods for t in pods}
    verify(matrix("pod->pod source IP kept (target's /clientip == source pod IP)",
                  pods, pods, client_ip, source_ip_is(sources)))
