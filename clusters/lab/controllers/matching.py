"""Label selectors, node affinity and taint/toleration matching, with the real semantics.

Shared by the scheduler and the DaemonSet controller, which must agree on where a pod may run.
"""

from __future__ import annotations

from typing import Any

from clusters.lab.controllers.client import JSON, meta

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"


def labels_match(selector: JSON | None, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector; an empty selector matches everything, a missing one nothing."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def selector_string(selector: JSON) -> str:
    """The selector in ``kubectl get -l`` syntax (status.selector of the scale subresource)."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        if op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            parts.append(f"{key} {op.lower()} ({','.join(values)})")
    return ",".join(parts)


def _requirement(expr: JSON, value: str | None) -> bool:
    op, values = expr.get("operator", ""), [str(v) for v in expr.get("values") or []]
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            a, b = int(value), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def node_selector_term_matches(term: JSON, node: JSON) -> bool:
    """Expressions and fields AND together; a term with neither matches no node."""
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False
    labels = meta(node).get("labels") or {}
    if not all(_requirement(e, labels.get(e.get("key", ""))) for e in exprs):
        return False
    name = meta(node).get("name")
    return all(_requirement(f, name if f.get("key") == "metadata.name" else None) for f in fields)


def pod_matches_node_selector_and_affinity(pod_spec: JSON, node: JSON) -> bool:
    labels = meta(node).get("labels") or {}
    for k, v in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if required is None:
        return True
    terms = required.get("nodeSelectorTerms") or []
    return any(node_selector_term_matches(t, node) for t in terms)


def tolerates(toleration: JSON, taint: JSON) -> bool:
    """v1.Toleration.ToleratesTaint."""
    if toleration.get("effect") and toleration.get("effect") != taint.get("effect"):
        return False
    if toleration.get("key") and toleration.get("key") != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    return op == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def node_ready_status(node: JSON) -> str:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status", "Unknown"))
    return "Unknown"


_PRESSURE = {
    "MemoryPressure": "node.kubernetes.io/memory-pressure",
    "DiskPressure": "node.kubernetes.io/disk-pressure",
    "PIDPressure": "node.kubernetes.io/pid-pressure",
    "NetworkUnavailable": "node.kubernetes.io/network-unavailable",
}
MANAGED_TAINTS = frozenset({NOT_READY, UNREACHABLE, UNSCHEDULABLE, *_PRESSURE.values()})
"""The NoSchedule taints the node lifecycle controller owns (TaintNodesByCondition)."""


def condition_taints(node: JSON) -> list[JSON]:
    """The NoSchedule taints the real node lifecycle controller derives from conditions and cordon."""
    keys: list[str] = []
    ready = node_ready_status(node)
    if ready == "False":
        keys.append(NOT_READY)
    elif ready == "Unknown":
        keys.append(UNREACHABLE)
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") in _PRESSURE and cond.get("status") == "True":
            keys.append(_PRESSURE[cond["type"]])
    if (node.get("spec") or {}).get("unschedulable"):
        keys.append(UNSCHEDULABLE)
    return [{"key": k, "effect": "NoSchedule"} for k in keys]


def effective_taints(node: JSON) -> list[JSON]:
    """The node's taints plus those the node lifecycle controller derives from its conditions.

    The lab's node lifecycle controller writes these taints onto the Node; adding them here too
    means a decision made before it has caught up is still the one a real cluster would make:
    a node that is not Ready is seen through ``node.kubernetes.io/not-ready:NoSchedule``
    (``unreachable`` when the status is Unknown or missing), a cordoned one through
    ``node.kubernetes.io/unschedulable:NoSchedule``.
    """
    taints: list[JSON] = [dict(t) for t in (node.get("spec") or {}).get("taints") or []]
    have = {(t.get("key"), t.get("effect")) for t in taints}
    return taints + [t for t in condition_taints(node) if (t["key"], t["effect"]) not in have]


def first_untolerated(taints: list[JSON], tolerations: list[Any], effects: tuple[str, ...]) -> JSON | None:
    for taint in taints:
        if taint.get("effect") not in effects:
            continue
        if not any(isinstance(t, dict) and tolerates(t, taint) for t in tolerations):
            return taint
    return None
