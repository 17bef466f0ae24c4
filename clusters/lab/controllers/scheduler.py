"""kube-scheduler, reduced to the filters a network lab needs and a least-pods spread.

Filters run in the real default profile's order and the first one that rejects a node is that
node's reason, so the FailedScheduling message reads like the real one:
NodeUnschedulable, TaintToleration (NoSchedule/NoExecute, including the not-ready taint),
NodeAffinity (spec.nodeSelector and required node affinity, matchFields included, which is how
DaemonSet pods are pinned), InterPodAffinity (required affinity and anti-affinity, both ways; see
podaffinity). Feasible nodes are scored like the default profile's weighted, normalized plugins:
preferred node affinity (weight 2), preferred inter-pod (anti-)affinity (weight 2) and a least-pods spread
(weight 1) standing in for the resource-balancing scores. No resources, ports, volumes or preemption.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import Counter

from clusters.lab.controllers import podaffinity
from clusters.lab.controllers.base import NAMESPACES, NODES, PODS, Controller
from clusters.lab.controllers.client import JSON, STRATEGIC_PATCH, is_conflict, is_not_found, meta, now_iso
from clusters.lab.controllers.events import NORMAL, WARNING
from clusters.lab.controllers.informer import Handlers
from clusters.lab.controllers.matching import (
    UNSCHEDULABLE,
    effective_taints,
    first_untolerated,
    pod_matches_node_selector_and_affinity,
    tolerates,
)

log = logging.getLogger(__name__)

SCHEDULER_NAME = "default-scheduler"
_UNRESOLVABLE_RETRY = 300.0
"""Like podMaxInUnschedulablePodsDuration: an unschedulable pod is retried at least this often."""


def needs_scheduling(pod: JSON) -> bool:
    spec = pod.get("spec") or {}
    return (
        not spec.get("nodeName")
        and (spec.get("schedulerName") or SCHEDULER_NAME) == SCHEDULER_NAME
        and not meta(pod).get("deletionTimestamp")
        and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    )


def filter_node(
    pod: JSON,
    node: JSON,
    placed: list[podaffinity.Placed] | None = None,
    namespace_labels: podaffinity.NamespaceLabels = lambda _ns: None,
) -> str | None:
    """None if the pod fits the node, else the real scheduler's reason string for that node.

    ``placed`` (the pods already bound, with their nodes) is needed for inter-pod affinity only.
    """
    spec = pod.get("spec") or {}
    tolerations = spec.get("tolerations") or []
    cordon = {"key": UNSCHEDULABLE, "effect": "NoSchedule"}
    if (node.get("spec") or {}).get("unschedulable") and not any(
        isinstance(t, dict) and tolerates(t, cordon) for t in tolerations
    ):
        return "node(s) were unschedulable"
    taint = first_untolerated(
        [t for t in effective_taints(node) if t.get("key") != UNSCHEDULABLE],
        tolerations,
        ("NoSchedule", "NoExecute"),
    )
    if taint is not None:
        return f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}"
    if not pod_matches_node_selector_and_affinity(spec, node):
        return "node(s) didn't match Pod's node affinity/selector"
    return podaffinity.filter_inter_pod(pod, node, placed or [], namespace_labels)


PREEMPTION_MIGHT_HELP = (podaffinity.ANTI_AFFINITY_REASON, podaffinity.EXISTING_ANTI_AFFINITY_REASON)
"""Filter failures the real scheduler marks Unschedulable (not ...AndUnresolvable): it looks for
victims to preempt; with every lab pod at the same priority it finds none."""


def unschedulable_message(reasons: list[str]) -> str:
    n = len(reasons)
    if n == 0:
        return "no nodes available to schedule pods"
    counts = Counter(reasons)
    parts = sorted(f"{c} {r}" for r, c in counts.items())
    victims = sum(c for r, c in counts.items() if r in PREEMPTION_MIGHT_HELP)
    preemption = {
        "Preemption is not helpful for scheduling": n - victims,
        "No preemption victims found for incoming pod": victims,
    }
    why = sorted(f"{c} {r}" for r, c in preemption.items() if c)
    return (
        f"0/{n} nodes are available: {', '.join(parts)}. "
        f"preemption: 0/{n} nodes are available: {', '.join(why)}."
    )


def pick_node(
    pod: JSON,
    feasible: list[JSON],
    placed: list[podaffinity.Placed],
    load: Counter[str],
    namespace_labels: podaffinity.NamespaceLabels,
) -> str:
    """The highest-scoring feasible node (ties: the first by name)."""
    names = [str(meta(n).get("name")) for n in feasible]
    node_aff = podaffinity.normalized(
        {name: podaffinity.node_affinity_score(pod, n) for name, n in zip(names, feasible, strict=True)},
        shift_min=False,
    )
    inter_pod = podaffinity.normalized(
        {
            name: podaffinity.inter_pod_score(pod, n, placed, namespace_labels)
            for name, n in zip(names, feasible, strict=True)
        },
        shift_min=True,
    )
    most = max(load.get(name, 0) for name in names)
    spread = podaffinity.normalized({name: most - load.get(name, 0) for name in names}, shift_min=True)
    return min(names, key=lambda name: (-(2 * node_aff[name] + 2 * inter_pod[name] + spread[name]), name))


class Scheduler(Controller):
    name = "default-scheduler"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._assumed: dict[str, str] = {}
        self._assumed_lock = threading.Lock()
        self.binding_supported = True

    def setup(self) -> None:
        self.pods = self.informer(PODS)
        self.nodes = self.informer(NODES)
        self.namespaces = self.informer(NAMESPACES)
        self.pods.add_handlers(Handlers(self._pod_added, self._pod_updated, self._pod_deleted))
        self.nodes.add_handlers(Handlers(self._node_changed, self._node_updated, None))

    # -- handlers --------------------------------------------------------------------------------

    def _pod_added(self, pod: JSON) -> None:
        self._observe(pod)
        if needs_scheduling(pod):
            self.enqueue(pod)
        elif (pod.get("spec") or {}).get("nodeName"):
            # AssignedPodAdd: a new pod may satisfy a pending pod's required affinity.
            self._retry_pending(affine_only=True)

    def _pod_updated(self, old: JSON, new: JSON) -> None:
        self._observe(new)
        if not needs_scheduling(new):
            return
        # A status-only change (our own PodScheduled=False) must not cause a retry loop.
        resync = meta(old).get("resourceVersion") == meta(new).get("resourceVersion")
        if resync or old.get("spec") != new.get("spec") or meta(old).get("labels") != meta(new).get("labels"):
            self.enqueue(new)

    def _pod_deleted(self, pod: JSON) -> None:
        with self._assumed_lock:
            self._assumed.pop(str(meta(pod).get("uid")), None)
        if (pod.get("spec") or {}).get("nodeName"):
            # AssignedPodDelete: the freed domain may now admit a pod held back by anti-affinity.
            self._retry_pending(affine_only=True)

    def _observe(self, pod: JSON) -> None:
        if (pod.get("spec") or {}).get("nodeName"):
            with self._assumed_lock:
                self._assumed.pop(str(meta(pod).get("uid")), None)

    def _node_changed(self, node: JSON) -> None:
        self._retry_pending()

    def _node_updated(self, old: JSON, new: JSON) -> None:
        def view(n: JSON) -> object:
            return (
                meta(n).get("labels"),
                (n.get("spec") or {}).get("taints"),
                (n.get("spec") or {}).get("unschedulable"),
                effective_taints(n),
            )

        if view(old) != view(new):
            self._retry_pending()

    def _retry_pending(self, affine_only: bool = False) -> None:
        for pod in self.pods.objects():
            if needs_scheduling(pod) and (not affine_only or podaffinity.has_pod_affinity(pod)):
                self.enqueue(pod)

    # -- scheduling ------------------------------------------------------------------------------

    def sync(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or not needs_scheduling(pod):
            return
        uid = str(meta(pod).get("uid"))
        with self._assumed_lock:
            if uid in self._assumed:
                return
        nodes = sorted(self.nodes.objects(), key=lambda n: str(meta(n).get("name")))
        placed = self._placed(nodes, uid)
        feasible: list[JSON] = []
        reasons: list[str] = []
        for node in nodes:
            reason = filter_node(pod, node, placed, self._namespace_labels)
            if reason is None:
                feasible.append(node)
            else:
                reasons.append(reason)
        if not feasible:
            self._unschedulable(pod, unschedulable_message(reasons))
            return
        self._bind(pod, pick_node(pod, feasible, placed, self._pods_per_node(), self._namespace_labels))

    def _namespace_labels(self, name: str) -> dict[str, str] | None:
        ns = self.namespaces.get(name)
        return None if ns is None else dict(meta(ns).get("labels") or {})

    def _placed(self, nodes: list[JSON], skip_uid: str) -> list[podaffinity.Placed]:
        """Running or pending pods with the node they are bound or assumed to."""
        by_name = {str(meta(n).get("name")): n for n in nodes}
        with self._assumed_lock:
            assumed = dict(self._assumed)
        placed = []
        for p in self.pods.objects():
            uid = str(meta(p).get("uid"))
            node = (p.get("spec") or {}).get("nodeName") or assumed.get(uid)
            if uid == skip_uid or not node or node not in by_name:
                continue
            if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            placed.append(podaffinity.Placed(p, by_name[node]))
        return placed

    def _pods_per_node(self) -> Counter[str]:
        load: Counter[str] = Counter()
        for p in self.pods.objects():
            node = (p.get("spec") or {}).get("nodeName")
            if node and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                load[node] += 1
        with self._assumed_lock:
            for node in self._assumed.values():
                load[node] += 1
        return load

    def _bind(self, pod: JSON, node: str) -> None:
        m = meta(pod)
        ns, name, uid = m.get("namespace"), m.get("name"), str(m.get("uid"))
        with self._assumed_lock:
            self._assumed[uid] = node
        try:
            if self.binding_supported:
                try:
                    binding = {
                        "apiVersion": "v1",
                        "kind": "Binding",
                        "metadata": {"name": name, "namespace": ns, "uid": uid},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
                    }
                    self.kube.create(f"/api/v1/namespaces/{ns}/pods/{name}/binding", binding)
                except Exception as err:
                    if (
                        getattr(err, "status", None) not in (404, 405)
                        or self.pods.get(f"{ns}/{name}") is None
                    ):
                        raise
                    log.warning(
                        "API server has no pods/binding subresource; binding by patching spec.nodeName"
                    )
                    self.binding_supported = False
            if not self.binding_supported:
                self.kube.patch(f"/api/v1/namespaces/{ns}/pods/{name}", {"spec": {"nodeName": node}})
        except Exception as err:
            with self._assumed_lock:
                self._assumed.pop(uid, None)
            if is_conflict(err) or is_not_found(err):
                log.debug("binding %s/%s: %s", ns, name, err)
                return
            raise
        log.info("bound %s/%s to %s", ns, name, node)
        self.recorder.event(pod, NORMAL, "Scheduled", f"Successfully assigned {ns}/{name} to {node}")

    def _unschedulable(self, pod: JSON, message: str) -> None:
        m = meta(pod)
        ns, name = m.get("namespace"), m.get("name")
        log.info("cannot schedule %s/%s: %s", ns, name, message)
        self.recorder.event(pod, WARNING, "FailedScheduling", message)
        conditions = (pod.get("status") or {}).get("conditions") or []
        current = next((c for c in conditions if c.get("type") == "PodScheduled"), None)
        if not (
            current
            and current.get("status") == "False"
            and current.get("reason") == "Unschedulable"
            and current.get("message") == message
        ):
            cond = {
                "type": "PodScheduled",
                "status": "False",
                "lastProbeTime": None,
                "lastTransitionTime": (
                    current.get("lastTransitionTime")
                    if current and current.get("status") == "False"
                    else now_iso()
                ),
                "reason": "Unschedulable",
                "message": message,
            }
            path = f"/api/v1/namespaces/{ns}/pods/{name}/status"
            try:
                self.kube.patch(path, {"status": {"conditions": [cond]}}, STRATEGIC_PATCH)
            except Exception as err:
                if is_not_found(err):
                    return
                if getattr(err, "status", None) not in (415, 400):
                    raise
                # No strategic merge on this server: write the whole conditions list instead.
                fresh = copy.deepcopy(pod)
                others = [c for c in conditions if c.get("type") != "PodScheduled"]
                fresh.setdefault("status", {})["conditions"] = [*others, cond]
                self.kube.update(path, fresh)
        self.queue.add_after(f"{ns}/{name}", _UNRESOLVABLE_RETRY)
