"""Deployment controller: one ReplicaSet per pod template, named ``<deployment>-<pod-template-hash>``,
rolled with the real RollingUpdate arithmetic (maxSurge up, maxUnavailable down) or Recreate.

``kubectl rollout restart`` changes a template annotation, hence the hash, hence a new ReplicaSet,
exactly as on a real cluster. Status and the Available/Progressing conditions use the real reasons
and messages, because suites read them (``kubectl rollout status`` waits on them).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from datetime import UTC, datetime
from typing import Any

from clusters.lab.controllers.base import DEPLOYMENTS, PODS, REPLICASETS, Controller
from clusters.lab.controllers.client import (
    JSON,
    controller_ref,
    is_conflict,
    is_not_found,
    meta,
    now_iso,
    owner_ref,
)
from clusters.lab.controllers.events import NORMAL
from clusters.lab.controllers.informer import Handlers
from clusters.lab.controllers.pods import is_active, parse_time

log = logging.getLogger(__name__)

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
_SKIP_ANNOTATIONS = {
    REVISION,
    DESIRED,
    MAX_REPLICAS,
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision-history",
}
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


def _fnv32a(data: bytes, h: int = 0x811C9DC5) -> int:
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(template: JSON, collision_count: int | None = None) -> str:
    """controller.ComputeHash: FNV-32a of the template (+ collisionCount), encoded with
    rand.SafeEncodeString — the same alphabet and length as the real label; the bytes hashed are
    canonical JSON rather than Go's spew dump, so values differ from a real cluster's."""
    h = _fnv32a(json.dumps(template, sort_keys=True, separators=(",", ":")).encode())
    if collision_count is not None:
        h = _fnv32a(int(collision_count).to_bytes(4, "little"), h)
    return "".join(_ALPHANUMS[ord(c) % len(_ALPHANUMS)] for c in str(h))


def strip_hash(template: JSON) -> JSON:
    t = copy.deepcopy(template)
    labels = (t.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return t


def resolve(value: Any, total: int, *, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, str) and value.endswith("%"):
        pct = int(value[:-1]) * total / 100
        return math.ceil(pct) if round_up else math.floor(pct)
    return int(value)


def revision(rs: JSON) -> int:
    try:
        return int((meta(rs).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def spec_replicas(rs: JSON) -> int:
    return int((rs.get("spec") or {}).get("replicas", 0))


def stat(rs: JSON, field: str) -> int:
    return int((rs.get("status") or {}).get(field, 0) or 0)


class DeploymentController(Controller):
    name = "deployment-controller"

    def setup(self) -> None:
        self._progressing_note: tuple[str, str] | None = None
        self.deployments = self.informer(DEPLOYMENTS)
        self.sets = self.informer(REPLICASETS)
        self.pods = self.informer(PODS)
        self.deployments.add_handlers(Handlers(self.enqueue, lambda _o, n: self.enqueue(n), self.enqueue))
        self.sets.add_handlers(
            Handlers(
                lambda rs: self.enqueue_controller(rs, "Deployment"),
                lambda _o, rs: self.enqueue_controller(rs, "Deployment"),
                lambda rs: self.enqueue_controller(rs, "Deployment"),
            )
        )
        self.pods.add_handlers(Handlers(None, None, self._pod_deleted))

    def _pod_deleted(self, pod: JSON) -> None:
        # Recreate waits for old pods to be gone; their ReplicaSet's owner is the key.
        ref = controller_ref(pod)
        if ref and ref.get("kind") == "ReplicaSet":
            rs = self.sets.get(f"{meta(pod).get('namespace')}/{ref.get('name')}")
            if rs is not None:
                self.enqueue_controller(rs, "Deployment")

    # -- helpers ---------------------------------------------------------------------------------

    def _owned_sets(self, d: JSON) -> list[JSON]:
        uid = meta(d).get("uid")
        return [
            rs
            for rs in self.sets.objects(meta(d).get("namespace"))
            if (controller_ref(rs) or {}).get("uid") == uid
        ]

    def _rs_path(self, ns: str, name: str = "") -> str:
        return f"/apis/apps/v1/namespaces/{ns}/replicasets" + (f"/{name}" if name else "")

    @staticmethod
    def _fenceposts(d: JSON) -> tuple[int, int]:
        spec = d.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        ru = ((spec.get("strategy") or {}).get("rollingUpdate")) or {}
        surge = resolve(ru.get("maxSurge", "25%"), replicas, round_up=True)
        unavailable = resolve(ru.get("maxUnavailable", "25%"), replicas, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        return surge, min(unavailable, replicas)

    # -- sync ------------------------------------------------------------------------------------

    def sync(self, key: str) -> None:
        d = self.deployments.get(key)
        if d is None:
            return
        d = copy.deepcopy(d)
        sets = self._owned_sets(d)
        spec = d.get("spec") or {}
        template = spec.get("template") or {}
        new_rs = next(
            (rs for rs in sets if strip_hash((rs.get("spec") or {}).get("template") or {}) == template), None
        )
        old_sets = [rs for rs in sets if rs is not new_rs]
        if meta(d).get("deletionTimestamp") or spec.get("paused"):
            self._sync_status(d, new_rs, old_sets)
            return
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            self._recreate(d, new_rs, old_sets)
        else:
            self._rolling(d, new_rs, old_sets)

    def _rolling(self, d: JSON, new_rs: JSON | None, old_sets: list[JSON]) -> None:
        new_rs = self._ensure_new_rs(d, new_rs, old_sets)
        if new_rs is None:
            return
        replicas = int((d.get("spec") or {}).get("replicas", 1))
        surge, unavailable = self._fenceposts(d)
        all_sets = [new_rs, *old_sets]
        # reconcileNewReplicaSet
        cur = spec_replicas(new_rs)
        if cur > replicas:
            self._scale(d, new_rs, replicas)
            return
        if cur < replicas:
            total = sum(spec_replicas(rs) for rs in all_sets)
            room = replicas + surge - total
            if room > 0:
                self._scale(d, new_rs, cur + min(room, replicas - cur))
                return
        # reconcileOldReplicaSets
        active_old = [rs for rs in old_sets if spec_replicas(rs) > 0]
        if active_old:
            min_available = replicas - unavailable
            all_count = sum(spec_replicas(rs) for rs in all_sets)
            new_unavailable = spec_replicas(new_rs) - stat(new_rs, "availableReplicas")
            max_down = all_count - min_available - new_unavailable
            if max_down > 0:
                scaled = False
                # cleanupUnhealthyReplicas: pods that are not available go first.
                for rs in sorted(active_old, key=lambda r: str(meta(r).get("creationTimestamp", ""))):
                    if max_down <= 0:
                        break
                    unhealthy = spec_replicas(rs) - stat(rs, "availableReplicas")
                    if unhealthy <= 0:
                        continue
                    down = min(unhealthy, max_down)
                    self._scale(d, rs, spec_replicas(rs) - down)
                    max_down -= down
                    scaled = True
                if scaled:
                    return
                available = sum(stat(rs, "availableReplicas") for rs in all_sets)
                budget = available - min_available
                for rs in sorted(active_old, key=lambda r: str(meta(r).get("creationTimestamp", ""))):
                    if budget <= 0:
                        break
                    down = min(spec_replicas(rs), budget)
                    if down > 0:
                        self._scale(d, rs, spec_replicas(rs) - down)
                        budget -= down
                        scaled = True
                if scaled:
                    return
        self._sync_status(d, new_rs, old_sets)
        if not active_old:
            self._cleanup(d, old_sets)

    def _recreate(self, d: JSON, new_rs: JSON | None, old_sets: list[JSON]) -> None:
        scaled = False
        for rs in old_sets:
            if spec_replicas(rs) > 0:
                self._scale(d, rs, 0)
                scaled = True
        if scaled:
            return
        old_uids = {meta(rs).get("uid") for rs in old_sets}
        ns = meta(d).get("namespace")
        if any(
            (controller_ref(p) or {}).get("uid") in old_uids and is_active(p) for p in self.pods.objects(ns)
        ):
            self._sync_status(d, new_rs, old_sets)
            return
        new_rs = self._ensure_new_rs(d, new_rs, old_sets)
        if new_rs is None:
            return
        replicas = int((d.get("spec") or {}).get("replicas", 1))
        if spec_replicas(new_rs) != replicas:
            self._scale(d, new_rs, replicas)
            return
        self._sync_status(d, new_rs, old_sets)

    def _ensure_new_rs(self, d: JSON, new_rs: JSON | None, old_sets: list[JSON]) -> JSON | None:
        ns, dname = str(meta(d).get("namespace")), str(meta(d).get("name"))
        want_rev = str(max((revision(rs) for rs in old_sets), default=0) + 1)
        if new_rs is not None:
            if revision(new_rs) < int(want_rev) and old_sets:
                fresh = copy.deepcopy(new_rs)
                fresh["metadata"].setdefault("annotations", {})[REVISION] = want_rev
                new_rs = self.kube.update(self._rs_path(ns, str(meta(new_rs).get("name"))), fresh)
            self._set_deployment_revision(d, str(revision(new_rs)))
            return new_rs
        spec = d.get("spec") or {}
        collisions = (d.get("status") or {}).get("collisionCount")
        phash = template_hash(spec.get("template") or {}, collisions)
        template = copy.deepcopy(spec.get("template") or {})
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = phash
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = phash
        replicas = int(spec.get("replicas", 1))
        surge, _ = self._fenceposts(d)
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            initial = replicas
        else:
            total = sum(spec_replicas(rs) for rs in old_sets)
            initial = max(0, min(replicas, replicas + surge - total))
        annotations = {
            k: v for k, v in (meta(d).get("annotations") or {}).items() if k not in _SKIP_ANNOTATIONS
        }
        annotations.update({REVISION: want_rev, DESIRED: str(replicas), MAX_REPLICAS: str(replicas + surge)})
        name = f"{dname}-{phash}"
        body: JSON = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": dict(template["metadata"]["labels"]),
                "annotations": annotations,
                "ownerReferences": [owner_ref(d)],
            },
            "spec": {
                "replicas": initial,
                "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                "selector": selector,
                "template": template,
            },
        }
        try:
            created = self.kube.create(self._rs_path(ns), body)
        except Exception as err:
            if not is_conflict(err):
                raise
            existing = self.kube.get(self._rs_path(ns, name))
            same_owner = (controller_ref(existing) or {}).get("uid") == meta(d).get("uid")
            if same_owner and strip_hash((existing.get("spec") or {}).get("template") or {}) == spec.get(
                "template"
            ):
                return existing
            # A hash collision: bump collisionCount so the next hash differs (the real remedy).
            status = copy.deepcopy(d.get("status") or {})
            status["collisionCount"] = int(status.get("collisionCount") or 0) + 1
            fresh = copy.deepcopy(d)
            fresh["status"] = status
            self.kube.update(f"/apis/apps/v1/namespaces/{ns}/deployments/{dname}/status", fresh)
            raise
        log.info("deployment %s/%s: created replica set %s", ns, dname, name)
        if initial > 0:
            self.recorder.event(
                d, NORMAL, "ScalingReplicaSet", f"Scaled up replica set {name} from 0 to {initial}"
            )
        self._set_deployment_revision(d, want_rev)
        self._progressing_note = ("NewReplicaSetCreated", f'Created new replica set "{name}"')
        return created

    def _set_deployment_revision(self, d: JSON, rev: str) -> None:
        """Annotate the deployment; ``d`` is updated in place so the status write that follows
        carries the new resourceVersion instead of conflicting."""
        if (meta(d).get("annotations") or {}).get(REVISION) == rev:
            return
        ns, name = meta(d).get("namespace"), meta(d).get("name")
        updated = self.kube.patch(
            f"/apis/apps/v1/namespaces/{ns}/deployments/{name}",
            {"metadata": {"annotations": {REVISION: rev}}},
        )
        d["metadata"] = updated.get("metadata", d["metadata"])

    def _scale(self, d: JSON, rs: JSON, to: int) -> None:
        frm = spec_replicas(rs)
        fresh = copy.deepcopy(rs)
        fresh.setdefault("spec", {})["replicas"] = to
        replicas = int((d.get("spec") or {}).get("replicas", 1))
        surge, _ = self._fenceposts(d)
        ann = fresh["metadata"].setdefault("annotations", {})
        ann[DESIRED] = str(replicas)
        ann[MAX_REPLICAS] = str(replicas + surge)
        ns, name = meta(rs).get("namespace"), meta(rs).get("name")
        self.kube.update(self._rs_path(str(ns), str(name)), fresh)
        direction = "up" if to > frm else "down"
        self.recorder.event(
            d, NORMAL, "ScalingReplicaSet", f"Scaled {direction} replica set {name} from {frm} to {to}"
        )

    def _cleanup(self, d: JSON, old_sets: list[JSON]) -> None:
        limit = int((d.get("spec") or {}).get("revisionHistoryLimit", 10))
        idle = [
            rs
            for rs in old_sets
            if spec_replicas(rs) == 0 and stat(rs, "replicas") == 0 and not meta(rs).get("deletionTimestamp")
        ]
        excess = len(idle) - limit
        for rs in sorted(idle, key=revision)[: max(0, excess)]:
            try:
                self.kube.delete(self._rs_path(str(meta(rs).get("namespace")), str(meta(rs).get("name"))))
            except Exception as err:
                if not is_not_found(err):
                    raise

    # -- status ----------------------------------------------------------------------------------

    def _sync_status(self, d: JSON, new_rs: JSON | None, old_sets: list[JSON]) -> None:
        spec = d.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        all_sets = ([new_rs] if new_rs else []) + old_sets
        available = sum(stat(rs, "availableReplicas") for rs in all_sets)
        total_spec = sum(spec_replicas(rs) for rs in all_sets)
        old = d.get("status") or {}
        status: JSON = {
            "observedGeneration": meta(d).get("generation", 0),
            "replicas": sum(stat(rs, "replicas") for rs in all_sets),
            "updatedReplicas": stat(new_rs, "replicas") if new_rs else 0,
            "readyReplicas": sum(stat(rs, "readyReplicas") for rs in all_sets),
            "availableReplicas": available,
            "unavailableReplicas": max(0, total_spec - available),
        }
        if old.get("collisionCount") is not None:
            status["collisionCount"] = old["collisionCount"]
        _, max_unavailable = self._fenceposts(d)
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            max_unavailable = 0
        conds = {c.get("type"): c for c in old.get("conditions") or []}
        now = now_iso()
        if available >= replicas - max_unavailable:
            avail = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            avail = ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
        rs_name = meta(new_rs).get("name") if new_rs else ""
        complete = (
            new_rs is not None
            and status["updatedReplicas"] == replicas
            and status["replicas"] == replicas
            and available == replicas
        )
        prog_old = conds.get("Progressing")
        progress_made = any(
            status[k] != old.get(k)
            for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
        )
        note = self._progressing_note
        self._progressing_note = None
        if spec.get("paused"):
            prog = ("Unknown", "DeploymentPaused", "Deployment is paused")
        elif complete:
            prog = ("True", "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.')
        elif note:
            prog = ("True", note[0], note[1])
        elif prog_old and prog_old.get("reason") == "ProgressDeadlineExceeded" and not progress_made:
            prog = ("False", "ProgressDeadlineExceeded", str(prog_old.get("message")))
        elif new_rs is not None and self._deadline_passed(d, prog_old) and not progress_made:
            prog = ("False", "ProgressDeadlineExceeded", f'ReplicaSet "{rs_name}" has timed out progressing.')
        else:
            prog = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        status["conditions"] = [
            self._condition(conds.get("Available"), "Available", avail, now, bump=False),
            self._condition(prog_old, "Progressing", prog, now, bump=progress_made),
        ]
        if not complete and prog[0] == "True":
            deadline = int(spec.get("progressDeadlineSeconds", 600))
            self.queue.add_after(f"{meta(d).get('namespace')}/{meta(d).get('name')}", deadline + 1)
        if status == {k: old.get(k) for k in status}:
            return
        fresh = copy.deepcopy(d)
        fresh["status"] = status
        ns, name = meta(d).get("namespace"), meta(d).get("name")
        try:
            self.kube.update(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}/status", fresh)
        except Exception as err:
            if not is_not_found(err):
                raise

    @staticmethod
    def _deadline_passed(d: JSON, cond: JSON | None) -> bool:
        if not cond or not cond.get("lastUpdateTime"):
            return False
        deadline = int((d.get("spec") or {}).get("progressDeadlineSeconds", 600))
        since = parse_time(str(cond["lastUpdateTime"]))
        return (datetime.now(UTC) - since).total_seconds() > deadline

    @staticmethod
    def _condition(old: JSON | None, ctype: str, want: tuple[str, str, str], now: str, *, bump: bool) -> JSON:
        status, reason, message = want
        if old and (old.get("status"), old.get("reason"), old.get("message")) == want and not bump:
            return dict(old)
        transition = old.get("lastTransitionTime") if old and old.get("status") == status else now
        return {
            "type": ctype,
            "status": status,
            "lastUpdateTime": now,
            "lastTransitionTime": transition or now,
            "reason": reason,
            "message": message,
        }
