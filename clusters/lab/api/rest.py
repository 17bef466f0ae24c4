"""The API's semantics, free of HTTP: create, read, update, patch, delete and subresources.

What real clients and controllers rely on lives here: optimistic concurrency, generation bumps,
status/spec separation, finalizers and deletionTimestamp, namespace termination and finalize,
generateName, server-side defaults and allocation, validation.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clusters.lab import layout
from clusters.lab.api import allocators, defaults, graceful, patch, resources, status, validation
from clusters.lab.api.resources import ResourceType
from clusters.lab.api.selectors import FieldSelector, LabelSelector
from clusters.lab.api.store import Obj, Store, clone, clone_obj

log = logging.getLogger(__name__)

NAMESPACES = resources.require("", "v1", "namespaces")
PODS = resources.require("", "v1", "pods")
SERVICES = resources.require("", "v1", "services")
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_SCALABLE = {"Deployment", "ReplicaSet", "StatefulSet", "ReplicationController"}
_RETURNS_OBJECT_ON_DELETE = {"Pod", "Namespace"}
_CREATE_ON_UPDATE = {
    "Endpoints",
    "Event",
    "Lease",
    "LimitRange",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
}
_ROOT_CA_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
    "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
    "distributions of Kubernetes clusters."
)
BOOT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class WriteOptions:
    dry_run: bool = False
    field_validation: str = "Warn"


@dataclass(frozen=True)
class DeleteOptions:
    propagation: str | None = None
    grace_period: int | None = None
    uid: str | None = None
    resource_version: str | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class Written:
    obj: Obj
    warnings: tuple[str, ...] = ()
    created: bool = False


def _meta(obj: Obj) -> dict[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


def success_status(rt: ResourceType, obj: Obj) -> Obj:
    details: dict[str, Any] = {"name": obj["metadata"]["name"]}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.plural
    details["uid"] = obj["metadata"].get("uid", "")
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


class Api:
    """Operations on one :class:`Store`; every method raises :class:`status.ApiError` on failure."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- bootstrap ---------------------------------------------------------------------------

    def bootstrap(self) -> None:
        """The objects every cluster starts with (idempotent, so a reload keeps state)."""
        for ns in BOOT_NAMESPACES:
            if self.store.get(NAMESPACES, "", ns) is None:
                self.create(
                    NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                )
        if self.store.get(SERVICES, "default", "kubernetes") is None:
            svc = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "kubernetes",
                    "namespace": "default",
                    "labels": {"component": "apiserver", "provider": "kubernetes"},
                },
                "spec": {
                    "clusterIP": str(layout.SERVICE_SUBNET.network_address + 1),
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
                },
            }
            self.create(SERVICES, "default", svc)

    # -- reads -------------------------------------------------------------------------------

    def get(self, rt: ResourceType, ns: str, name: str) -> Obj:
        obj = self.store.get(rt, ns, name)
        if obj is None:
            raise status.not_found(rt, name)
        return obj

    def list_objects(
        self,
        rt: ResourceType,
        ns: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        limit: int = 0,
        cont: str | None = None,
    ) -> tuple[list[Obj], int, str | None]:
        items, rv = self.store.list(rt, ns)
        items = [o for o in items if labels.matches(o["metadata"].get("labels")) and fields.matches(o)]
        if cont:
            try:
                last = json.loads(base64.urlsafe_b64decode(cont.encode()))
                start = (str(last["ns"]), str(last["name"]))
            except (ValueError, KeyError, TypeError):
                raise status.bad_request(
                    "continue key is not valid: incorrect encoded start resourceVersion"
                ) from None
            items = [o for o in items if _ident(o) > start]
        token = None
        if limit and len(items) > limit:
            items = items[:limit]
            ns_, name_ = _ident(items[-1])
            token = base64.urlsafe_b64encode(json.dumps({"ns": ns_, "name": name_}).encode()).decode()
        return items, rv, token

    # -- create ------------------------------------------------------------------------------

    def _check_kind(self, rt: ResourceType, body: Obj) -> None:
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if kind and kind != rt.kind:
            raise status.bad_request(
                "the object provided is unrecognized or does not match the expected kind: "
                f"{kind} (expected {rt.kind})"
            )
        if api_version and api_version != rt.api_version:
            raise status.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({rt.api_version})"
            )
        body["kind"], body["apiVersion"] = rt.kind, rt.api_version

    def _check_namespace(self, rt: ResourceType, ns: str, name: str, creating: bool) -> None:
        if not rt.namespaced:
            return
        nso = self.store.get(NAMESPACES, "", ns)
        if nso is None:
            raise status.not_found(NAMESPACES, ns)
        if creating and nso["metadata"].get("deletionTimestamp"):
            raise status.forbidden(
                rt, name, f"unable to create new content in namespace {ns} because it is being terminated"
            )

    def create(self, rt: ResourceType, ns: str, body: Obj, opts: WriteOptions = WriteOptions()) -> Written:
        if not isinstance(body, dict):
            raise status.bad_request("the body of the request was in an unknown format")
        obj = clone(body)
        self._check_kind(rt, obj)
        meta = _meta(obj)
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise status.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = str(meta["generateName"]) + "".join(random.choices(_NAME_CHARS, k=5))
        name = str(meta.get("name") or "")
        for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        if rt.kind in (
            "Deployment",
            "DaemonSet",
            "StatefulSet",
            "ReplicaSet",
            "Pod",
            "ReplicationController",
        ):
            meta["generation"] = 1
        if rt.has_status and rt.kind not in ("Node", "Namespace"):
            obj.pop("status", None)  # real PrepareForCreate: clients cannot create with a status
        defaults.apply(obj)
        outcome = validation.validate(rt, obj, opts.field_validation)
        with self.store.lock:
            self._check_namespace(rt, ns, name, creating=True)
            if self.store.peek(rt, ns if rt.namespaced else "", name) is not None:
                raise status.already_exists(rt, name)
            if rt.kind == "Service":
                services, _ = self.store.list(SERVICES)
                allocators.allocate_cluster_ip(rt, name, obj["spec"], allocators.used_ips(services))
                allocators.allocate_node_ports(rt, name, obj["spec"], allocators.used_node_ports(services))
            if opts.dry_run:
                return Written(obj, outcome.warnings, created=True)
            stored = self.store.create(rt, obj)
            if rt.kind == "Namespace":
                self._namespace_created(name)
        return Written(stored, outcome.warnings, created=True)

    def _namespace_created(self, ns: str) -> None:
        """What kube-controller-manager adds to every namespace soon after it appears."""
        sa_rt = resources.require("", "v1", "serviceaccounts")
        cm_rt = resources.require("", "v1", "configmaps")
        if self.store.peek(sa_rt, ns, "default") is None:
            self.create(sa_rt, ns, {"metadata": {"name": "default"}})
        if self.store.peek(cm_rt, ns, "kube-root-ca.crt") is None:
            self.create(
                cm_rt,
                ns,
                {
                    "metadata": {
                        "name": "kube-root-ca.crt",
                        "annotations": {"kubernetes.io/description": _ROOT_CA_DESCRIPTION},
                    },
                    "data": {"ca.crt": "# the lab API serves plain HTTP; there is no CA\n"},
                },
            )

    # -- update ------------------------------------------------------------------------------

    def update(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        body: Obj,
        subresource: str | None = None,
        opts: WriteOptions = WriteOptions(),
    ) -> Written:
        if not isinstance(body, dict):
            raise status.bad_request("the body of the request was in an unknown format")
        with self.store.lock:
            old = self.store.get(rt, ns, name)
            if old is None:
                if subresource is None and rt.kind not in ("Namespace",) and _allow_create_on_update(rt):
                    created = self.create(rt, ns, body, opts)
                    return created
                raise status.not_found(rt, name)
            return self._replace(rt, old, clone(body), subresource, opts)

    def _replace(
        self, rt: ResourceType, old: Obj, new: Obj, subresource: str | None, opts: WriteOptions
    ) -> Written:
        name = old["metadata"]["name"]
        self._check_kind(rt, new)
        meta = _meta(new)
        if meta.get("name") and meta["name"] != name:
            raise status.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        want_rv = meta.get("resourceVersion")
        if want_rv and str(want_rv) != old["metadata"]["resourceVersion"]:
            raise status.conflict(rt, name)
        if subresource == "status":
            merged = clone_obj(old)
            merged["status"] = new.get("status", {})
            for field in ("labels", "annotations"):
                if field in meta:
                    merged["metadata"][field] = meta[field]
            new, meta = merged, merged["metadata"]
        else:
            if rt.has_status:
                if "status" in old:
                    new["status"] = clone(old["status"])
                else:
                    new.pop("status", None)
            if rt.kind == "Namespace":
                new.setdefault("spec", {})["finalizers"] = list(
                    (old.get("spec") or {}).get("finalizers") or []
                )
        for field in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
            else:
                meta.pop(field, None)
        meta["name"] = name
        if rt.namespaced:
            meta["namespace"] = old["metadata"]["namespace"]
        meta.pop("managedFields", None)
        if rt.kind == "Service":
            allocators.keep_allocations(old, new)
        if subresource != "status":
            defaults.apply(new)
            if rt.kind == "Pod":
                new["status"] = clone(old.get("status", {}))
        outcome = validation.validate(rt, new, opts.field_validation)
        if rt.kind == "Service" and subresource != "status":
            self._check_service_update(rt, old, new)
        if _spec_of(new) != _spec_of(old) and "generation" in old["metadata"]:
            meta["generation"] = int(old["metadata"]["generation"]) + 1
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return Written(old, outcome.warnings)
        if opts.dry_run:
            return Written(new, outcome.warnings)
        if graceful.delete_during_update(old, new, _finalizers):
            gone = self.store.delete(rt, meta.get("namespace", ""), name)
            return Written(gone or new, outcome.warnings)
        return Written(self.store.update(rt, new), outcome.warnings)

    def _check_service_update(self, rt: ResourceType, old: Obj, new: Obj) -> None:
        name = old["metadata"]["name"]
        ospec, nspec = old.get("spec", {}), new.get("spec", {})
        if (
            ospec.get("clusterIP")
            and nspec.get("clusterIP") != ospec.get("clusterIP")
            and nspec.get("type") != "ExternalName"
        ):
            raise status.invalid(
                rt,
                name,
                [
                    (
                        "FieldValueInvalid",
                        "spec.clusterIPs[0]",
                        f'Invalid value: []string{{"{nspec.get("clusterIP")}"}}: may not change once set',
                    )
                ],
            )
        if not nspec.get("clusterIP") and nspec.get("type") != "ExternalName":
            others = [
                s for s in self.store.list(SERVICES)[0] if s["metadata"]["uid"] != old["metadata"]["uid"]
            ]
            allocators.allocate_cluster_ip(rt, name, nspec, allocators.used_ips(others))
        others = [s for s in self.store.list(SERVICES)[0] if s["metadata"]["uid"] != old["metadata"]["uid"]]
        allocators.allocate_node_ports(rt, name, nspec, allocators.used_node_ports(others))

    # -- patch -------------------------------------------------------------------------------

    def patch(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        patch_type: str,
        body: Any,
        subresource: str | None = None,
        opts: WriteOptions = WriteOptions(),
    ) -> Written:
        with self.store.lock:
            old = self.store.get(rt, ns, name)
            if old is None:
                if (
                    patch_type == "application/apply-patch+yaml"
                    and subresource is None
                    and isinstance(body, dict)
                ):
                    return self.create(rt, ns, body, opts)
                raise status.not_found(rt, name)
            new = apply_patch(old, patch_type, body)
            if isinstance(new, dict) and isinstance(new.get("metadata"), dict):
                patched_rv = new["metadata"].get("resourceVersion")
                if patched_rv == old["metadata"]["resourceVersion"]:
                    new["metadata"].pop("resourceVersion")
            return self._replace(rt, old, new, subresource, opts)

    # -- delete ------------------------------------------------------------------------------

    def delete(self, rt: ResourceType, ns: str, name: str, opts: DeleteOptions = DeleteOptions()) -> Obj:
        """Delete or mark for deletion; returns the object (still present or gone) or a Success Status."""
        with self.store.lock:
            old = self.store.get(rt, ns, name)
            if old is None:
                raise status.not_found(rt, name)
            meta = old["metadata"]
            if opts.uid and opts.uid != meta.get("uid"):
                raise ApiConflictPrecondition(
                    rt, name, f"UID in precondition: {opts.uid}, UID in object meta: {meta.get('uid')}"
                )
            if opts.resource_version and opts.resource_version != meta.get("resourceVersion"):
                raise ApiConflictPrecondition(
                    rt,
                    name,
                    f"ResourceVersion in precondition: {opts.resource_version}, "
                    f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
                )
            finalizers = list(meta.get("finalizers") or [])
            if opts.propagation == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
            elif opts.propagation == "Orphan" and "orphan" not in finalizers:
                finalizers.append("orphan")
            if rt.kind == "Namespace":
                return self._delete_namespace(old, finalizers, opts)
            outcome = graceful.before_delete(rt, old, opts.grace_period)
            if outcome is graceful.Outcome.PENDING:
                return old
            if outcome is graceful.Outcome.MARKED:
                return self._mark_graceful(rt, old, finalizers, opts)
            if not finalizers:
                if opts.dry_run:
                    return old if rt.kind in _RETURNS_OBJECT_ON_DELETE else success_status(rt, old)
                gone = self.store.delete(rt, ns, name)
                assert gone is not None
                return gone if rt.kind in _RETURNS_OBJECT_ON_DELETE else success_status(rt, gone)
            if meta.get("deletionTimestamp"):
                if finalizers == list(meta.get("finalizers") or []):
                    return old
            else:
                meta["deletionTimestamp"] = now()
                meta["deletionGracePeriodSeconds"] = 0
            meta["finalizers"] = finalizers
            if opts.dry_run:
                return old
            return self.store.update(rt, old)

    def _mark_graceful(self, rt: ResourceType, obj: Obj, finalizers: list[str], opts: DeleteOptions) -> Obj:
        """Store a graceful deletion mark (MODIFIED), or remove the object when a shortened grace
        reached 0 and no finalizer holds it (the kubelet's final DELETE)."""
        meta = obj["metadata"]
        if finalizers:
            meta["finalizers"] = finalizers
        if opts.dry_run:
            return obj
        if not meta["deletionGracePeriodSeconds"] and not finalizers:
            gone = self.store.delete(rt, meta.get("namespace", ""), meta["name"])
            assert gone is not None
            return gone
        return self.store.update(rt, obj)

    def _delete_namespace(self, old: Obj, finalizers: list[str], opts: DeleteOptions) -> Obj:
        meta = old["metadata"]
        if opts.dry_run:
            return old
        if not finalizers and not _ns_finalizers(old):
            gone = self.store.delete(NAMESPACES, "", meta["name"])
            assert gone is not None
            return gone
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = now()
            meta["deletionGracePeriodSeconds"] = 0
        meta["finalizers"] = finalizers
        if not finalizers:
            meta.pop("finalizers")
        old.setdefault("status", {})["phase"] = "Terminating"
        return self.store.update(NAMESPACES, old)

    def delete_collection(
        self,
        rt: ResourceType,
        ns: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        opts: DeleteOptions,
    ) -> list[Obj]:
        items, _, _ = self.list_objects(rt, ns, labels, fields)
        out = []
        for obj in items:
            meta = obj["metadata"]
            try:
                out.append(self.delete(rt, meta.get("namespace", ""), meta["name"], opts))
            except status.ApiError as err:
                if err.code != 404:
                    raise
        return out

    # -- subresources ------------------------------------------------------------------------

    def finalize_namespace(self, name: str, body: Obj, opts: WriteOptions = WriteOptions()) -> Obj:
        with self.store.lock:
            old = self.get(NAMESPACES, "", name)
            want_rv = (body.get("metadata") or {}).get("resourceVersion")
            if want_rv and str(want_rv) != old["metadata"]["resourceVersion"]:
                raise status.conflict(NAMESPACES, name)
            new = clone_obj(old)
            new.setdefault("spec", {})["finalizers"] = list((body.get("spec") or {}).get("finalizers") or [])
            if new == old:
                return old
            if opts.dry_run:
                return new
            if (
                new["metadata"].get("deletionTimestamp")
                and not _ns_finalizers(new)
                and not new["metadata"].get("finalizers")
            ):
                gone = self.store.delete(NAMESPACES, "", name)
                assert gone is not None
                return gone
            return self.store.update(NAMESPACES, new)

    def get_scale(self, rt: ResourceType, ns: str, name: str) -> Obj:
        if rt.kind not in _SCALABLE:
            raise status.path_not_found()
        return scale_of(self.get(rt, ns, name))

    def update_scale(self, rt: ResourceType, ns: str, name: str, scale: Obj, opts: WriteOptions) -> Obj:
        with self.store.lock:
            old = self.get(rt, ns, name)
            want_rv = (scale.get("metadata") or {}).get("resourceVersion")
            if want_rv and str(want_rv) != old["metadata"]["resourceVersion"]:
                raise status.conflict(rt, name)
            replicas = (scale.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise status.invalid(
                    rt,
                    name,
                    [
                        (
                            "FieldValueInvalid",
                            "spec.replicas",
                            f"Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0",
                        )
                    ],
                )
            new = clone_obj(old)
            new["spec"]["replicas"] = replicas
            return scale_of(self._replace(rt, old, new, None, opts).obj)

    def patch_scale(
        self, rt: ResourceType, ns: str, name: str, patch_type: str, body: Any, opts: WriteOptions
    ) -> Obj:
        with self.store.lock:
            current = self.get_scale(rt, ns, name)
            new = apply_patch(current, patch_type, body)
            return self.update_scale(rt, ns, name, new, opts)

    def bind(self, ns: str, name: str, binding: Obj) -> Obj:
        target = (binding.get("target") or {}).get("name")
        if not target:
            raise status.invalid(PODS, name, [("FieldValueRequired", "target.name", "Required value")])
        with self.store.lock:
            pod = self.get(PODS, ns, name)
            if pod["metadata"].get("deletionTimestamp"):
                raise status.ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is being deleted, '
                    "cannot be assigned to a host",
                )
            if pod["spec"].get("nodeName"):
                raise status.ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is already assigned '
                    f'to node "{pod["spec"]["nodeName"]}"',
                    {"name": name, "kind": "pods/binding"},
                )
            pod["spec"]["nodeName"] = target
            conds = [
                c
                for c in pod.setdefault("status", {}).get("conditions", [])
                if c.get("type") != "PodScheduled"
            ]
            conds.append(
                {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now()}
            )
            pod["status"]["conditions"] = conds
            self.store.update(PODS, pod)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


