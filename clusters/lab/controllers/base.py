"""The shape every controller shares: informer handlers enqueue keys, workers reconcile a key from
the caches, a failure re-queues the key with exponential backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from clusters.lab.controllers.client import (
    JSON,
    Kube,
    controller_ref,
    describe_error,
    is_conflict,
    is_not_found,
    meta,
)
from clusters.lab.controllers.events import EventRecorder
from clusters.lab.controllers.informer import Informer, InformerFactory
from clusters.lab.controllers.workqueue import ShutDown, WorkQueue

log = logging.getLogger(__name__)

PODS = "/api/v1/pods"
NODES = "/api/v1/nodes"
NAMESPACES = "/api/v1/namespaces"
REPLICASETS = "/apis/apps/v1/replicasets"
DEPLOYMENTS = "/apis/apps/v1/deployments"
DAEMONSETS = "/apis/apps/v1/daemonsets"


class Controller:
    """Subclasses set :attr:`name`, register handlers in :meth:`setup` and implement :meth:`sync`."""

    name = "controller"

    def __init__(self, kube: Kube, factory: InformerFactory, recorder: EventRecorder, *, workers: int = 1):
        self.kube = kube
        self.factory = factory
        self.recorder = recorder
        self.queue = WorkQueue()
        self.workers = workers
        self._threads: list[threading.Thread] = []
        self._informers: list[Informer] = []
        self._stopping = threading.Event()

    def informer(self, path: str) -> Informer:
        inf = self.factory.informer(path)
        if inf not in self._informers:
            self._informers.append(inf)
        return inf

    def write_status(self, path: str, obj: JSON, key: str) -> None:
        """PUT ``obj`` to its status subresource at ``path``: a vanished object is fine, a conflict
        is logged and re-raised so the work queue retries with a fresh read."""
        try:
            self.kube.update(path, obj)
        except Exception as err:
            if is_not_found(err):
                return
            if is_conflict(err):
                log.debug("status of %s: conflict, will retry", key)
            raise

    def setup(self) -> None:
        raise NotImplementedError

    def sync(self, key: str) -> None:
        raise NotImplementedError

    def enqueue(self, obj: JSON) -> None:
        m = meta(obj)
        ns = m.get("namespace")
        self.queue.add(f"{ns}/{m.get('name')}" if ns else str(m.get("name")))

    def enqueue_controller(self, obj: JSON, kind: str) -> None:
        ref = controller_ref(obj)
        if ref and ref.get("kind") == kind:
            self.queue.add(f"{meta(obj).get('namespace')}/{ref.get('name')}")

    def start(self) -> None:
        if self._threads:
            return
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self) -> None:
        self._stopping.set()
        self.queue.shutdown()

    def join(self, timeout: float) -> list[threading.Thread]:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [t for t in self._threads if t.is_alive()]

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    def _work(self) -> None:
        # Like WaitForCacheSync: reconciling from a half-filled cache would delete or duplicate.
        for inf in self._informers:
            while not inf.synced.wait(0.05):
                if self._stopping.is_set():
                    return
        while True:
            try:
                key = self.queue.get()
            except ShutDown:
                return
            try:
                self.sync(key)
                self.queue.forget(key)
            except Exception as err:
                if self._stopping.is_set():
                    self.queue.done(key)
                    return
                if getattr(err, "status", None) == 409:
                    # A stale cache or a racing writer: expected, retried with backoff like the real ones.
                    log.debug("%s: sync %s conflicted; retrying", self.name, key)
                else:
                    log.warning("%s: sync %s failed: %s", self.name, key, describe_error(err))
                log.debug("%s: sync %s traceback", self.name, key, exc_info=True)
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)


@dataclass
class Expectations:
    """The real controllers' ControllerExpectations: after creating or deleting pods, do not count
    pods again until the informer has seen those changes, or a timeout passes."""

    ttl: float = 30.0
    _adds: dict[str, int] = field(default_factory=dict)
    _dels: dict[str, set[str]] = field(default_factory=dict)
    _at: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def expect(self, key: str, adds: int = 0, dels: set[str] | None = None) -> None:
        with self._lock:
            self._adds[key] = self._adds.get(key, 0) + adds
            self._dels.setdefault(key, set()).update(dels or set())
            self._at[key] = time.monotonic()

    def creation_observed(self, key: str) -> None:
        with self._lock:
            if key in self._adds:
                self._adds[key] -= 1

    def deletion_observed(self, key: str, pod_key: str) -> None:
        with self._lock:
            self._dels.get(key, set()).discard(pod_key)

    def satisfied(self, key: str) -> bool:
        with self._lock:
            if key not in self._at:
                return True
            if self._adds.get(key, 0) <= 0 and not self._dels.get(key):
                return True
            return time.monotonic() - self._at[key] > self.ttl

    def forget(self, key: str) -> None:
        with self._lock:
            self._adds.pop(key, None)
            self._dels.pop(key, None)
            self._at.pop(key, None)
