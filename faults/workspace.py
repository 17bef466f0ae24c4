"""The namespace an experiment works in: ``kc-chaos-<run>``, labelled with the run id, so the
suites' namespace sweep and :mod:`faults.sweep` find it after a crash.

It holds the steady-state prober (an agnhost netexec pod that resolves names and dials Services
from inside the pod network), canary pods that must be scheduled after a fault to show it, and an
ingress demo app. Created on first use, deleted by the experiment's cleanup rollback.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from clusters.handle import Cluster
from clusters.labels import run_labels
from suites import namespaces

log = logging.getLogger(__name__)

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"
API_TIMEOUT = 30.0
ROLE_LABEL = "knetcheck.io/chaos-role"
TERMINATING_WAIT = 120.0


def namespace_name(run_id: str) -> str:
    return f"kc-chaos-{run_id.lower()}"[:63]


def ensure_namespace(cluster: Cluster, run_id: str) -> str:
    """The run's chaos namespace, created if missing."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    name = namespace_name(run_id)
    core: Any = client.CoreV1Api(cluster.api_client)
    deadline = time.monotonic() + TERMINATING_WAIT
    while True:
        try:
            ns = core.read_namespace(name, _request_timeout=API_TIMEOUT)
        except ApiException as exc:
            if exc.status != 404:
                raise
            try:
                namespaces.create(cluster, name, run_id)
                return name
            except ApiException as again:
                if again.status != 409:
                    raise
                continue
        if ns.metadata.deletion_timestamp is None:
            return name
        if time.monotonic() >= deadline:  # the previous experiment's cleanup is still going
            raise TimeoutError(f"namespace {name} is still terminating after {TERMINATING_WAIT:.0f}s")
        time.sleep(0.5)


def agnhost_pod(name: str, run_id: str, role: str, node: str | None = None) -> dict[str, Any]:
    """An agnhost netexec pod (HTTP 8080), Ready once it listens; ``node`` pins it (no scheduler)."""
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 0,
        "tolerations": [{"key": CONTROL_PLANE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
        "containers": [{
            "name": "agnhost",
            "image": AGNHOST,
            "args": ["netexec", "--http-port=8080", "--udp-port=8081"],
            "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
        }],
    }
    if node:
        spec["nodeName"] = node
    labels = {**run_labels(run_id), ROLE_LABEL: role}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


def pod_ready(pod: Any) -> bool:
    status = pod.status
    if status is None or status.phase != "Running" or not status.pod_ip:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


def ensure_pod(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core: Any = client.CoreV1Api(cluster.api_client)
    try:
        core.create_namespaced_pod(namespace, manifest, _request_timeout=API_TIMEOUT)
    except ApiException as exc:
        if exc.status != 409:
            raise


def wait_pod_ready(cluster: Cluster, namespace: str, name: str, timeout: float) -> Any | None:
    """The pod once Ready, or None at the deadline."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(cluster.api_client)
    deadline = time.monotonic() + timeout
    while True:
        try:
            pod = core.read_namespaced_pod(name, namespace, _request_timeout=API_TIMEOUT)
            if pod_ready(pod):
                return pod
        except ApiException as exc:
            if exc.status != 404:
                raise
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.5)


def delete_namespace(cluster: Cluster, run_id: str) -> bool:
    return namespaces.delete(cluster, namespace_name(run_id))
