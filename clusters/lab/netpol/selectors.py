"""Label selector matching (metav1.LabelSelector), implemented here from the API's definition.

matchLabels and every matchExpressions requirement are ANDed; the empty selector matches
everything. ``NotIn`` and ``DoesNotExist`` match objects that lack the key, as in the API.
"""

from __future__ import annotations

from clusters.lab.netpol.model import Labels, LabelSelector, Operator, Requirement


def _requirement(req: Requirement, labels: dict[str, str]) -> bool:
    present = req.key in labels
    if req.operator is Operator.EXISTS:
        return present
    if req.operator is Operator.DOES_NOT_EXIST:
        return not present
    if req.operator is Operator.IN:
        return present and labels[req.key] in req.values
    return not present or labels[req.key] not in req.values  # NotIn


def matches(selector: LabelSelector, labels: Labels) -> bool:
    have = dict(labels)
    if any(have.get(k) != v for k, v in selector.match_labels):
        return False
    return all(_requirement(r, have) for r in selector.match_expressions)
