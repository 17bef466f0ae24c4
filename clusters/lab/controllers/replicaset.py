"""ReplicaSet controller: keep ``spec.replicas`` active pods, named ``<rs>-<5 random>``, each with a
controller ownerReference to the ReplicaSet; report counts in status.

Like the real one it does not count terminating or finished pods, uses expectations so a pod it
just created or deleted is not counted twice before the informer sees it, and deletes the
least valuable pods first (unscheduled, pending, not ready, newest).
"""

from __future__ import annotations

import copy
import logging

from clusters.lab.controllers.base import PODS, REPLICASETS, Controller, Expectations
from clusters.lab.controllers.client import (
    JSON,
    controller_ref,
    describe_error,
    is_not_found,
    is_terminating_namespace,
    key_of,
    meta,
    owner_ref,
)
from clusters.lab.controllers.events import NORMAL, WARNING
from clusters.lab.controllers.informer import Handlers
from clusters.lab.controllers.matching import labels_match
from clusters.lab.controllers.pods import available_in, create_pod, deletion_rank, is_active, is_ready

log = logging.getLogger(__name__)


class ReplicaSetController(Controller):
    name = "replicaset-controller"
    kind = "ReplicaSet"
    path = REPLICASETS

    def setup(self) -> None:
        self.expectations = Expectations()
        self.sets = self.informer(self.path)
        self.pods = self.informer(PODS)
        self.sets.add_handlers(Handlers(self.enqueue, lambda _o, n: self.enqueue(n), self._set_deleted))
        self.pods.add_handlers(Handlers(self._pod_added, self._pod_updated, self._pod_deleted))

    def _set_deleted(self, obj: JSON) -> None:
        self.expectations.forget(key_of(obj))
        self.enqueue(obj)

    def _owner_key(self, pod: JSON) -> str | None:
        ref = controller_ref(pod)
        if ref and ref.get("kind") == self.kind:
            return f"{meta(pod).get('namespace')}/{ref.get('name')}"
        return None

    def _pod_added(self, pod: JSON) -> None:
        key = self._owner_key(pod)
        if key:
            if meta(pod).get("deletionTimestamp"):
                self.expectations.deletion_observed(key, key_of(pod))
            else:
                self.expectations.creation_observed(key)
            self.queue.add(key)

    def _pod_updated(self, old: JSON, new: JSON) -> None:
        key = self._owner_key(new)
        if key and meta(new).get("deletionTimestamp"):
            self.expectations.deletion_observed(key, key_of(new))
        old_key = self._owner_key(old)
        if old_key and old_key != key:
            self.queue.add(old_key)
        if key:
            self.queue.add(key)

    def _pod_deleted(self, pod: JSON) -> None:
        key = self._owner_key(pod)
        if key:
            self.expectations.deletion_observed(key, key_of(pod))
            self.queue.add(key)

    def owned_pods(self, rs: JSON) -> list[JSON]:
        uid = meta(rs).get("uid")
        return [
            p
            for p in self.pods.objects(meta(rs).get("namespace"))
            if (controller_ref(p) or {}).get("uid") == uid
        ]

    def sync(self, key: str) -> None:
        rs = self.sets.get(key)
        if rs is None:
            self.expectations.forget(key)
            return
        pods = [p for p in self.owned_pods(rs) if is_active(p)]
        failure: str | None = None
        if self.expectations.satisfied(key) and not meta(rs).get("deletionTimestamp"):
            failure = self._manage(key, rs, pods)
            pods = [p for p in self.owned_pods(rs) if is_active(p)]
        self._update_status(key, rs, pods, failure)

    def _manage(self, key: str, rs: JSON, pods: list[JSON]) -> str | None:
        want = int((rs.get("spec") or {}).get("replicas", 1))
        diff = len(pods) - want
        ns, name = meta(rs).get("namespace", ""), meta(rs).get("name", "")
        if diff < 0:
            missing = -diff
            self.expectations.expect(key, adds=missing)
            for i in range(missing):
                try:
                    created = create_pod(self.kube, ns, self.pod_from_template(rs), f"{name}-")
                except Exception as err:
                    self.expectations.expect(key, adds=-(missing - i))
                    if is_terminating_namespace(err):
                        return None
                    msg = f"Error creating: {describe_error(err)}"
                    self.recorder.event(rs, WARNING, "FailedCreate", msg)
                    return msg
                self.recorder.event(
                    rs, NORMAL, "SuccessfulCreate", f"Created pod: {meta(created).get('name')}"
                )
        elif diff > 0:
            victims = sorted(pods, key=deletion_rank)[:diff]
            self.expectations.expect(key, dels={key_of(p) for p in victims})
            for pod in victims:
                pname = meta(pod).get("name")
                try:
                    self.kube.delete(f"/api/v1/namespaces/{ns}/pods/{pname}")
                except Exception as err:
                    self.expectations.deletion_observed(key, key_of(pod))
                    if not is_not_found(err):
                        self.recorder.event(
                            rs, WARNING, "FailedDelete", f"Error deleting: {describe_error(err)}"
                        )
                        raise
                    continue
                self.recorder.event(rs, NORMAL, "SuccessfulDelete", f"Deleted pod: {pname}")
        return None

    def pod_from_template(self, rs: JSON) -> JSON:
        template = (rs.get("spec") or {}).get("template") or {}
        tmeta = template.get("metadata") or {}
        pod_meta: JSON = {
            "namespace": meta(rs).get("namespace"),
            "labels": dict(tmeta.get("labels") or {}),
            "ownerReferences": [owner_ref(rs)],
        }
        if tmeta.get("annotations"):
            pod_meta["annotations"] = dict(tmeta["annotations"])
        if tmeta.get("finalizers"):
            pod_meta["finalizers"] = list(tmeta["finalizers"])
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": pod_meta,
            "spec": copy.deepcopy(template.get("spec") or {}),
        }

    def _update_status(self, key: str, rs: JSON, pods: list[JSON], failure: str | None) -> None:
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        tlabels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        available = 0
        soonest: float | None = None
        for p in pods:
            left = available_in(p, min_ready)
            if left == 0:
                available += 1
            elif left is not None:
                soonest = left if soonest is None else min(soonest, left)
        old = rs.get("status") or {}
        status: JSON = {
            "replicas": len(pods),
            "fullyLabeledReplicas": sum(
                1 for p in pods if labels_match({"matchLabels": tlabels}, meta(p).get("labels") or {})
            ),
            "readyReplicas": sum(1 for p in pods if is_ready(p)),
            "availableReplicas": available,
            "observedGeneration": meta(rs).get("generation", 0),
        }
        conditions = [c for c in old.get("conditions") or [] if c.get("type") != "ReplicaFailure"]
        if failure:
            conditions.append(
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": failure}
            )
        if conditions:
            status["conditions"] = conditions
        if soonest is not None:
            self.queue.add_after(key, soonest + 0.05)
        if all(old.get(k, 0) == v for k, v in status.items() if k != "conditions") and old.get(
            "conditions"
        ) == status.get("conditions"):
            return
        fresh = copy.deepcopy(rs)
        fresh["status"] = status
        ns, name = meta(rs).get("namespace"), meta(rs).get("name")
        base = self.path.rsplit("/", 1)[0]
        self.write_status(f"{base}/namespaces/{ns}/{self.path.rsplit('/', 1)[1]}/{name}/status", fresh, key)
