"""Runs the lab's kube-controller-manager and kube-scheduler in threads of this process.

They share nothing with the API server but HTTP: a dedicated ApiClient (with a connection pool
large enough for one long-lived watch per informer) built from the caller's configuration.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterable

from kubernetes.client import ApiClient

from clusters.errors import UsageProblem
from clusters.lab.controllers.base import Controller
from clusters.lab.controllers.client import Kube
from clusters.lab.controllers.daemonset import DaemonSetController
from clusters.lab.controllers.deployment import DeploymentController
from clusters.lab.controllers.endpoints import EndpointsController
from clusters.lab.controllers.endpointslice import EndpointSliceController
from clusters.lab.controllers.events import EventRecorder
from clusters.lab.controllers.gc import GarbageCollector
from clusters.lab.controllers.informer import InformerFactory
from clusters.lab.controllers.namespace import NamespaceController
from clusters.lab.controllers.nodelifecycle import NodeLifecycleController
from clusters.lab.controllers.replicaset import ReplicaSetController
from clusters.lab.controllers.scheduler import Scheduler
from clusters.lab.controllers.servicelb import ServiceLBController

log = logging.getLogger(__name__)

CONTROLLERS: dict[str, type[Controller]] = {
    "scheduler": Scheduler,
    "deployment": DeploymentController,
    "replicaset": ReplicaSetController,
    "daemonset": DaemonSetController,
    "garbagecollector": GarbageCollector,
    "namespace": NamespaceController,
    "nodelifecycle": NodeLifecycleController,
    "endpointslice": EndpointSliceController,
    "endpoint": EndpointsController,
    "servicelb": ServiceLBController,
}


class ControllerManager:
    """``start()`` and ``stop()`` are idempotent; ``stop()`` returns the names of threads that did
    not exit within ``timeout`` (empty when the shutdown was clean)."""

    def __init__(
        self,
        api_client: ApiClient,
        *,
        controllers: Iterable[str] | None = None,
        resync: float = 30.0,
    ) -> None:
        names = list(controllers) if controllers is not None else list(CONTROLLERS)
        unknown = [n for n in names if n not in CONTROLLERS]
        if unknown:
            raise UsageProblem(
                f"unknown lab controller(s) {', '.join(unknown)}; choose from {', '.join(CONTROLLERS)}"
            )
        cfg = copy.deepcopy(api_client.configuration)
        cfg.connection_pool_maxsize = max(64, int(cfg.connection_pool_maxsize or 0))
        self._api_client = ApiClient(cfg)
        self.kube = Kube(self._api_client)
        self.names = names
        self.resync = resync
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False
        self.factory = InformerFactory(self.kube, resync=resync)
        self.controllers: dict[str, Controller] = {}
        self.recorders: dict[str, EventRecorder] = {}

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            for name in self.names:
                cls = CONTROLLERS[name]
                recorder = EventRecorder(self.kube, cls.name)
                controller = cls(self.kube, self.factory, recorder)
                controller.setup()
                self.recorders[name] = recorder
                self.controllers[name] = controller
            self.factory.start()
            for controller in self.controllers.values():
                controller.start()
        log.info("lab controllers started: %s", ", ".join(self.names))

    def wait_synced(self, timeout: float) -> bool:
        return self.factory.wait_synced(timeout)

    def flush_events(self, timeout: float = 5.0) -> bool:
        return all(r.flush(timeout) for r in self.recorders.values())

    def threads(self) -> list[threading.Thread]:
        found: list[threading.Thread] = []
        for c in self.controllers.values():
            found += c.threads
        found += self.factory.threads
        for r in self.recorders.values():
            if r.thread is not None:
                found.append(r.thread)
        return found

    def stop(self, timeout: float = 5.0) -> list[str]:
        with self._lock:
            if self._stopped or not self._started:
                self._stopped = True
                return []
            self._stopped = True
        for c in self.controllers.values():
            c.stop()
        self.factory.stop()
        alive: list[threading.Thread] = []
        for c in self.controllers.values():
            alive += c.join(timeout)
        alive += self.factory.join(timeout)
        for r in self.recorders.values():
            r.stop(timeout)
            if r.thread is not None and r.thread.is_alive():
                alive.append(r.thread)
        self._api_client.close()  # type: ignore[no-untyped-call]
        names = [t.name for t in alive]
        if names:
            log.warning("lab controller threads still running after %.1fs: %s", timeout, ", ".join(names))
        else:
            log.info("lab controllers stopped")
        return names
