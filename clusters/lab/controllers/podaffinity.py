"""Inter-pod affinity and anti-affinity, and preferred node affinity, as kube-scheduler applies them.

The lab needs them because real manifests rely on them for placement that network checks then
assume: kubeadm's CoreDNS prefers one replica per node (preferred pod anti-affinity on
``kubernetes.io/hostname``), so losing one node must not take DNS down; ingress controllers and
test workloads use required (anti-)affinity to pin pairs together or apart.

Semantics kept from the InterPodAffinity and NodeAffinity plugins:

- a term selects pods by label selector in its namespaces (``namespaces`` or ``namespaceSelector``;
  neither means the incoming pod's namespace; an empty ``namespaceSelector`` means all);
- a topology domain is the value of ``topologyKey`` on a node; a node without the key is in no
  domain, so it satisfies no affinity term and violates no anti-affinity term;
- required affinity needs, in the node's domain of every term, a pod matching all the terms; with
  no such pod anywhere it is still satisfied when the incoming pod matches its own terms (the
  first pod of a group);
- existing pods' required anti-affinity terms repel an incoming pod they match;
- preferred terms score a node by weight times matching pods in its domain (anti-affinity negative);
  preferred node affinity by the weights of the terms the node matches.

Not modelled: the deprecated ``hardPodAffinityWeight``, existing pods' *preferred* terms, and
``matchLabelKeys``/``mismatchLabelKeys``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from clusters.lab.controllers.client import JSON, meta
from clusters.lab.controllers.matching import labels_match, node_selector_term_matches

AFFINITY_REASON = "node(s) didn't match pod affinity rules"
ANTI_AFFINITY_REASON = "node(s) didn't match pod anti-affinity rules"
EXISTING_ANTI_AFFINITY_REASON = "node(s) didn't satisfy existing pods anti-affinity rules"

NamespaceLabels = Callable[[str], dict[str, str] | None]
"""Labels of a namespace by name (None if unknown), for ``namespaceSelector``."""


@dataclass(frozen=True)
class Placed:
    """An existing pod and the node it is bound (or assumed) to."""

    pod: JSON
    node: JSON


def _affinity(pod: JSON, kind: str) -> JSON:
    return ((pod.get("spec") or {}).get("affinity") or {}).get(kind) or {}


def _required(pod: JSON, kind: str) -> list[JSON]:
    return list(_affinity(pod, kind).get("requiredDuringSchedulingIgnoredDuringExecution") or [])


def _preferred(pod: JSON, kind: str) -> list[JSON]:
    return list(_affinity(pod, kind).get("preferredDuringSchedulingIgnoredDuringExecution") or [])


def has_pod_affinity(pod: JSON) -> bool:
    """Whether placing or removing other pods can change where ``pod`` fits."""
    return bool(_required(pod, "podAffinity") or _required(pod, "podAntiAffinity"))


def _domain(node: JSON, key: str) -> str | None:
    value = (meta(node).get("labels") or {}).get(key)
    return None if value is None else str(value)


def term_selects(term: JSON, owner: JSON, pod: JSON, namespace_labels: NamespaceLabels) -> bool:
    """Whether ``term`` (declared on ``owner``) selects ``pod``."""
    ns = str(meta(pod).get("namespace") or "")
    names = [str(n) for n in term.get("namespaces") or []]
    ns_selector = term.get("namespaceSelector")
    in_scope = ns in names
    if ns_selector is not None and not in_scope:
        labels = namespace_labels(ns)
        in_scope = labels is not None and labels_match(ns_selector, labels)
    if not names and ns_selector is None:
        in_scope = ns == str(meta(owner).get("namespace") or "")
    return in_scope and labels_match(term.get("labelSelector"), meta(pod).get("labels") or {})


def _same_domain(term: JSON, a: JSON, b: JSON) -> bool:
    key = str(term.get("topologyKey") or "")
    da = _domain(a, key)
    return da is not None and da == _domain(b, key)


def filter_inter_pod(
    pod: JSON, node: JSON, placed: Iterable[Placed], namespace_labels: NamespaceLabels
) -> str | None:
    """None if ``node`` passes the InterPodAffinity filter for ``pod``, else the real reason.

    The checks and their order are the plugin's: the pod's required affinity, its required
    anti-affinity, then existing pods' required anti-affinity.
    """
    others = list(placed)
    if not _satisfies_affinity(pod, node, others, namespace_labels):
        return AFFINITY_REASON
    for term in _required(pod, "podAntiAffinity"):
        if any(
            term_selects(term, pod, o.pod, namespace_labels) and _same_domain(term, o.node, node)
            for o in others
        ):
            return ANTI_AFFINITY_REASON
    for existing in others:
        for term in _required(existing.pod, "podAntiAffinity"):
            if term_selects(term, existing.pod, pod, namespace_labels) and _same_domain(
                term, existing.node, node
            ):
                return EXISTING_ANTI_AFFINITY_REASON
    return None


def _satisfies_affinity(
    pod: JSON, node: JSON, others: list[Placed], namespace_labels: NamespaceLabels
) -> bool:
    """satisfyPodAffinity: the node carries every term's topology key, and each term's domain holds
    a pod matching *all* terms; failing that, the pod may be the first of a self-affine group."""
    terms = _required(pod, "podAffinity")
    if not terms:
        return True
    keys = [str(t.get("topologyKey") or "") for t in terms]
    if any(_domain(node, key) is None for key in keys):
        return False
    group = [o for o in others if all(term_selects(t, pod, o.pod, namespace_labels) for t in terms)]
    if all(any(_same_domain(t, o.node, node) for o in group) for t in terms):
        return True
    return not group and all(term_selects(t, pod, pod, namespace_labels) for t in terms)


def inter_pod_score(
    pod: JSON, node: JSON, placed: Iterable[Placed], namespace_labels: NamespaceLabels
) -> int:
    """Σ weight times matching pods in the node's domain; anti-affinity terms count negative."""
    others = list(placed)
    score = 0
    for kind, sign in (("podAffinity", 1), ("podAntiAffinity", -1)):
        for weighted in _preferred(pod, kind):
            term = weighted.get("podAffinityTerm") or {}
            weight = int(weighted.get("weight") or 0)
            hits = sum(
                1
                for o in others
                if term_selects(term, pod, o.pod, namespace_labels) and _same_domain(term, o.node, node)
            )
            score += sign * weight * hits
    return score


def node_affinity_score(pod: JSON, node: JSON) -> int:
    """Sum of the weights of the preferred node-affinity terms ``node`` matches."""
    return sum(
        int(p.get("weight") or 0)
        for p in _preferred(pod, "nodeAffinity")
        if node_selector_term_matches(p.get("preference") or {}, node)
    )


def normalized(raw: dict[str, int], *, shift_min: bool) -> dict[str, float]:
    """Scores mapped onto 0..100 the way the plugins' NormalizeScore does.

    InterPodAffinity maps [min, max] onto [0, 100] (``shift_min``); NodeAffinity divides by the
    maximum. All-equal scores give every node 0 (no preference).
    """
    if not raw:
        return {}
    low = min(raw.values()) if shift_min else 0
    high = max(raw.values())
    if high == low:
        return dict.fromkeys(raw, 0.0)
    return {name: 100.0 * (value - low) / (high - low) for name, value in raw.items()}
