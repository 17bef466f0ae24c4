"""One pod as every part of its worker sees it: who it is, its latest object, how to speak of it.

The sandbox, image, container, probe and status parts of a pod worker all post events on the
same pod object, write the same klog lines and take the same lock; this is the one place that
holds those, so each part needs only this scope and not the worker.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from clusters.lab.kubelet.containerstate import Container
from clusters.lab.kubelet.nodecontext import NodeContext

JSON = dict[str, Any]


class PodScope:
    def __init__(self, ctx: NodeContext, pod: JSON) -> None:
        self.ctx = ctx
        meta = pod["metadata"]
        self.uid = str(meta["uid"])
        self.namespace = str(meta.get("namespace", "default"))
        self.name = str(meta["name"])
        self.key = f"{self.namespace}/{self.name}"
        self.pod = pod
        """The latest pod object the worker synced (events and status are about this one)."""
        self.host_network = bool((pod.get("spec") or {}).get("hostNetwork"))
        self.lock = threading.Lock()
        """Guards the container fields probe threads write (ready, started) against status."""
        self.woken = threading.Event()
        """Set to make the worker sync now (informer event, probe result, stop)."""

    @property
    def ref(self) -> str:
        """How the kubelet names the pod in messages: ``<name>_<namespace>(<uid>)``."""
        return f"{self.name}_{self.namespace}({self.uid})"

    def monotonic(self) -> float:
        return self.ctx.clock.monotonic()

    def wall(self) -> datetime:
        return self.ctx.clock.now()

    def wake(self) -> None:
        self.woken.set()

    def current(self) -> JSON | None:
        """The informer's copy of this pod, or None once it is gone (or replaced by a new uid)."""
        pod = self.ctx.get_pod(self.key)
        if pod is None or str((pod.get("metadata") or {}).get("uid")) != self.uid:
            return None
        return pod

    def event(self, etype: str, reason: str, message: str, container: Container | None = None) -> None:
        ref = dict(self.pod)
        ref.setdefault("kind", "Pod")
        ref.setdefault("apiVersion", "v1")
        self.ctx.recorder.event(
            ref, etype, reason, message, field_path=container.field_path if container else ""
        )

    def sync_error(self, err: str) -> None:
        self.ctx.klog.error(
            "pod_workers.go:1301", "Error syncing pod, skipping", err=err, pod=self.key, podUID=self.uid
        )
