"""DaemonSet controller: one pod per eligible node, pinned the way the real controller pins it
since 1.12 — required node affinity ``matchFields metadata.name In [node]`` — and bound by the
scheduler; default tolerations added as the real controller adds them; RollingUpdate replaces
old-template pods at most ``maxUnavailable`` (default 1) nodes at a time.

Pods carry ``controller-revision-hash`` (a hash of the template) and ``pod-template-generation``;
the lab keeps no ControllerRevision objects.
"""

from __future__ import annotations

import copy
import logging

from clusters.lab.controllers.base import DAEMONSETS, NODES, PODS, Controller, Expectations
from clusters.lab.controllers.client import (
    JSON,
    controller_ref,
    is_not_found,
    is_terminating_namespace,
    key_of,
    meta,
    owner_ref,
)
from clusters.lab.controllers.deployment import resolve, template_hash
from clusters.lab.controllers.events import NORMAL, WARNING
from clusters.lab.controllers.informer import Handlers
from clusters.lab.controllers.matching import (
    effective_taints,
    first_untolerated,
    pod_matches_node_selector_and_affinity,
)
from clusters.lab.controllers.pods import available_in, create_pod, is_active, is_ready

log = logging.getLogger(__name__)

REVISION_LABEL = "controller-revision-hash"
GENERATION_LABEL = "pod-template-generation"


