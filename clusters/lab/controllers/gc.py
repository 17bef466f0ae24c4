"""Garbage collector: keeps a graph of ownerReferences across every served resource and

- deletes an object whose owners are all gone (checked by uid with a live GET, as the real one does,
  so a slow informer never causes a wrong deletion), with background propagation;
- strips dangling references when some owners remain;
- ``foregroundDeletion``: deletes the owner's dependents and removes the finalizer once none remain;
- ``orphan``: removes the owner's reference from its dependents, then removes the finalizer.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from clusters.lab.controllers.base import Controller
from clusters.lab.controllers.client import JSON, is_not_found, meta
from clusters.lab.controllers.discovery import Resource, discover
from clusters.lab.controllers.informer import Handlers

log = logging.getLogger(__name__)

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
_IGNORED = {"events", "bindings", "componentstatuses", "tokenreviews", "selfsubjectaccessreviews"}


@dataclass(frozen=True)
class _Node:
    resource: Resource
    namespace: str | None
    name: str
    uid: str
    owners: tuple[JSON, ...]
    deleting: bool
    finalizers: tuple[str, ...]
    resource_version: str

    def path(self) -> str:
        return self.resource.path(self.namespace, self.name)


class GarbageCollector(Controller):
    name = "garbage-collector"

    def setup(self) -> None:
        self._lock = threading.Lock()
        self.graph: dict[str, _Node] = {}
        self.dependents: dict[str, set[str]] = {}
        resources = [
            r
            for r in discover(self.kube)
            if {"list", "watch", "delete"} <= r.verbs and r.name not in _IGNORED
        ]
        self.by_kind = {(r.group_version, r.kind): r for r in resources}
        for r in resources:
            self.informer(r.base).add_handlers(
                Handlers(
                    lambda o, r=r: self._upsert(r, o),  # type: ignore[misc]
                    lambda _o, n, r=r: self._upsert(r, n),  # type: ignore[misc]
                    lambda o: self._removed(o),
                )
            )
        log.debug("garbage collector watches %d resources", len(resources))

    # -- graph -----------------------------------------------------------------------------------

    def _upsert(self, resource: Resource, obj: JSON) -> None:
        m = meta(obj)
        uid = str(m.get("uid", ""))
        if not uid:
            return
        node = _Node(
            resource,
            m.get("namespace") or None,
            str(m.get("name", "")),
            uid,
            tuple(r for r in m.get("ownerReferences") or [] if isinstance(r, dict)),
            bool(m.get("deletionTimestamp")),
            tuple(m.get("finalizers") or []),
            str(m.get("resourceVersion", "")),
        )
        enqueue = False
        with self._lock:
            old = self.graph.get(uid)
            self.graph[uid] = node
            for ref in old.owners if old else ():
                self.dependents.get(str(ref.get("uid")), set()).discard(uid)
            for ref in node.owners:
                owner = str(ref.get("uid"))
                self.dependents.setdefault(owner, set()).add(uid)
                other = self.graph.get(owner)
                if other is None or other.deleting:
                    enqueue = True
        if node.deleting and (FOREGROUND in node.finalizers or ORPHAN in node.finalizers):
            enqueue = True
        if enqueue:
            self.queue.add(uid)

    def _removed(self, obj: JSON) -> None:
        uid = str(meta(obj).get("uid", ""))
        with self._lock:
            node = self.graph.pop(uid, None)
            deps = set(self.dependents.get(uid, set()))
            owners = [str(r.get("uid")) for r in node.owners] if node else []
            for owner in owners:
                self.dependents.get(owner, set()).discard(uid)
        for d in deps:
            self.queue.add(d)
        for owner in owners:
            self.queue.add(owner)

    # -- sync ------------------------------------------------------------------------------------

    def sync(self, key: str) -> None:
        with self._lock:
            node = self.graph.get(key)
        if node is None:
            return
        if node.deleting:
            if ORPHAN in node.finalizers:
                self._orphan_dependents(node)
            elif FOREGROUND in node.finalizers:
                self._delete_dependents(node)
            return
        if not node.owners:
            return
        dangling: list[JSON] = []
        for ref in node.owners:
            if self._owner_missing(node, ref):
                dangling.append(ref)
        if not dangling:
            return
        if len(dangling) == len(node.owners):
            log.info("deleting %s %s/%s: its owners are gone", node.resource.kind, node.namespace, node.name)
            options: JSON = {"propagationPolicy": "Background", "preconditions": {"uid": node.uid}}
            try:
                self.kube.delete(node.path(), options)
            except Exception as err:
                if not is_not_found(err) and getattr(err, "status", None) != 409:
                    raise
            return
        keep = [r for r in node.owners if r not in dangling]
        self._patch_owners(node, keep)

    def _owner_missing(self, node: _Node, ref: JSON) -> bool:
        with self._lock:
            if str(ref.get("uid")) in self.graph:
                return False
        resource = self.by_kind.get((str(ref.get("apiVersion")), str(ref.get("kind"))))
        if resource is None:
            log.debug(
                "owner kind %s/%s not served; leaving %s alone",
                ref.get("apiVersion"),
                ref.get("kind"),
                node.name,
            )
            return False
        ns = node.namespace if resource.namespaced else None
        try:
            live = self.kube.get(resource.path(ns, str(ref.get("name"))))
        except Exception as err:
            if is_not_found(err):
                return True
            raise
        return meta(live).get("uid") != ref.get("uid")

    def _patch_owners(self, node: _Node, owners: list[JSON]) -> None:
        body = {"metadata": {"ownerReferences": owners or None, "resourceVersion": node.resource_version}}
        try:
            self.kube.patch(node.path(), body)
        except Exception as err:
            if not is_not_found(err):
                raise

    def _remove_finalizer(self, node: _Node, finalizer: str) -> None:
        rest = [f for f in node.finalizers if f != finalizer]
        body = {"metadata": {"finalizers": rest or None, "resourceVersion": node.resource_version}}
        try:
            self.kube.patch(node.path(), body)
        except Exception as err:
            if not is_not_found(err):
                raise

    def _children(self, node: _Node) -> list[_Node]:
        with self._lock:
            return [self.graph[d] for d in self.dependents.get(node.uid, set()) if d in self.graph]

    def _orphan_dependents(self, node: _Node) -> None:
        for dep in self._children(node):
            self._patch_owners(dep, [r for r in dep.owners if r.get("uid") != node.uid])
        self._remove_finalizer(node, ORPHAN)

    def _delete_dependents(self, node: _Node) -> None:
        children = self._children(node)
        blocking = [
            c
            for c in children
            if any(r.get("uid") == node.uid and r.get("blockOwnerDeletion") for r in c.owners)
        ]
        for child in children:
            if child.deleting:
                continue
            with self._lock:
                has_own = bool(self.dependents.get(child.uid))
            policy = "Foreground" if has_own else "Background"
            try:
                self.kube.delete(
                    child.path(), {"propagationPolicy": policy, "preconditions": {"uid": child.uid}}
                )
            except Exception as err:
                if not is_not_found(err):
                    raise
        if not blocking:
            self._remove_finalizer(node, FOREGROUND)