class ApiConflictPrecondition(status.ApiError):
    def __init__(self, rt: ResourceType, name: str, why: str) -> None:
        super().__init__(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {rt.qualified} "{name}": Precondition failed: {why}',
            {"name": name, **({"group": rt.group} if rt.group else {}), "kind": rt.plural},
        )


def apply_patch(old: Obj, patch_type: str, body: Any) -> Any:
    try:
        if patch_type == "application/json-patch+json":
            return patch.json_patch(old, body)
        if patch_type == "application/merge-patch+json":
            return patch.merge_patch(old, body)
        if patch_type in ("application/strategic-merge-patch+json", "application/apply-patch+yaml"):
            return patch.strategic_merge(old, body)
    except patch.PatchError as err:
        raise status.ApiError(422, "Invalid", str(err)) from None
    except (TypeError, AttributeError) as err:
        raise status.bad_request(f"invalid patch: {err}") from None
    raise status.ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, "
        f"application/strategic-merge-patch+json (got {patch_type})",
    )


def scale_of(obj: Obj) -> Obj:
    meta = obj["metadata"]
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    selector = spec.get("selector") or {}
    from clusters.lab.api.selectors import from_label_selector

    sel = (
        from_label_selector(selector)
        if isinstance(selector.get("matchLabels"), dict) or selector.get("matchExpressions")
        else None
    )
    sel_text = ",".join(f"{r.key}={r.values[0]}" for r in sel.requirements if r.op == "=") if sel else ""
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace", ""),
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": spec.get("replicas", 1)},
        "status": {"replicas": st.get("replicas", 0), "selector": sel_text},
    }


def _spec_of(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _finalizers(obj: Obj) -> list[str]:
    """Everything that holds a marked object: metadata.finalizers, and a namespace's spec ones."""
    return list(obj["metadata"].get("finalizers") or []) + _ns_finalizers(obj)


def _ns_finalizers(obj: Obj) -> list[str]:
    if obj.get("kind") != "Namespace":
        return []
    return list((obj.get("spec") or {}).get("finalizers") or [])


def _ident(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return str(meta.get("namespace", "")), str(meta["name"])


def _allow_create_on_update(rt: ResourceType) -> bool:
    """The real registries whose PUT may create (AllowCreateOnUpdate)."""
    return rt.kind in _CREATE_ON_UPDATE
