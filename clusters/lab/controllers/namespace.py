"""Namespace controller: empties a terminating namespace — every namespaced resource the server
serves — then removes the ``kubernetes`` finalizer through ``/finalize`` so the server can drop it.

While content remains (pods still terminating, finalizers) it re-checks with growing delays and
reports what is left in the namespace's status conditions, with the real condition names.
"""

from __future__ import annotations

import copy
import logging
import time

from clusters.lab.controllers.base import NAMESPACES, Controller
from clusters.lab.controllers.client import JSON, describe_error, is_conflict, is_not_found, meta, now_iso
from clusters.lab.controllers.discovery import Resource, discover
from clusters.lab.controllers.informer import Handlers

log = logging.getLogger(__name__)

FINALIZER = "kubernetes"
_DISCOVERY_TTL = 30.0


class NamespaceController(Controller):
    name = "namespace-controller"

    def setup(self) -> None:
        self.namespaces = self.informer(NAMESPACES)
        self.namespaces.add_handlers(Handlers(self._changed, lambda _o, n: self._changed(n), None))
        self._resources: list[Resource] = []
        self._discovered_at = 0.0
        self._attempts: dict[str, int] = {}

    def _changed(self, ns: JSON) -> None:
        if meta(ns).get("deletionTimestamp"):
            self.enqueue(ns)

    def _namespaced(self) -> list[Resource]:
        if not self._resources or time.monotonic() - self._discovered_at > _DISCOVERY_TTL:
            self._resources = [
                r for r in discover(self.kube) if r.namespaced and {"list", "delete"} <= r.verbs
            ]
            self._discovered_at = time.monotonic()
        return self._resources

    def sync(self, key: str) -> None:
        ns = self.namespaces.get(key)
        if ns is None or not meta(ns).get("deletionTimestamp"):
            self._attempts.pop(key, None)
            return
        if FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or []):
            return
        remaining: dict[str, int] = {}
        failures: list[str] = []
        for r in self._namespaced():
            try:
                left = self._empty(r, key)
            except Exception as err:
                failures.append(f"{r.name}.{r.group_version}: {describe_error(err)}")
                continue
            if left:
                remaining[
                    r.name if "/" not in r.group_version else f"{r.name}.{r.group_version.split('/')[0]}"
                ] = left
        if remaining or failures:
            self._report(ns, remaining, failures)
            n = self._attempts.get(key, 0)
            self._attempts[key] = n + 1
            self.queue.add_after(key, min(2.0, 0.05 * 2**n))
            return
        self._attempts.pop(key, None)
        fresh = copy.deepcopy(ns)
        fresh["spec"]["finalizers"] = [f for f in fresh["spec"].get("finalizers") or [] if f != FINALIZER]
        try:
            self.kube.update(f"/api/v1/namespaces/{key}/finalize", fresh)
        except Exception as err:
            if is_not_found(err):
                return
            raise
        log.info("namespace %s emptied and finalized", key)

    def _empty(self, r: Resource, namespace: str) -> int:
        items = self.kube.get(r.path(namespace)).get("items") or []
        if not items:
            return 0
        if "deletecollection" in r.verbs:
            try:
                self.kube.delete(r.path(namespace), {"propagationPolicy": "Background"})
            except Exception as err:
                if getattr(err, "status", None) not in (404, 405):
                    raise
                self._delete_each(r, namespace, items)
        else:
            self._delete_each(r, namespace, items)
        return len(self.kube.get(r.path(namespace)).get("items") or [])

    def _delete_each(self, r: Resource, namespace: str, items: list[JSON]) -> None:
        for item in items:
            if meta(item).get("deletionTimestamp"):
                continue
            try:
                self.kube.delete(
                    r.path(namespace, str(meta(item).get("name"))), {"propagationPolicy": "Background"}
                )
            except Exception as err:
                if not is_not_found(err):
                    raise

    def _report(self, ns: JSON, remaining: dict[str, int], failures: list[str]) -> None:
        conds: list[JSON] = []
        now = now_iso()
        if failures:
            conds.append(
                {
                    "type": "NamespaceDeletionContentFailure",
                    "status": "True",
                    "lastTransitionTime": now,
                    "reason": "ContentDeletionFailed",
                    "message": "Failed to delete all resource types, " + "; ".join(failures),
                }
            )
        if remaining:
            detail = ", ".join(f"{k} has {v} resource instances" for k, v in sorted(remaining.items()))
            conds.append(
                {
                    "type": "NamespaceContentRemaining",
                    "status": "True",
                    "lastTransitionTime": now,
                    "reason": "SomeResourcesRemain",
                    "message": f"Some resources are remaining: {detail}",
                }
            )
        old = {c.get("type"): c for c in (ns.get("status") or {}).get("conditions") or []}
        if all(old.get(c["type"], {}).get("message") == c["message"] for c in conds) and len(old) == len(
            conds
        ):
            return
        fresh = copy.deepcopy(ns)
        fresh.setdefault("status", {})["conditions"] = conds
        try:
            self.kube.update(f"/api/v1/namespaces/{meta(ns).get('name')}/status", fresh)
        except Exception as err:
            if not (is_not_found(err) or is_conflict(err)):
                log.debug("namespace status: %s", describe_error(err))
