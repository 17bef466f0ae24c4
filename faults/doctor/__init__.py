"""The doctor: reads a live cluster once and names what is broken, with evidence and the runbook fix.

It automates the troubleshooting runbooks (DESIGN §7): a snapshot of the API (node conditions, pod
states, events, logs, ConfigMaps, endpoints), node files through the node channel when there is
one, and — optionally — the pattern of failing probes between pods. Rules are pure functions of
that input (:func:`evaluate`), so each is unit-tested with fixture snapshots; a healthy cluster
yields nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from clusters.handle import Cluster
from faults.doctor import cni, dns, ingress, kubeproxy, nodes
from faults.doctor.ingress import EndDate, openssl_enddate
from faults.doctor.snapshot import Facts, name_of, read_nodes, take
from faults.findings import Finding, FindingId

__all__ = ["diagnose", "evaluate"]

log = logging.getLogger(__name__)

_ORDER = list(FindingId)


def evaluate(facts: Facts, enddate: EndDate = openssl_enddate) -> list[Finding]:
    """Every static rule over one snapshot, most fundamental first (CNI before DNS before ingress)."""
    no_cni = dns.no_cni_pending(facts)
    found: list[Finding] = []
    found += cni.config_rules(facts)
    found += cni.binary_rules(facts)
    found += cni.agent_rules(facts, no_cni_pending=no_cni)
    found += cni.exhaustion_rules(facts)
    found += dns.rules(facts)
    found += kubeproxy.rules(facts)
    found += ingress.rules(facts, enddate)
    found += nodes.route_rule(facts)
    found += nodes.unreachable_rule(facts)
    found += nodes.mtu_rule(facts)
    return _ordered(found)


def _ordered(found: Sequence[Finding]) -> list[Finding]:
    unique = list(dict.fromkeys(found))
    return sorted(unique, key=lambda f: (_ORDER.index(f.id), f.subject))


def diagnose(cluster: Cluster, *, probes: bool = True, timeout: float = 30) -> list[Finding]:
    """Diagnose ``cluster``: static rules always, probe-pattern rules when ``probes`` (creates and
    deletes a namespace ``kc-<run-id>-doctor``; ``timeout`` bounds the wait for its pods)."""
    snapshot = take(cluster)
    sick = [name_of(n) for n in snapshot.nodes if cni.network_not_ready(n) is not None]
    reads = read_nodes(
        cluster, [name_of(n) for n in snapshot.nodes], timeout=min(timeout, 15.0), journal_for=sick
    )
    facts = Facts(snapshot, reads, cluster.cni)
    if not facts.node_reads.available:
        log.info(
            "doctor: %s; node files are not read, rules use API evidence only",
            facts.node_reads.why_unavailable,
        )
    found = evaluate(facts)
    if probes:
        found += nodes.probe_findings(cluster, facts, found, timeout)
    return _ordered(found)