def default_tolerations(spec: JSON) -> list[JSON]:
    """AddOrUpdateDaemonPodTolerations."""
    wanted = [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
    if spec.get("hostNetwork"):
        wanted.append(("node.kubernetes.io/network-unavailable", "NoSchedule"))
    tolerations = [dict(t) for t in spec.get("tolerations") or []]
    for key, effect in wanted:
        tol = {"key": key, "operator": "Exists", "effect": effect}
        if not any(
            t.get("key") == key and t.get("effect") == effect and t.get("operator") == "Exists"
            for t in tolerations
        ):
            tolerations.append(tol)
    return tolerations


def pin_to_node(spec: JSON, node: str) -> None:
    """ReplaceDaemonSetPodNodeNameNodeAffinity: every required term gets matchFields on the node name."""
    field = [{"key": "metadata.name", "operator": "In", "values": [node]}]
    affinity = spec.setdefault("affinity", {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = [dict(t) for t in required.get("nodeSelectorTerms") or []]
    if not terms:
        terms = [{}]
    for t in terms:
        t["matchFields"] = field
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": terms}


def target_node(pod: JSON) -> str | None:
    """util.GetTargetNodeName: the bound node, or the node the affinity pins it to."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in required.get("nodeSelectorTerms") or []:
        for f in term.get("matchFields") or []:
            if (
                f.get("key") == "metadata.name"
                and f.get("operator") == "In"
                and len(f.get("values") or []) == 1
            ):
                return str(f["values"][0])
    return None


class DaemonSetController(Controller):
    name = "daemonset-controller"

    def setup(self) -> None:
        self.expectations = Expectations()
        self.sets = self.informer(DAEMONSETS)
        self.pods = self.informer(PODS)
        self.nodes = self.informer(NODES)
        self.sets.add_handlers(Handlers(self.enqueue, lambda _o, n: self.enqueue(n), self._set_deleted))
        self.pods.add_handlers(Handlers(self._pod_added, self._pod_updated, self._pod_deleted))
        self.nodes.add_handlers(Handlers(self._all, lambda o, n: self._node_updated(o, n), self._all))

    def _set_deleted(self, ds: JSON) -> None:
        self.expectations.forget(key_of(ds))

    def _all(self, _node: JSON) -> None:
        for ds in self.sets.objects():
            self.enqueue(ds)

    def _node_updated(self, old: JSON, new: JSON) -> None:
        def view(n: JSON) -> object:
            return meta(n).get("labels"), effective_taints(n)

        if view(old) != view(new):
            self._all(new)

    def _owner_key(self, pod: JSON) -> str | None:
        ref = controller_ref(pod)
        if ref and ref.get("kind") == "DaemonSet":
            return f"{meta(pod).get('namespace')}/{ref.get('name')}"
        return None

    def _pod_added(self, pod: JSON) -> None:
        key = self._owner_key(pod)
        if key:
            self.expectations.creation_observed(key)
            self.queue.add(key)

    def _pod_updated(self, _old: JSON, new: JSON) -> None:
        key = self._owner_key(new)
        if key:
            if meta(new).get("deletionTimestamp"):
                self.expectations.deletion_observed(key, key_of(new))
            self.queue.add(key)

    def _pod_deleted(self, pod: JSON) -> None:
        key = self._owner_key(pod)
        if key:
            self.expectations.deletion_observed(key, key_of(pod))
            self.queue.add(key)

    # -- sync ------------------------------------------------------------------------------------

    def new_pod(self, ds: JSON, node: str, phash: str) -> JSON:
        template = (ds.get("spec") or {}).get("template") or {}
        tmeta = template.get("metadata") or {}
        spec = copy.deepcopy(template.get("spec") or {})
        spec["tolerations"] = default_tolerations(spec)
        pin_to_node(spec, node)
        labels = dict(tmeta.get("labels") or {})
        labels[REVISION_LABEL] = phash
        labels[GENERATION_LABEL] = str(meta(ds).get("generation", 1))
        pod_meta: JSON = {
            "namespace": meta(ds).get("namespace"),
            "labels": labels,
            "ownerReferences": [owner_ref(ds)],
        }
        if tmeta.get("annotations"):
            pod_meta["annotations"] = dict(tmeta["annotations"])
        return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": spec}

    def should_run(self, ds: JSON, node: JSON, phash: str) -> tuple[bool, bool]:
        """NodeShouldRunDaemonPod → (should run, should continue running)."""
        pod = self.new_pod(ds, str(meta(node).get("name")), phash)
        spec = pod["spec"]
        if not pod_matches_node_selector_and_affinity(spec, node):
            return False, False
        taints = effective_taints(node)
        if first_untolerated(taints, spec["tolerations"], ("NoExecute",)) is not None:
            return False, False
        return first_untolerated(taints, spec["tolerations"], ("NoSchedule",)) is None, True

    def sync(self, key: str) -> None:
        ds = self.sets.get(key)
        if ds is None:
            self.expectations.forget(key)
            return
        phash = template_hash(
            (ds.get("spec") or {}).get("template") or {}, (ds.get("status") or {}).get("collisionCount")
        )
        uid = meta(ds).get("uid")
        ns = str(meta(ds).get("namespace"))
        owned = [p for p in self.pods.objects(ns) if (controller_ref(p) or {}).get("uid") == uid]
        by_node: dict[str, list[JSON]] = {}
        terminating_on: set[str] = set()
        for p in owned:
            if meta(p).get("deletionTimestamp"):
                terminating_on.add(target_node(p) or "")
            else:
                by_node.setdefault(target_node(p) or "", []).append(p)
        nodes = sorted(self.nodes.objects(), key=lambda n: str(meta(n).get("name")))
        plan = {str(meta(n).get("name")): self.should_run(ds, n, phash) for n in nodes}
        if self.expectations.satisfied(key) and not meta(ds).get("deletionTimestamp"):
            self._manage(key, ds, phash, plan, by_node, terminating_on)
        self._update_status(key, ds, phash, plan, by_node)

    def _manage(
        self,
        key: str,
        ds: JSON,
        phash: str,
        plan: dict[str, tuple[bool, bool]],
        by_node: dict[str, list[JSON]],
        terminating_on: set[str],
    ) -> None:
        create: list[str] = []
        delete: list[JSON] = []
        for node, (run, keep) in plan.items():
            pods = sorted(by_node.get(node, []), key=lambda p: str(meta(p).get("creationTimestamp", "")))
            if run and not pods and node not in terminating_on:
                # Like podsShouldBeOnNode (no surge): a node whose daemon pod is still terminating
                # gets its new pod once the old one is gone, so two never run side by side.
                create.append(node)
            elif keep:
                failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
                delete += failed
                healthy = [p for p in pods if p not in failed]
                delete += healthy[1:]
            else:
                delete += pods
        for node, pods in by_node.items():
            if node not in plan:
                delete += pods
        if not create and not delete:
            delete += self._rolling_victims(ds, phash, plan, by_node)
        ns = str(meta(ds).get("namespace"))
        self.expectations.expect(key, adds=len(create), dels={key_of(p) for p in delete})
        for i, node in enumerate(create):
            try:
                created = create_pod(self.kube, ns, self.new_pod(ds, node, phash), f"{meta(ds).get('name')}-")
            except Exception as err:
                self.expectations.expect(key, adds=-(len(create) - i))
                if is_terminating_namespace(err):
                    return
                self.recorder.event(ds, WARNING, "FailedCreate", f"Error creating: {err}")
                raise
            self.recorder.event(ds, NORMAL, "SuccessfulCreate", f"Created pod: {meta(created).get('name')}")
        for pod in delete:
            name = meta(pod).get("name")
            try:
                self.kube.delete(f"/api/v1/namespaces/{ns}/pods/{name}")
            except Exception as err:
                self.expectations.deletion_observed(key, key_of(pod))
                if not is_not_found(err):
                    raise
                continue
            self.recorder.event(ds, NORMAL, "SuccessfulDelete", f"Deleted pod: {name}")

    def _rolling_victims(
        self, ds: JSON, phash: str, plan: dict[str, tuple[bool, bool]], by_node: dict[str, list[JSON]]
    ) -> list[JSON]:
        strategy = (ds.get("spec") or {}).get("updateStrategy") or {}
        if strategy.get("type") == "OnDelete":
            return []
        desired = sum(1 for run, _ in plan.values() if run)
        max_unavailable = (
            resolve((strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1), desired, round_up=True)
            or 1
        )
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        unavailable = 0
        old: list[JSON] = []
        for node, (run, _) in plan.items():
            if not run:
                continue
            pods = by_node.get(node, [])
            if not pods or any(available_in(p, min_ready) != 0 for p in pods):
                unavailable += 1
            old += [p for p in pods if (meta(p).get("labels") or {}).get(REVISION_LABEL) != phash]
        victims: list[JSON] = []
        for pod in sorted(old, key=lambda p: str(target_node(p))):
            if available_in(pod, min_ready) != 0:
                victims.append(pod)  # an unavailable old pod costs nothing to replace
            elif unavailable < max_unavailable:
                victims.append(pod)
                unavailable += 1
        return victims

    def _update_status(
        self,
        key: str,
        ds: JSON,
        phash: str,
        plan: dict[str, tuple[bool, bool]],
        by_node: dict[str, list[JSON]],
    ) -> None:
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        desired = current = misscheduled = ready = available = updated = 0
        soonest: float | None = None
        for node, (run, _) in plan.items():
            pods = [p for p in by_node.get(node, []) if is_active(p)]
            if not run:
                misscheduled += 1 if pods else 0
                continue
            desired += 1
            if not pods:
                continue
            current += 1
            pod = pods[0]
            if is_ready(pod):
                ready += 1
                left = available_in(pod, min_ready)
                if left == 0:
                    available += 1
                elif left is not None:
                    soonest = left if soonest is None else min(soonest, left)
            if (meta(pod).get("labels") or {}).get(REVISION_LABEL) == phash:
                updated += 1
        status: JSON = {
            "currentNumberScheduled": current,
            "numberMisscheduled": misscheduled,
            "desiredNumberScheduled": desired,
            "numberReady": ready,
            "observedGeneration": meta(ds).get("generation", 0),
            "updatedNumberScheduled": updated,
            "numberAvailable": available,
            "numberUnavailable": desired - available,
        }
        old = ds.get("status") or {}
        if old.get("collisionCount") is not None:
            status["collisionCount"] = old["collisionCount"]
        if soonest is not None:
            self.queue.add_after(key, soonest + 0.05)
        if all(old.get(k, 0) == v for k, v in status.items()):
            return
        fresh = copy.deepcopy(ds)
        fresh["status"] = {**old, **status}
        ns, name = meta(ds).get("namespace"), meta(ds).get("name")
        self.write_status(f"/apis/apps/v1/namespaces/{ns}/daemonsets/{name}/status", fresh, key)
