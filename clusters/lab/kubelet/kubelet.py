"""The lab kubelet: one per node, a client of the API server like the real one.

It talks to the API server only over HTTP through the official ``kubernetes`` client (plain
JSON at this edge, via :class:`clusters.lab.controllers.client.Kube`), watches the pods bound to
its node (``fieldSelector=spec.nodeName=<node>``), runs each through a :class:`PodWorker`, and
registers and heartbeats its Node with the Ready condition derived from the runtime's network
status. Sandboxes and processes come from a :class:`clusters.lab.runtime.NodeRuntime`.

Knowing differences from a real kubelet (DESIGN §4 fidelity): no cgroups, resource limits or
eviction; no preStop/postStart hooks; no sidecar (restartable init) containers; exec probes and
``kubectl exec`` targets run node binaries (only ``/agnhost`` maps to the lab program); state is in
memory, so a restarted kubelet starts the pods it finds again with fresh restart counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any

from kubernetes.client import ApiClient

from clusters.lab.controllers.client import MERGE_PATCH, Kube, is_not_found
from clusters.lab.controllers.events import NORMAL, EventRecorder
from clusters.lab.controllers.informer import Handlers, Informer
from clusters.lab.kubelet.klog import LOG_PATH as KLOG_PATH
from clusters.lab.kubelet.klog import KlogFile
from clusters.lab.kubelet.nodecontext import Clock, KubeletConfig, NodeContext, SystemClock
from clusters.lab.kubelet.nodestatus import (
    NodeIdentity,
    conditions_changed,
    node_labels,
    node_object,
    node_status,
)
from clusters.lab.kubelet.podworker import PodWorker
from clusters.lab.kubelet.probes import Connector, netns_connector
from clusters.lab.layout import CLUSTER_NAME, LabLayout, node_ip, node_netns, node_pod_cidr
from clusters.lab.runtime import NetworkStatus, NodeRuntime

log = logging.getLogger(__name__)

JSON = dict[str, Any]
FINISHED_MEMORY = 4096
"""How many terminated pod uids the kubelet remembers, so late updates never restart them."""


class ApiObjects:
    """:class:`clusters.lab.kubelet.env.ObjectSource` over the API (ConfigMaps, Secrets, Services)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def _get(self, path: str) -> JSON | None:
        try:
            return self.kube.get(path)
        except Exception as err:
            if is_not_found(err):
                return None
            raise

    def configmap(self, namespace: str, name: str) -> JSON | None:
        return self._get(f"/api/v1/namespaces/{namespace}/configmaps/{name}")

    def secret(self, namespace: str, name: str) -> JSON | None:
        return self._get(f"/api/v1/namespaces/{namespace}/secrets/{name}")

    def services(self, namespace: str) -> list[JSON]:
        body = self._get(f"/api/v1/namespaces/{namespace}/services") or {}
        return [s for s in body.get("items") or [] if isinstance(s, dict)]


def node_index(node: str) -> int:
    """The index kind naming implies (control-plane 0, worker 1, worker2 2, …)."""
    suffix = node.removeprefix(CLUSTER_NAME + "-")
    if suffix.startswith("control-plane"):
        return 0
    if suffix.startswith("worker"):
        rest = suffix.removeprefix("worker")
        return int(rest) if rest.isdigit() else 1
    return 0


