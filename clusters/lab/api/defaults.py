"""Server-side defaults, as the real apiserver applies them on create and update.

Clients and controllers read these fields back (``kubectl get -o yaml`` shows them, kube-proxy
relies on ``protocol: TCP``), so an object stored by the lab must look like one stored by a
real cluster. Only defaults with a visible effect are applied.
"""

from __future__ import annotations

import base64
from typing import Any

Obj = dict[str, Any]

_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
DEFAULT_TOLERATIONS = (
    {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
    {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
)


def _probe(probe: Obj) -> None:
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("path", "/")
        probe["httpGet"].setdefault("scheme", "HTTP")


def _container(c: Obj) -> None:
    image = str(c.get("image", ""))
    last = image.rsplit("/", 1)[-1]
    if "imagePullPolicy" not in c:
        tagged = ":" in last and not last.endswith(":latest")
        c["imagePullPolicy"] = "IfNotPresent" if tagged or "@" in last else "Always"
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for env in c.get("env") or []:
        ref = env.get("valueFrom", {}).get("fieldRef") if isinstance(env, dict) else None
        if isinstance(ref, dict):
            ref.setdefault("apiVersion", "v1")
    for name in _PROBES:
        if isinstance(c.get(name), dict):
            _probe(c[name])


def pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                _container(c)
    for vol in spec.get("volumes") or []:
        if not isinstance(vol, dict):
            continue
        for kind in ("configMap", "secret"):
            if isinstance(vol.get(kind), dict):
                vol[kind].setdefault("defaultMode", 420)
        if isinstance(vol.get("hostPath"), dict):
            vol["hostPath"].setdefault("type", "")
        if "emptyDir" in vol and vol["emptyDir"] is None:
            vol["emptyDir"] = {}


def pod(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    pod_spec(spec)
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = sa
    spec["serviceAccount"] = sa
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    have = {(t.get("key"), t.get("effect")) for t in tolerations if isinstance(t, dict)}
    for tol in DEFAULT_TOLERATIONS:
        if (tol["key"], tol["effect"]) not in have:
            tolerations.append(dict(tol))
    status = obj.setdefault("status", {})
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", qos_class(spec))


def qos_class(spec: Obj) -> str:
    containers = [c for c in (spec.get("containers") or []) + (spec.get("initContainers") or []) if c]
    requests = [c.get("resources", {}).get("requests") or {} for c in containers]
    limits = [c.get("resources", {}).get("limits") or {} for c in containers]
    if not any(requests) and not any(limits):
        return "BestEffort"
    guaranteed = all(
        lim.get(r) is not None and (req.get(r) in (None, lim.get(r)))
        for req, lim in zip(requests, limits, strict=True)
        for r in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _template(obj: Obj) -> None:
    template = obj.setdefault("spec", {}).setdefault("template", {})
    pod_spec(template.setdefault("spec", {}))
    template.setdefault("metadata", {}).setdefault("creationTimestamp", None)


def deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy["type"] = "RollingUpdate"
        ru = strategy.setdefault("rollingUpdate", {})
        ru.setdefault("maxUnavailable", "25%")
        ru.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _template(obj)


def replicaset(obj: Obj) -> None:
    obj.setdefault("spec", {}).setdefault("replicas", 1)
    _template(obj)


def daemonset(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy["type"] = "RollingUpdate"
        ru = strategy.setdefault("rollingUpdate", {})
        ru.setdefault("maxUnavailable", 1)
        ru.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    _template(obj)


def statefulset(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if strategy.get("type") == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {"partition": 0})
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
    _template(obj)


def service(obj: Obj) -> None:
    """Field defaults; IP and port allocation is the allocator's job (see rest)."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    if spec["type"] != "ExternalName":
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


def namespace(obj: Obj) -> None:
    name = obj["metadata"]["name"]
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")


def secret(obj: Obj) -> None:
    """``stringData`` is write-only: the API server merges it into ``data`` (base64, winning over
    the same key in ``data``) and never stores or returns it."""
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = obj.get("data") or {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data


def network_policy(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if "policyTypes" not in spec:
        types = ["Ingress"]
        if spec.get("egress"):
            types.append("Egress")
        spec["policyTypes"] = types


def _ports_tcp(items: list[Any] | None) -> None:
    for port in items or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")


def endpoints(obj: Obj) -> None:
    for subset in obj.get("subsets") or []:
        _ports_tcp(subset.get("ports"))


def endpointslice(obj: Obj) -> None:
    _ports_tcp(obj.get("ports"))


def node(obj: Obj) -> None:
    obj.setdefault("spec", {})
    obj.setdefault("status", {})


BY_KIND = {
    "Pod": pod,
    "Deployment": deployment,
    "ReplicaSet": replicaset,
    "DaemonSet": daemonset,
    "StatefulSet": statefulset,
    "Service": service,
    "Namespace": namespace,
    "Secret": secret,
    "NetworkPolicy": network_policy,
    "Endpoints": endpoints,
    "EndpointSlice": endpointslice,
    "Node": node,
}


def apply(obj: Obj) -> None:
    fn = BY_KIND.get(str(obj.get("kind")))
    if fn is not None:
        fn(obj)
