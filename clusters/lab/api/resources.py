"""The resources the lab API serves: one table, so discovery, routing and errors agree.

Each entry carries what discovery reports (names, short names, verbs) and what the REST layer
needs (scope, subresources, which fields a field selector may use).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
COMMON_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    """Field-selector labels beyond metadata.name/metadata.namespace."""
    categories: tuple[str, ...] = ()

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Store key: ``group/plural`` (core group is empty)."""
        return f"{self.group}/{self.plural}"

    @property
    def qualified(self) -> str:
        """How error messages name the resource: ``pods``, ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def field_labels(self) -> tuple[str, ...]:
        return COMMON_FIELDS + self.fields

    @property
    def verbs(self) -> tuple[str, ...]:
        if self.namespaced or self.plural != "namespaces":
            return ALL_VERBS
        return tuple(v for v in ALL_VERBS if v != "deletecollection")


_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)
_ALL = ("all",)

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "", "v1", "Namespace", "namespaces", False, ("ns",), ("status", "finalize"), ("status.phase",)
    ),
    ResourceType(
        "",
        "v1",
        "Pod",
        "pods",
        True,
        ("po",),
        ("status", "log", "proxy", "binding", "eviction", "exec", "attach", "portforward"),
        _POD_FIELDS,
        _ALL,
    ),
    ResourceType("", "v1", "Service", "services", True, ("svc",), ("status", "proxy"), (), _ALL),
    ResourceType("", "v1", "Endpoints", "endpoints", True, ("ep",)),
    ResourceType("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    ResourceType("", "v1", "Secret", "secrets", True, (), (), ("type",)),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",)),
    ResourceType("", "v1", "Event", "events", True, ("ev",), (), _EVENT_FIELDS),
    ResourceType("", "v1", "Node", "nodes", False, ("no",), ("status", "proxy"), ("spec.unschedulable",)),
    ResourceType("", "v1", "ResourceQuota", "resourcequotas", True, ("quota",), ("status",)),
    ResourceType("", "v1", "LimitRange", "limitranges", True, ("limits",)),
    ResourceType("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ("pvc",), ("status",)),
    ResourceType(
        "", "v1", "ReplicationController", "replicationcontrollers", True, ("rc",), ("status", "scale")
    ),
    ResourceType("apps", "v1", "Deployment", "deployments", True, ("deploy",), ("status", "scale"), (), _ALL),
    ResourceType(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        True,
        ("rs",),
        ("status", "scale"),
        ("status.replicas",),
        _ALL,
    ),
    ResourceType("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",), ("status",), (), _ALL),
    ResourceType("apps", "v1", "StatefulSet", "statefulsets", True, ("sts",), ("status", "scale"), (), _ALL),
    ResourceType("apps", "v1", "ControllerRevision", "controllerrevisions", True),
    ResourceType("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True),
    ResourceType("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ("netpol",)),
    ResourceType("networking.k8s.io", "v1", "Ingress", "ingresses", True, ("ing",), ("status",)),
    ResourceType("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False),
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases", True),
    ResourceType("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ("pdb",), ("status",)),
    ResourceType("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
)

GROUP_ORDER: tuple[str, ...] = tuple(dict.fromkeys(r.group for r in RESOURCES if r.group))


def find(group: str, version: str, plural: str) -> ResourceType | None:
    for rt in RESOURCES:
        if rt.group == group and rt.version == version and rt.plural == plural:
            return rt
    return None


def require(group: str, version: str, plural: str) -> ResourceType:
    """A resource this module defines (for module-level constants elsewhere)."""
    rt = find(group, version, plural)
    if rt is None:
        raise KeyError(f"{group}/{version}/{plural} is not served")
    return rt


def by_kind(api_version: str, kind: str) -> ResourceType | None:
    for rt in RESOURCES:
        if rt.api_version == api_version and rt.kind == kind:
            return rt
    return None


def by_plural(plural: str) -> ResourceType | None:
    """Look up by plural across groups (core first), for in-process callers like the store."""
    for rt in RESOURCES:
        if rt.plural == plural:
            return rt
    return None


def in_group(group: str, version: str) -> Iterator[ResourceType]:
    return (rt for rt in RESOURCES if rt.group == group and rt.version == version)