class Kubelet:
    """Start with :meth:`start`; :meth:`stop` kills this node's containers and sandboxes."""

    def __init__(
        self,
        node: str,
        api_client: ApiClient,
        runtime: NodeRuntime,
        layout: LabLayout,
        clock: Clock | None = None,
        *,
        index: int | None = None,
        control_plane: bool | None = None,
        taint_control_plane: bool = False,
        config: KubeletConfig | None = None,
        connector: Connector | None = None,
    ) -> None:
        self.node = node
        self.runtime = runtime
        self.layout = layout
        self.clock: Clock = clock or SystemClock()
        self.config = config or KubeletConfig()
        idx = node_index(node) if index is None else index
        self.identity = NodeIdentity(
            name=node,
            internal_ip=str(node_ip(idx)),
            pod_cidr=str(node_pod_cidr(idx)),
            control_plane=(idx == 0) if control_plane is None else control_plane,
            taint_control_plane=taint_control_plane,
        )
        self.kube = Kube(api_client)
        self.recorder = EventRecorder(self.kube, "kubelet", host=node)
        self.klog = KlogFile(layout.node_fs(node) / KLOG_PATH)
        netns = str(getattr(runtime, "netns", "") or node_netns(node))
        self.ctx = NodeContext(
            node=node,
            host_ip=self.identity.internal_ip,
            layout=layout,
            runtime=runtime,
            kube=self.kube,
            recorder=self.recorder,
            objects=ApiObjects(self.kube),
            clock=self.clock,
            config=self.config,
            connect=connector or netns_connector(netns),
            get_pod=self._get_pod,
            klog=self.klog,
        )
        self.informer = Informer(
            self.kube, "/api/v1/pods", query=[("fieldSelector", f"spec.nodeName={node}")], resync=30.0
        )
        self._workers: dict[str, PodWorker] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._node_wake = threading.Event()
        self._node_thread = threading.Thread(target=self._node_loop, name=f"kubelet-node-{node}", daemon=True)
        self._reaper = threading.Thread(target=self._reap_loop, name=f"kubelet-reap-{node}", daemon=True)
        self._last_conditions: list[JSON] = []
        self._last_network: NetworkStatus | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self, *, wait: float = 10.0) -> None:
        """Register the node, then start syncing pods; waits for the first pod list."""
        self._register()
        self.recorder.event(self._node_ref(), NORMAL, "Starting", "Starting kubelet.")
        self._node_thread.start()
        self.informer.add_handlers(
            Handlers(on_add=self._on_pod, on_update=self._on_update, on_delete=self._on_delete)
        )
        self.informer.start()
        self._reaper.start()
        if not self.informer.wait_synced(wait):
            log.warning("kubelet %s: pod list not synced after %.0fs", self.node, wait)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop watching, kill every container (short grace) and release every sandbox."""
        self._stop.set()
        self._node_wake.set()
        self.informer.stop()
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            w.shutdown()
        deadline = time.monotonic() + timeout
        for w in workers:
            if not w.join(max(0.1, deadline - time.monotonic())):
                log.warning("kubelet %s: pod worker %s did not stop", self.node, w.key)
        self.informer.join(5.0)
        for thread in (self._node_thread, self._reaper):
            if thread.ident is not None:
                thread.join(5.0)
        self.recorder.flush(2.0)
        self.recorder.stop()

    def pod_workers(self) -> list[PodWorker]:
        with self._lock:
            return list(self._workers.values())

    # ---- pods ---------------------------------------------------------------------------------

    def _get_pod(self, key: str) -> JSON | None:
        return self.informer.get(key)

    def _on_pod(self, pod: JSON) -> None:
        if self._stop.is_set():
            return
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        with self._lock:
            if uid in self._finished:
                return  # terminated and deleted by us; later updates (finalizers) are not ours
            worker = self._workers.get(uid)
            if worker is None:
                worker = PodWorker(self.ctx, pod)
                self._workers[uid] = worker
                worker.start()
        worker.wake()

    def _on_update(self, old: JSON, new: JSON) -> None:
        old_uid = (old.get("metadata") or {}).get("uid")
        if old_uid != (new.get("metadata") or {}).get("uid"):
            self._wake_uid(str(old_uid))
        self._on_pod(new)

    def _on_delete(self, pod: JSON) -> None:
        self._wake_uid(str((pod.get("metadata") or {}).get("uid", "")))

    def _wake_uid(self, uid: str) -> None:
        with self._lock:
            worker = self._workers.get(uid)
        if worker is not None:
            worker.wake()

    def _reap_loop(self) -> None:
        """Forget workers whose pod is gone, so a pod recreated with the same name starts fresh."""
        while not self._stop.wait(1.0):
            with self._lock:
                for uid, worker in list(self._workers.items()):
                    if worker.done.is_set():
                        del self._workers[uid]
                        self._finished[uid] = None
                while len(self._finished) > FINISHED_MEMORY:
                    self._finished.popitem(last=False)

    # ---- node ---------------------------------------------------------------------------------

    def _node_ref(self) -> JSON:
        # Like the real kubelet: node events use the node name as uid, in namespace "default".
        return {"kind": "Node", "apiVersion": "v1", "metadata": {"name": self.node, "uid": self.node}}

    def _register(self) -> None:
        path = f"/api/v1/nodes/{self.node}"
        try:
            existing = self.kube.get(path)
        except Exception as err:
            if not is_not_found(err):
                raise
            self.kube.create("/api/v1/nodes", node_object(self.identity))
            log.info("kubelet %s: registered node", self.node)
        else:
            # Like the real kubelet on re-registration: default labels only; taints (the node
            # lifecycle controller's too) are left alone, and podCIDR is immutable once set.
            patch: JSON = {"metadata": {"labels": node_labels(self.identity)}}
            if not (existing.get("spec") or {}).get("podCIDR"):
                patch["spec"] = {"podCIDR": self.identity.pod_cidr, "podCIDRs": [self.identity.pod_cidr]}
            self.kube.patch(path, patch, MERGE_PATCH)
        self._post_node_status(force=True)

    def _network(self) -> NetworkStatus:
        try:
            return self.runtime.network_status()
        except Exception as err:
            return NetworkStatus(ready=False, message=f"Network plugin returns error: {err}")

    def _post_node_status(self, *, force: bool = False) -> None:
        network = self._network()
        status = node_status(self.identity, network, self._last_conditions, self.clock.now())
        changed = conditions_changed(self._last_conditions, status["conditions"])
        if not (changed or force):
            return
        self.kube.patch(f"/api/v1/nodes/{self.node}/status", {"status": status}, MERGE_PATCH)
        if not network.ready:
            self.klog.error(
                "kubelet.go:3002",
                "Container runtime network not ready",
                networkReady=f"NetworkReady=false reason:NetworkPluginNotReady message:{network.message}",
            )
        if self._last_network is None or self._last_network.ready != network.ready:
            reason = "NodeReady" if network.ready else "NodeNotReady"
            self.recorder.event(self._node_ref(), NORMAL, reason, f"Node {self.node} status is now: {reason}")
            self.klog.info(
                "kubelet_node_status.go:724", "Recording event message for node", node=self.node, event=reason
            )
        self._last_conditions = status["conditions"]
        self._last_network = network

    def _node_loop(self) -> None:
        last_beat = self.clock.monotonic()
        check = min(1.0, self.config.node_status_period)
        while not self._stop.wait(check):
            now = self.clock.monotonic()
            beat = now - last_beat >= self.config.node_status_period
            try:
                self._post_node_status(force=beat)
                if beat:
                    last_beat = now
            except Exception as err:
                log.warning("kubelet %s: node status update failed: %s", self.node, str(err).splitlines()[0])
