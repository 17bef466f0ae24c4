"""The Node object a kubelet registers and the status it keeps posting.

Wording is the kubelet's (``pkg/kubelet/nodestatus/setters.go``) because the doctor and people
read it: Ready=False carries ``container runtime network not ready: NetworkReady=false
reason:NetworkPluginNotReady message:<the runtime's message>`` exactly as reference §3.1 records.
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from clusters.lab.kubelet.status import rfc3339
from clusters.lab.layout import CLUSTER_NAME
from clusters.lab.runtime import NetworkStatus

JSON = dict[str, Any]

KUBELET_VERSION = "v1.36.1"
"""kind v0.32.0's default node image (reference §1.1)."""
CONTAINER_RUNTIME_VERSION = "containerd://2.3.0"
CONTROL_PLANE_ROLE = "node-role.kubernetes.io/control-plane"
MAX_PODS = "110"
KUBELET_PORT = 10250


@dataclass(frozen=True)
class NodeIdentity:
    name: str
    internal_ip: str
    pod_cidr: str
    control_plane: bool
    taint_control_plane: bool


def _os_image() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _mem_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 8 * 1024 * 1024


def _stable_id(node: str, what: str) -> str:
    return hashlib.sha256(f"{CLUSTER_NAME}/{node}/{what}".encode()).hexdigest()[:32]


def node_labels(ident: NodeIdentity) -> dict[str, str]:
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": ident.name,
        "kubernetes.io/os": "linux",
    }
    if ident.control_plane:
        labels[CONTROL_PLANE_ROLE] = ""
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
    return labels


def node_taints(ident: NodeIdentity) -> list[JSON]:
    if ident.control_plane and ident.taint_control_plane:
        return [{"key": CONTROL_PLANE_ROLE, "effect": "NoSchedule"}]
    return []


def node_object(ident: NodeIdentity) -> JSON:
    """The Node the kubelet creates when it registers (kubeadm/kind-shaped)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": ident.name,
            "labels": node_labels(ident),
            "annotations": {
                "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {
            "podCIDR": ident.pod_cidr,
            "podCIDRs": [ident.pod_cidr],
            "providerID": f"kind://docker/{CLUSTER_NAME}/{ident.name}",
            "taints": node_taints(ident),
        },
    }


def _resources() -> JSON:
    return {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{_mem_kib()}Ki",
        "pods": MAX_PODS,
        "ephemeral-storage": "102400000Ki",
        "hugepages-2Mi": "0",
    }


def ready_condition(network: NetworkStatus) -> tuple[str, str, str]:
    """(status, reason, message) of the Ready condition for this runtime network state."""
    if network.ready:
        return "True", "KubeletReady", "kubelet is posting ready status"
    return (
        "False",
        "KubeletNotReady",
        "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
        f"message:{network.message}",
    )


def node_conditions(
    network: NetworkStatus, previous: Sequence[Mapping[str, Any]], now: datetime
) -> list[JSON]:
    stamp = rfc3339(now)
    old = {str(c.get("type")): c for c in previous}
    wanted = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", *ready_condition(network)),
    ]
    out = []
    for kind, status, reason, message in wanted:
        prior = old.get(kind)
        transition = stamp
        if prior is not None and prior.get("status") == status and prior.get("lastTransitionTime"):
            transition = str(prior["lastTransitionTime"])
        out.append(
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": transition,
            }
        )
    return out


def node_status(
    ident: NodeIdentity, network: NetworkStatus, previous: Sequence[Mapping[str, Any]], now: datetime
) -> JSON:
    """The whole ``status`` the kubelet owns (addresses, capacity, nodeInfo, conditions)."""
    resources = _resources()
    return {
        "addresses": [
            {"type": "InternalIP", "address": ident.internal_ip},
            {"type": "Hostname", "address": ident.name},
        ],
        "capacity": resources,
        "allocatable": dict(resources),
        "conditions": node_conditions(network, previous, now),
        "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
        "nodeInfo": {
            "machineID": _stable_id(ident.name, "machine"),
            "systemUUID": _stable_id(ident.name, "uuid"),
            "bootID": _stable_id(ident.name, "boot"),
            "kernelVersion": platform.release(),
            "osImage": _os_image(),
            "containerRuntimeVersion": CONTAINER_RUNTIME_VERSION,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


def conditions_changed(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> bool:
    def key(conds: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted((c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in conds)

    return key(old) != key(new)
