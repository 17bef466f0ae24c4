"""Shared fixture for the controller tests: a lab API server on a free port, three kind-like nodes
created through the API, the ControllerManager, and a stand-in kubelet that marks bound pods
Running and Ready (so Deployment availability and rolling updates progress, as on a cluster)."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import pytest

from clusters.lab.api.server import start_api_server, write_kubeconfig
from clusters.lab.controllers import ControllerManager
from clusters.lab.controllers.client import JSON, Kube, is_conflict, is_not_found, meta, now_iso
from clusters.lab.controllers.informer import Handlers, Informer
from clusters.lab.controllers.workqueue import ShutDown, WorkQueue

CP = "knetcheck-lab-control-plane"
W1 = "knetcheck-lab-worker"
W2 = "knetcheck-lab-worker2"
NODES = [CP, W1, W2]
CP_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
HASH_CHARS = "bcdfghjklmnpqrstvwxz2456789"

T = TypeVar("T")
DEPLOY = "/apis/apps/v1/namespaces/default/deployments"
RS = "/apis/apps/v1/namespaces/default/replicasets"


def eventually(fn: Callable[[], T | None], what: str, timeout: float = 10.0) -> T:
    """Deadline poll: return fn()'s first truthy value, or fail saying what never happened."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except AssertionError as err:
            last = err
        else:
            if last:
                return last
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def deployment(name: str, replicas: int) -> JSON:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.39"}]
                },
            },
        },
    }


def node_body(name: str) -> JSON:
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    spec: JSON = {}
    if name == CP:
        labels["node-role.kubernetes.io/control-plane"] = ""
        spec["taints"] = [dict(CP_TAINT)]
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "spec": spec}


def set_ready(kube: Kube, name: str, ready: bool) -> None:
    for _ in range(10):
        node = kube.get(f"/api/v1/nodes/{name}")
        node["status"] = {
            **(node.get("status") or {}),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": "KubeletReady" if ready else "KubeletNotReady",
                    "message": "kubelet is posting ready status"
                    if ready
                    else "container runtime network not ready",
                    "lastHeartbeatTime": now_iso(),
                    "lastTransitionTime": now_iso(),
                }
            ],
        }
        try:
            kube.update(f"/api/v1/nodes/{name}/status", node)
            return
        except Exception as err:
            if not is_conflict(err):
                raise


class FakeKubelet:
    """Marks bound pods Running + Ready through the status subresource, and finishes the graceful
    deletion of a bound pod as the kubelet does once its containers stopped (it runs none): a
    DELETE with grace 0 and the pod's uid as precondition, which removes it."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.queue = WorkQueue()
        self.pods = Informer(kube, "/api/v1/pods")
        self.pods.add_handlers(Handlers(self._seen, lambda _o, n: self._seen(n), None))
        self.thread = threading.Thread(target=self._work, name="fake-kubelet", daemon=True)

    def start(self) -> None:
        self.pods.start()
        self.thread.start()

    def stop(self) -> list[threading.Thread]:
        self.queue.shutdown()
        self.pods.stop()
        self.thread.join(5)
        alive = self.pods.join(5)
        return alive + ([self.thread] if self.thread.is_alive() else [])

    def _seen(self, pod: JSON) -> None:
        if not (pod.get("spec") or {}).get("nodeName"):
            return
        if meta(pod).get("deletionTimestamp") or (pod.get("status") or {}).get("phase") != "Running":
            self.queue.add(f"{meta(pod)['namespace']}/{meta(pod)['name']}")

    def _finish_deletion(self, key: str, pod: JSON) -> None:
        ns, name = key.split("/")
        try:
            self.kube.delete(
                f"/api/v1/namespaces/{ns}/pods/{name}",
                {"gracePeriodSeconds": 0, "preconditions": {"uid": meta(pod)["uid"]}},
            )
        except Exception as err:
            if getattr(err, "status", None) != 409:  # 409: a new pod of that name
                raise

    def _work(self) -> None:
        while True:
            try:
                key = self.queue.get()
            except ShutDown:
                return
            try:
                pod = self.pods.get(key)
                if pod is not None and meta(pod).get("deletionTimestamp"):
                    self._finish_deletion(key, pod)
                elif pod is not None and (pod.get("status") or {}).get("phase") != "Running":
                    fresh = copy.deepcopy(pod)
                    now = now_iso()
                    conds = [
                        c
                        for c in fresh.get("status", {}).get("conditions") or []
                        if c["type"] == "PodScheduled"
                    ]
                    conds += [
                        {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                        for t in ("Initialized", "Ready", "ContainersReady")
                    ]
                    fresh["status"] = {
                        **fresh.get("status", {}),
                        "phase": "Running",
                        "conditions": conds,
                        "startTime": now,
                    }
                    ns, name = key.split("/")
                    self.kube.update(f"/api/v1/namespaces/{ns}/pods/{name}/status", fresh)
            except Exception as err:
                if not is_not_found(err):
                    self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)


@dataclass
class Lab:
    kube: Kube
    manager: ControllerManager
    kubeconfig: Path

    def pods(self, ns: str = "default", selector: str = "") -> list[JSON]:
        query = [("labelSelector", selector)] if selector else None
        return list(self.kube.get(f"/api/v1/namespaces/{ns}/pods", query).get("items") or [])

    def list(self, path: str) -> list[JSON]:
        return list(self.kube.get(path).get("items") or [])

    def events(self, ns: str = "default") -> list[JSON]:
        return self.list(f"/api/v1/namespaces/{ns}/events")


@pytest.fixture(name="lab")
def lab_fixture(tmp_path: Path) -> Iterator[Lab]:
    srv = start_api_server(port=0)
    api_client = None
    manager = None
    kubelet = None
    try:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", srv.url)
        api_client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        kube = Kube(api_client)
        for name in NODES:
            kube.create("/api/v1/nodes", node_body(name))
            set_ready(kube, name, True)
        manager = ControllerManager(api_client)
        kubelet = FakeKubelet(kube)
        manager.start()
        kubelet.start()
        assert manager.wait_synced(10)
        yield Lab(kube, manager, kubeconfig)
    finally:
        leftover: list[str] = []
        if kubelet is not None:
            leftover += [t.name for t in kubelet.stop()]
        if manager is not None:
            leftover += manager.stop(timeout=5)
            leftover += [t.name for t in manager.threads() if t.is_alive()]
        if api_client is not None:
            api_client.close()
        srv.stop()
    assert not leftover, f"threads still running after stop: {leftover}"
