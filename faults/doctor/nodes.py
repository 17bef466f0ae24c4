"""Cross-node rules: the seed runbook's "add routes for the container IPs of other nodes" step, and
the probe pattern "same-node works, cross-node fails → routing/overlay" (DESIGN §7).

Routes are read from every node (``ip -4 route``). Only where the CNI routes node podCIDRs
directly (host-gw style: some node has a route covering another node's podCIDR) is a node without
such a route a fault: overlays and own-IPAM CNIs route differently, and a rule that guessed there
would fire on healthy clusters. Probes, when allowed, run from one agnhost pod pair per node; a
cross-node failure with every route in place is a partition (of the data plane).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from clusters.errors import KnetcheckError
from clusters.handle import Cluster
from clusters.recipes import Ipam
from faults.doctor.snapshot import Facts, Obj, name_of, node_ready
from faults.findings import Finding, FindingId
from suites import namespaces, topology
from suites.probe import ProbeJob, Prober, converge
from suites.progress import LogProgress
from suites.verdict import ProbeResult, Verdict

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0
DNS_NAME = "kube-dns.kube-system.svc.cluster.local"
Net4 = ipaddress.IPv4Network


@dataclass(frozen=True)
class RouteGap:
    node: str
    peer: str
    cidr: str
    peer_ip: str
    example: str
    """A line from another node that routes a podCIDR, showing the pattern this node lacks."""


def _pod_cidrs(node: Obj) -> list[Net4]:
    spec = node.get("spec") or {}
    raw = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    nets = [ipaddress.ip_network(str(c), strict=False) for c in raw]
    return [n for n in nets if isinstance(n, Net4)]


def _internal_ip(node: Obj) -> str:
    for addr in (node.get("status") or {}).get("addresses") or []:
        if addr.get("type") == "InternalIP":
            return str(addr.get("address"))
    return ""


def _route_nets(lines: Sequence[str]) -> list[tuple[Net4, str]]:
    out = []
    for line in lines:
        dst = line.split(None, 1)[0] if line.split() else ""
        if dst in ("default", "unreachable", "blackhole", "prohibit", "throw", "broadcast", "local"):
            continue
        try:
            net = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if isinstance(net, Net4) and net.prefixlen > 0:
            out.append((net, line))
    return out


def route_gaps(facts: Facts) -> list[RouteGap]:
    """Nodes lacking a route to another node's podCIDR, where the CNI routes podCIDRs host-gw style."""
    if facts.recipe.ipam is not Ipam.NODE_PODCIDR or not facts.node_reads.available:
        return []
    nodes = {name_of(n): n for n in facts.snapshot.nodes if _pod_cidrs(n)}
    tables: dict[str, list[tuple[Net4, str]]] = {}
    for name in nodes:
        files = facts.node_reads.get(name)
        if files is not None and files.routes is not None:
            tables[name] = _route_nets(files.routes)

    def covering(node: str, cidr: Net4) -> str | None:
        return next((line for net, line in tables.get(node, []) if cidr.subnet_of(net)), None)

    foreign = [
        (node, peer, cidr)
        for node in tables
        for peer in nodes
        if peer != node
        for cidr in _pod_cidrs(nodes[peer])
    ]
    if not any(covering(node, cidr) for node, _, cidr in foreign):
        return []  # no node routes another's podCIDR: not a host-gw style data plane
    gaps = []
    for node, peer, cidr in foreign:
        if covering(node, cidr) is not None:
            continue
        example = next(
            (
                f"{other}: {line}"
                for other in sorted(tables)
                if other not in (node, peer)
                for line in [covering(other, cidr)]
                if line
            ),
            "",
        )
        gaps.append(RouteGap(node, peer, str(cidr), _internal_ip(nodes[peer]), example))
    return gaps


def route_rule(
    facts: Facts, gaps: Sequence[RouteGap] | None = None, extra: Sequence[str] = ()
) -> list[Finding]:
    """node-route-missing, one finding per node lacking routes."""
    gaps = route_gaps(facts) if gaps is None else gaps
    agent = facts.recipe.agent
    out = []
    for node in sorted({g.node for g in gaps}):
        mine = [g for g in gaps if g.node == node]
        evidence = [
            f"{node} has no route to {g.peer}'s podCIDR {g.cidr} (ip -4 route on {node})" for g in mine
        ]
        evidence += [f"for comparison, {g.example}" for g in mine[:1] if g.example]
        evidence += list(extra)
        adds = "; ".join(f"ip route add {g.cidr} via {g.peer_ip}" for g in mine if g.peer_ip)
        out.append(
            Finding(
                FindingId.NODE_ROUTE_MISSING,
                f"node/{node}",
                f"{node} cannot route to the pods of "
                + ", ".join(sorted({g.peer for g in mine}))
                + ": cross-node pod traffic from (and replies to) it are lost",
                tuple(evidence),
                f"{facts.recipe.name} programs these routes: restart its agent on {node} (kubectl -n "
                f"{agent.namespace} "
                f"delete pod -l {agent.selector} --field-selector spec.nodeName={node}); or add them by "
                "hand on "
                f"{node}: {adds}",
            )
        )
    return out


