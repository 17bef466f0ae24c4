"""Data-plane faults between nodes: a pod-traffic partition between two nodes, an MTU mismatch.

Rules go into the nodes' own iptables (``docker exec <node> iptables`` on kind, the node shell in
the lab), inserted with ``-I`` and removed with ``-D`` of the very same spec, each tagged with a
``knetcheck-fault-<run>`` comment. Never ``iptables -F``: it would wipe kube-proxy's and the
CNI's rules (reference §3.4).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from clusters.handle import Cluster
from faults import context
from faults.actions import _support as s
from faults.originals import FaultRecord

__all__ = ["heal_partition", "partition_nodes", "restore_node_mtu", "set_node_mtu"]

log = logging.getLogger(__name__)

COMMENT_PREFIX = "knetcheck-fault-"
MTU = re.compile(r"\bmtu (\d+)\b")


def _node_facts(cluster: Cluster, node: str) -> tuple[str, list[str]]:
    """The node's InternalIP and pod CIDRs."""
    n = s.core(cluster).read_node(node, _request_timeout=s.API_TIMEOUT)
    ip = next((a.address for a in n.status.addresses or [] if a.type == "InternalIP"), None)
    if not ip:
        raise ValueError(f"node {node} has no InternalIP")
    cidrs = list(n.spec.pod_cidrs or ([n.spec.pod_cidr] if n.spec.pod_cidr else []))
    return str(ip), [str(c) for c in cidrs]


def _overlay_matches(port: str) -> list[str]:
    """iptables match arguments for a recipe's ``overlay_ports`` entry (``udp/8472``, ``ipip``)."""
    if port == "ipip":
        return ["-p", "4"]
    proto, _, number = port.partition("/")
    return ["-p", proto, "--dport", number] if number else ["-p", proto]


def partition_rules(
    peer_ip: str, peer_cidrs: list[str], overlay_ports: tuple[str, ...], comment: str
) -> list[list[str]]:
    """Rules (chain + match, without -I/-D) that drop this node's pod traffic with its peer: pod
    CIDR traffic forwarded either way, and the overlay's own packets between the node IPs."""
    tag = ["-m", "comment", "--comment", comment, "-j", "DROP"]
    rules: list[list[str]] = []
    for cidr in peer_cidrs:
        rules += [["FORWARD", "-s", cidr, *tag], ["FORWARD", "-d", cidr, *tag],
                  ["OUTPUT", "-d", cidr, *tag], ["INPUT", "-s", cidr, *tag]]
    for port in overlay_ports:
        match = _overlay_matches(port)
        rules += [["INPUT", "-s", peer_ip, *match, *tag], ["OUTPUT", "-d", peer_ip, *match, *tag]]
    return rules


def partition_nodes(
    node_a: str,
    node_b: str,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Cut pod traffic between ``node_a`` and ``node_b`` (both ways) with iptables DROP rules on
    each node: traffic to/from the peer's pod CIDR, and the CNI's overlay ports between the node
    IPs (the recipe's ``overlay_ports``). The nodes stay Ready: the control plane still reaches
    them. Revert: :func:`heal_partition`."""
    cluster = context.cluster_for(configuration)
    node_a, node_b = s.resolve_node(cluster, node_a), s.resolve_node(cluster, node_b)
    if node_a == node_b:
        raise ValueError(f"partition_nodes needs two different nodes, got {node_a} twice")
    comment = f"{COMMENT_PREFIX}{context.run_id()}"
    ip_a, cidrs_a = _node_facts(cluster, node_a)
    ip_b, cidrs_b = _node_facts(cluster, node_b)
    ports = cluster.cni.overlay_ports
    plan = {node_a: partition_rules(ip_b, cidrs_b, ports, comment),
            node_b: partition_rules(ip_a, cidrs_a, ports, comment)}
    rec = s.record(cluster, "node-partition", _pair(node_a, node_b), heal_partition,
                   {"node_a": node_a, "node_b": node_b}, lambda: {"rules": plan})
    saved: dict[str, list[list[str]]] = dict(rec.original["rules"])
    for node, rules in saved.items():
        for rule in rules:
            if not s.node_try(cluster, node, ["iptables", "-C", *rule]):
                s.node_run(cluster, node, ["iptables", "-I", *rule])
    return {"nodes": [node_a, node_b], "rules": sum(len(r) for r in saved.values())}


def _pair(node_a: str, node_b: str) -> str:
    return "nodes/" + ",".join(sorted((node_a, node_b)))


def heal_partition(
    node_a: str,
    node_b: str,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Delete exactly the rules :func:`partition_nodes` inserted (``iptables -D``, repeated while
    a copy remains)."""
    cluster = context.cluster_for(configuration)
    node_a, node_b = s.resolve_node(cluster, node_a), s.resolve_node(cluster, node_b)

    def put_back(rec: FaultRecord) -> s.Result:
        removed = 0
        for node, rules in dict(rec.original["rules"]).items():
            for rule in rules:
                while s.node_try(cluster, node, ["iptables", "-D", *rule]):
                    removed += 1
        return {"removed": removed}

    return s.restore(cluster, "node-partition", _pair(node_a, node_b), put_back)


def _mtu(cluster: Cluster, node: str, interface: str) -> int:
    out = s.node_run(cluster, node, ["ip", "-o", "link", "show", "dev", interface])
    found = MTU.search(out)
    if not found:
        raise ValueError(f"node {node}: no mtu in `ip link show dev {interface}`: {out.strip()}")
    return int(found.group(1))


def set_node_mtu(
    node: str,
    mtu: int = 1280,
    interface: str = "eth0",
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``ip link set dev eth0 mtu 1280`` on ``node``: its path MTU is now below the pods' (1500 on
    most CNIs), so small exchanges work and large ones stall. Revert: :func:`restore_node_mtu`."""
    cluster = context.cluster_for(configuration)
    node = s.resolve_node(cluster, node)
    rec = s.record(cluster, "node-mtu", f"node/{node}:{interface}", restore_node_mtu,
                   {"node": node, "interface": interface}, lambda: {"mtu": _mtu(cluster, node, interface)})
    s.node_run(cluster, node, ["ip", "link", "set", "dev", interface, "mtu", str(int(mtu))])
    return {"node": node, "interface": interface, "mtu": int(mtu), "was": rec.original["mtu"]}


def restore_node_mtu(
    node: str,
    interface: str = "eth0",
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Set the interface MTU back to the value :func:`set_node_mtu` saved."""
    cluster = context.cluster_for(configuration)
    node = s.resolve_node(cluster, node)

    def put_back(rec: FaultRecord) -> s.Result:
        mtu = int(rec.original["mtu"])
        s.node_run(cluster, node, ["ip", "link", "set", "dev", interface, "mtu", str(mtu)])
        return {"node": node, "interface": interface, "mtu": mtu}

    return s.restore(cluster, "node-mtu", f"node/{node}:{interface}", put_back)
