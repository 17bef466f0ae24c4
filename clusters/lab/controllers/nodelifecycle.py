"""Node lifecycle controller, the part that matters to a network lab: TaintNodesByCondition.

A node whose Ready condition is False gets ``node.kubernetes.io/not-ready:NoSchedule`` (Unknown or
missing: ``unreachable``), pressure and NetworkUnavailable conditions get their taints, a cordoned
node ``unschedulable``; each is removed when its cause goes. ``kubectl describe node`` then shows
what it shows on kind while the CNI is missing. No NoExecute taints, hence no taint-based eviction.
"""

from __future__ import annotations

import logging

from clusters.lab.controllers.base import NODES, Controller
from clusters.lab.controllers.client import JSON, is_not_found, meta
from clusters.lab.controllers.informer import Handlers
from clusters.lab.controllers.matching import MANAGED_TAINTS, condition_taints

log = logging.getLogger(__name__)


class NodeLifecycleController(Controller):
    name = "node-lifecycle-controller"

    def setup(self) -> None:
        self.nodes = self.informer(NODES)
        self.nodes.add_handlers(Handlers(self.enqueue, lambda _o, n: self.enqueue(n), None))

    def sync(self, key: str) -> None:
        node = self.nodes.get(key)
        if node is None:
            return
        current: list[JSON] = list((node.get("spec") or {}).get("taints") or [])
        want = {(t["key"], t["effect"]) for t in condition_taints(node)}
        kept = [
            t
            for t in current
            if not (t.get("key") in MANAGED_TAINTS and t.get("effect") == "NoSchedule")
            or (t.get("key"), t.get("effect")) in want
        ]
        have = {(t.get("key"), t.get("effect")) for t in kept}
        added = [{"key": k, "effect": e} for k, e in sorted(want - have)]
        taints = kept + added
        if taints == current:
            return
        body = {
            "metadata": {"resourceVersion": meta(node).get("resourceVersion")},
            "spec": {"taints": taints or None},
        }
        try:
            self.kube.patch(f"/api/v1/nodes/{key}", body)
        except Exception as err:
            if is_not_found(err):
                return
            raise
        log.info("node %s taints now %s", key, [f"{t['key']}:{t['effect']}" for t in taints] or "none")