ENCAP_OVERHEAD = {"udp/8472": 50, "udp/4789": 50, "udp/6081": 50, "ipip": 20}
"""Bytes an overlay adds per packet (VXLAN/Geneve 50, IP-in-IP 20): pod MTU + this must fit."""


def pod_mtu(conf_text: str) -> int | None:
    """The MTU a conflist gives pods: the first plugin (or delegate) with an ``mtu`` key."""
    import json

    try:
        doc = json.loads(conf_text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    for plugin in doc.get("plugins") or [doc]:
        if not isinstance(plugin, dict):
            continue
        for where in (plugin, plugin.get("delegate") or {}):
            value = where.get("mtu") if isinstance(where, dict) else None
            if isinstance(value, int) and value > 0:
                return value
    return None


def mtu_rule(facts: Facts) -> list[Finding]:
    """mtu-mismatch: pods send bigger packets than the node's uplink carries (with the overlay's
    overhead). Small exchanges (DNS, short HTTP) still work; large transfers stall, so the config
    itself is the evidence. Only where the conflist states an MTU (0 / auto is not a claim)."""
    overhead = max((ENCAP_OVERHEAD.get(p, 0) for p in facts.recipe.overlay_ports), default=0)
    out = []
    for node in facts.snapshot.nodes:
        name = name_of(node)
        files = facts.node_reads.get(name)
        if files is None or files.uplink is None or not files.first_conf or not files.conf_files:
            continue
        mtu = pod_mtu(files.first_conf)
        dev, link_mtu = files.uplink
        if mtu is None or mtu + overhead <= link_mtu:
            continue
        conf = f"/etc/cni/net.d/{files.conf_files[0]}"
        encap = f" + {overhead} bytes of encapsulation" if overhead else ""
        summary = (
            f"pods on {name} use MTU {mtu}{encap} but its {dev} carries {link_mtu}: "
            "large packets are dropped or fragmented, large transfers stall"
        )
        evidence = (f'{conf} on {name}: "mtu": {mtu}', f"ip link show dev {dev} on {name}: mtu {link_mtu}")
        fix = (
            f"make them agree: restore {dev}'s MTU on {name} (ip link set dev {dev} mtu {mtu + overhead}), "
            f"or lower the CNI's pod MTU ({facts.recipe.name}) to {link_mtu - overhead} and recreate the pods"
        )
        out.append(Finding(FindingId.MTU_MISMATCH, f"node/{name}", summary, evidence, fix))
    return out


def unreachable_rule(facts: Facts) -> list[Finding]:
    """node-partition from the API's side: the node stopped posting status (Ready=Unknown)."""
    out = []
    for node in facts.snapshot.nodes:
        ready, cond = node_ready(node)
        if ready or cond.get("status") != "Unknown":
            continue
        name = name_of(node)
        out.append(
            Finding(
                FindingId.NODE_PARTITION,
                f"node/{name}",
                f"{name} is cut off from the control plane (Ready=Unknown)",
                (
                    f"node {name} Ready=Unknown reason {cond.get('reason')}: {cond.get('message')} "
                    f"(since {cond.get('lastTransitionTime')})",
                ),
                f"restore connectivity between {name} ({_internal_ip(node)}) and the API server (firewall "
                "rules such as "
                "`iptables -I INPUT -s <peer> -j DROP`, links, routes); pods there are evicted after 300 s",
            )
        )
    return out


# ---- probes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeOutcome:
    same: dict[str, ProbeResult]
    """node -> its a->b same-node probe."""
    cross: dict[tuple[str, str], ProbeResult]
    dns: dict[str, ProbeResult]


def probe_findings(cluster: Cluster, facts: Facts, found: Sequence[Finding], timeout: float) -> list[Finding]:
    """Deploy one netexec pair per schedulable node, probe, and name what the pattern says."""
    infos = [
        i
        for i in topology.node_infos(list(facts.snapshot.nodes))
        if node_ready(facts.snapshot.find("nodes", "", i.name) or {})[0]
    ]
    plan = topology.plan(f"kc-{cluster.run_id.lower()}-doctor", cluster.run_id, infos, pods_per_node=2)
    plan = replace(plan, pods=tuple(p for p in plan.pods if not p.host_network))
    if not plan.pods:
        return []
    try:
        namespaces.create(cluster, plan.namespace, cluster.run_id)
    except Exception as exc:  # the API refused: say so in the log, the static rules still stand
        log.warning("doctor: cannot create probe namespace %s: %s", plan.namespace, exc)
        return []
    try:
        try:
            topo = topology.deploy(cluster, plan, LogProgress(log), timeout=timeout)
        except (topology.TopologyNotReady, KnetcheckError) as exc:
            log.warning("doctor: probe pods not ready, skipping probes: %s", exc)
            return []
        outcome = _probe(cluster, topo)
    finally:
        namespaces.delete(cluster, plan.namespace)
    return analyse(facts, outcome, found)


def _probe(cluster: Cluster, topo: topology.Topology) -> ProbeOutcome:
    by_node: dict[str, dict[str, topology.Placed]] = {}
    for placed in topo.pods:
        by_node.setdefault(placed.pod.node.name, {})[placed.pod.key.rsplit("/", 1)[1]] = placed
    jobs: dict[tuple[str, str, str], ProbeJob] = {}
    for node, pods in by_node.items():
        a = pods.get("a")
        if a is None:
            continue
        if "b" in pods:
            jobs[("same", node, node)] = ProbeJob(
                a.ref, pods["b"].ip, topology.POD_HTTP_PORT, timeout=PROBE_TIMEOUT
            )
        for peer, peer_pods in by_node.items():
            if peer != node and "a" in peer_pods:
                jobs[("cross", node, peer)] = ProbeJob(
                    a.ref, peer_pods["a"].ip, topology.POD_HTTP_PORT, timeout=PROBE_TIMEOUT
                )
        jobs[("dns", node, node)] = ProbeJob(a.ref, DNS_NAME, 53, timeout=PROBE_TIMEOUT)
    channel = topology.TopologyChannel(cluster, topo, pool_size=max(4, len(jobs)))
    with Prober(channel, max_workers=max(4, len(jobs))) as prober:
        result = converge(
            prober,
            jobs,
            lambda k, r: (
                r.verdict is Verdict.CONNECTED or (k[0] == "dns" and r.verdict is not Verdict.DNS_ERROR)
            ),
            timeout=PROBE_TIMEOUT * 2,
            interval=0.5,
        )
    res = result.results
    return ProbeOutcome(
        same={k[1]: r for k, r in res.items() if k[0] == "same"},
        cross={(k[1], k[2]): r for k, r in res.items() if k[0] == "cross"},
        dns={k[1]: r for k, r in res.items() if k[0] == "dns"},
    )


def analyse(facts: Facts, outcome: ProbeOutcome, found: Sequence[Finding]) -> list[Finding]:
    """Turn the probe pattern into findings; pure, so it is unit-tested with made-up outcomes."""
    out: list[Finding] = []
    failing = {
        pair: r
        for pair, r in outcome.cross.items()
        if r.reachable is False
        and all(outcome.same.get(n) is None or outcome.same[n].reachable is True for n in pair)
    }
    if failing:
        matrix = [
            f"{s} -> {d}: {r.verdict.value} {r.detail}".strip() + f" (repeat: {r.command})"
            for (s, d), r in sorted(failing.items())
        ]
        ok = [f"{s} -> {d}: connected" for (s, d), r in sorted(outcome.cross.items()) if r.reachable is True]
        same = [f"{n} same-node: {r.verdict.value}" for n, r in sorted(outcome.same.items())]
        pairs = set(failing)
        gaps = [g for g in route_gaps(facts) if (g.node, g.peer) in pairs or (g.peer, g.node) in pairs]
        reported = {f.subject for f in found if f.id is FindingId.NODE_ROUTE_MISSING}
        if gaps:
            new = [
                f
                for f in route_rule(facts, gaps, ("probes: " + "; ".join(matrix[:2]),))
                if f.subject not in reported
            ]
            out += new
        elif not any(f.id is FindingId.NODE_PARTITION for f in found):
            out.append(
                Finding(
                    FindingId.NODE_PARTITION,
                    "cluster/pod-network",
                    f"cross-node pod traffic fails between {len(pairs)} node pair(s) while same-node traffic "
                    "works",
                    tuple(matrix[:6] + ok[:3] + same),
                    "the nodes' data plane is cut: check firewall rules between nodes (iptables -S "
                    "INPUT/FORWARD on "
                    "both nodes for DROP rules naming the peer), the overlay's ports "
                    + (", ".join(facts.recipe.overlay_ports) or "(host-gw: routes via the node IPs)")
                    + ", and node-to-node reachability (ping the peer's InternalIP from the node)",
                )
            )
    dns_failed = [n for n, r in outcome.dns.items() if r.verdict is Verdict.DNS_ERROR]
    dns_ids = {
        FindingId.COREDNS_FORWARD_LOOP,
        FindingId.COREDNS_UNAVAILABLE,
        FindingId.COREDNS_PENDING_NO_CNI,
        FindingId.DNS_SERVICE_NO_ENDPOINTS,
    }
    if outcome.dns and len(dns_failed) == len(outcome.dns) and not any(f.id in dns_ids for f in found):
        first = outcome.dns[dns_failed[0]]
        out.append(
            Finding(
                FindingId.COREDNS_UNAVAILABLE,
                "service/kube-system/kube-dns",
                f"cluster DNS does not answer from any node ({len(dns_failed)} node(s)), though CoreDNS "
                "looks "
                "healthy",
                (
                    f"probe from {dns_failed[0]}: {DNS_NAME}: {first.verdict.value} {first.detail} (repeat: "
                    f"{first.command})",
                ),
                "check the kube-dns ClusterIP path (kube-proxy rules for 10.96.0.10:53, NetworkPolicies in "
                "kube-system) "
                "and CoreDNS's logs: kubectl -n kube-system logs -l k8s-app=kube-dns",
            )
        )
    return out
