"""EndpointSlice controller: for every Service with a selector, discovery.k8s.io/v1 EndpointSlices
listing the selected pods, written the way kube-controller-manager's endpointslice controller
writes them (names ``<svc>-<5 random>``, its labels, a controller ownerReference to the Service,
per-endpoint ready/serving/terminating conditions, targetRef, nodeName, hostname, zone).

Like the real one, pods whose named targetPort resolves differently go to different slices (one
slice per distinct port list, at most 100 endpoints each), a Service with no endpoints gets one
placeholder slice without ports, a slice that is no longer needed is rewritten for a new port list
rather than deleted and created, and nothing is written when the computed slice equals the one
in the cache. Services without a selector (user-managed slices) and ExternalName Services are
left alone.

Lab differences, on purpose: no ``endpoints.kubernetes.io/last-change-trigger-time`` annotation,
no topology hints, IPv4 only; endpoints inside one port list are packed in address order rather
than kept in the slice they were first written to (same result below 100 endpoints per list).
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from clusters.lab.controllers.base import NODES, PODS, Controller
from clusters.lab.controllers.client import (
    JSON,
    describe_error,
    is_conflict,
    is_not_found,
    is_terminating_namespace,
    key_of,
    meta,
    split_key,
)
from clusters.lab.controllers.events import WARNING
from clusters.lab.controllers.informer import Handlers, Informer
from clusters.lab.controllers.matching import labels_match
from clusters.lab.controllers.pods import is_ready

log = logging.getLogger(__name__)

SERVICES = "/api/v1/services"
ENDPOINT_SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
LABEL_HEADLESS = "service.kubernetes.io/headless"
LABEL_ZONE = "topology.kubernetes.io/zone"
MAX_ENDPOINTS_PER_SLICE = 100
"""kube-controller-manager's --max-endpoints-per-slice default."""
_GENERATED_NAME_BASE = 58
"""The API server cuts a generateName base to 63 - 5 characters before adding the suffix."""


# -- pod and service facts shared with the Endpoints controller ---------------------------------


@dataclass(frozen=True, order=True)
class EndpointPort:
    """One resolved service port; hashable so a tuple of them can key a slice's port list."""

    name: str
    protocol: str
    port: int
    app_protocol: str = ""

    def to_slice(self) -> JSON:
        out: JSON = {"name": self.name, "protocol": self.protocol, "port": self.port}
        if self.app_protocol:
            out["appProtocol"] = self.app_protocol
        return out

    def to_endpoints(self) -> JSON:
        """core/v1 EndpointPort: an empty name is omitted there (omitempty), unlike in a slice."""
        out: JSON = {"protocol": self.protocol, "port": self.port}
        if self.name:
            out["name"] = self.name
        if self.app_protocol:
            out["appProtocol"] = self.app_protocol
        return out

    @classmethod
    def from_slice(cls, port: JSON) -> EndpointPort:
        return cls(
            str(port.get("name") or ""),
            str(port.get("protocol") or "TCP"),
            int(port.get("port") or 0),
            str(port.get("appProtocol") or ""),
        )


def service_selector(svc: JSON) -> dict[str, str] | None:
    """The Service's selector, or None when it has none (an empty map decodes to nil in Go)."""
    selector = (svc.get("spec") or {}).get("selector")
    return {str(k): str(v) for k, v in selector.items()} if isinstance(selector, dict) and selector else None


def manages_endpoints(svc: JSON) -> bool:
    """Whether the endpoint controllers write for this Service (selector set, not ExternalName)."""
    return (svc.get("spec") or {}).get("type") != "ExternalName" and service_selector(svc) is not None


def selects(svc: JSON, pod: JSON) -> bool:
    selector = service_selector(svc)
    if selector is None or meta(svc).get("namespace") != meta(pod).get("namespace"):
        return False
    return labels_match({"matchLabels": selector}, meta(pod).get("labels") or {})


def is_headless(svc: JSON) -> bool:
    """helper.IsServiceIPSet's negation: no cluster IP (``None`` or empty)."""
    return (svc.get("spec") or {}).get("clusterIP") in (None, "", "None")


def pod_ipv4(pod: JSON) -> str | None:
    status = pod.get("status") or {}
    candidates = [status.get("podIP")] + [
        p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)
    ]
    for ip in candidates:
        if not ip:
            continue
        try:
            if ipaddress.ip_address(str(ip)).version == 4:
                return str(ip)
        except ValueError:
            continue
    return None


def should_be_in_endpoints(pod: JSON, *, include_terminating: bool) -> bool:
    """endpointsliceutil.ShouldPodBeInEndpoints: not terminal, has an IP, and (optionally) not
    terminating."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    if pod_ipv4(pod) is None:
        return False
    return include_terminating or not meta(pod).get("deletionTimestamp")


def should_set_hostname(pod: JSON, svc: JSON) -> bool:
    """A pod's hostname is published when its subdomain names this Service (headless DNS)."""
    spec = pod.get("spec") or {}
    return (
        bool(spec.get("hostname"))
        and spec.get("subdomain") == meta(svc).get("name")
        and meta(pod).get("namespace") == meta(svc).get("namespace")
    )


def find_port(pod: JSON, svc_port: JSON) -> int | None:
    """podutil.FindPort: a number as is; a name looked up among the pod's container ports (and
    sidecar init containers) with the same protocol; None when the pod has no such port."""
    target = svc_port.get("targetPort", svc_port.get("port"))
    if isinstance(target, int):
        return target
    protocol = svc_port.get("protocol") or "TCP"
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or []) + [
        c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"
    ]
    for container in containers:
        for port in container.get("ports") or []:
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                return int(port.get("containerPort") or 0)
    return None


def endpoint_ports(svc: JSON, pod: JSON) -> tuple[EndpointPort, ...]:
    """One entry per service port the pod resolves, in the Service's order (getEndpointPorts)."""
    out: list[EndpointPort] = []
    for sp in (svc.get("spec") or {}).get("ports") or []:
        num = find_port(pod, sp)
        if num is None:
            log.debug("pod %s has no port %r for service %s", key_of(pod), sp.get("targetPort"), key_of(svc))
            continue
        out.append(
            EndpointPort(
                str(sp.get("name") or ""),
                str(sp.get("protocol") or "TCP"),
                num,
                str(sp.get("appProtocol") or ""),
            )
        )
    return tuple(out)


def target_ref(pod: JSON) -> JSON:
    m = meta(pod)
    return {
        "kind": "Pod",
        "namespace": m.get("namespace", ""),
        "name": m.get("name", ""),
        "uid": m.get("uid", ""),
    }


def services_selecting(services: Informer, *pods: JSON) -> set[str]:
    """Keys of the Services (in the pods' namespace) that select any of ``pods``."""
    keys: set[str] = set()
    for pod in pods:
        for svc in services.objects(meta(pod).get("namespace")):
            if selects(svc, pod):
                keys.add(key_of(svc))
    return keys


def _rv(obj: JSON | None) -> int:
    try:
        return int(meta(obj or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class CacheView(Protocol):
    """What :class:`WriteTracker` reads of an informer."""

    resource_version: str

    def get(self, key: str) -> JSON | None: ...


@dataclass
class WriteTracker:
    """The real controllers' stale-cache guard: after writing objects for a Service, do not
    reconcile it again until the informer has caught up with those writes (or ``ttl`` passes),
    or a sync computed from an old cache would create duplicates or undo the write.

    A create or update is caught up once the informer's watch has reached the write's
    resourceVersion (the lab's are one ordered counter; a real controller compares generations),
    a delete once the object has left the cache."""

    ttl: float = 10.0
    _writes: dict[str, dict[str, tuple[int, float]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    DELETED = -1

    def wrote(self, svc_key: str, obj_key: str, rv: int) -> None:
        with self._lock:
            self._writes.setdefault(svc_key, {})[obj_key] = (rv, time.monotonic())

    def stale(self, svc_key: str, cache: CacheView) -> bool:
        with self._lock:
            writes = self._writes.get(svc_key)
            if not writes:
                return False
            now = time.monotonic()
            try:
                seen = int(cache.resource_version or 0)
            except ValueError:
                seen = 0
            for obj_key, (rv, at) in list(writes.items()):
                cached = cache.get(obj_key)
                if rv == self.DELETED:
                    caught_up = cached is None
                else:
                    caught_up = seen >= rv or (cached is not None and _rv(cached) >= rv)
                if caught_up or now - at > self.ttl:
                    del writes[obj_key]
            if not writes:
                del self._writes[svc_key]
                return False
            return True

    def forget(self, svc_key: str) -> None:
        with self._lock:
            self._writes.pop(svc_key, None)


# -- the controller -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Want:
    """One slice the Service should have: a port list and up to 100 endpoints."""

    ports: tuple[EndpointPort, ...]
    endpoints: tuple[JSON, ...]


def _slice_ports(sl: JSON) -> tuple[EndpointPort, ...]:
    return tuple(EndpointPort.from_slice(p) for p in sl.get("ports") or [] if isinstance(p, dict))


def _owned_by(sl: JSON, svc: JSON) -> bool:
    uid = meta(svc).get("uid")
    return any(
        ref.get("kind") == "Service" and ref.get("uid") == uid and ref.get("controller")
        for ref in meta(sl).get("ownerReferences") or []
    )


class ServiceBackendsController(Controller):
    """What the Endpoints and EndpointSlice controllers share: a Service is reconciled when it
    changes or when a pod it selects (before or after the change) changes, and a write tracker
    holds back a sync from an informer that has not yet seen the controller's last writes."""

    def watch_services_and_pods(self) -> None:
        self.tracker = WriteTracker()
        self.services = self.informer(SERVICES)
        self.pods = self.informer(PODS)
        self.services.add_handlers(Handlers(self.enqueue, lambda _o, n: self.enqueue(n), self.enqueue))
        self.pods.add_handlers(
            Handlers(self._pod_changed, lambda o, n: self._pod_changed(o, n), self._pod_changed)
        )

    def _pod_changed(self, *pods: JSON) -> None:
        for key in services_selecting(self.services, *pods):
            self.queue.add(key)


class EndpointSliceController(ServiceBackendsController):
    name = "endpoint-slice-controller"

    def setup(self) -> None:
        self.watch_services_and_pods()
        self.slices = self.informer(ENDPOINT_SLICES)
        self.nodes = self.informer(NODES)
        self.slices.add_handlers(
            Handlers(self._slice_changed, lambda _o, n: self._slice_changed(n), self._slice_changed)
        )

    def _slice_changed(self, sl: JSON) -> None:
        labels = meta(sl).get("labels") or {}
        if labels.get(LABEL_MANAGED_BY) == MANAGED_BY and labels.get(LABEL_SERVICE_NAME):
            self.queue.add(f"{meta(sl).get('namespace')}/{labels[LABEL_SERVICE_NAME]}")

    def _managed_slices(self, ns: str, name: str) -> list[JSON]:
        return sorted(
            (
                s
                for s in self.slices.objects(ns)
                if (meta(s).get("labels") or {}).get(LABEL_SERVICE_NAME) == name
                and (meta(s).get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY
            ),
            key=lambda s: str(meta(s).get("name")),
        )

    def sync(self, key: str) -> None:
        ns, name = split_key(key)
        ns = ns or ""
        svc = self.services.get(key)
        if svc is None:
            # The garbage collector would remove them through the ownerReference; doing it here
            # makes a deleted Service lose its endpoints at once, as kube-proxy expects.
            for sl in self._managed_slices(ns, name):
                self._delete(key, sl)
            self.tracker.forget(key)
            return
        if not manages_endpoints(svc) or meta(svc).get("deletionTimestamp"):
            return
        if self.tracker.stale(key, self.slices):
            self.queue.add_after(key, 0.05)
            return
        wants = self._desired(svc)
        existing = self._managed_slices(ns, name)
        reuse: dict[tuple[EndpointPort, ...], list[JSON]] = {}
        leftovers: list[JSON] = []
        for sl in existing:
            if _owned_by(sl, svc):
                reuse.setdefault(_slice_ports(sl), []).append(sl)
            else:
                leftovers.append(sl)  # left by an earlier Service of the same name
        updates: list[tuple[JSON, _Want]] = []
        creates: list[_Want] = []
        for want in wants:
            same = reuse.get(want.ports)
            if same:
                updates.append((same.pop(0), want))
            else:
                creates.append(want)
        spare = [sl for group in reuse.values() for sl in group]
        # finalize(): a slice that would be deleted is rewritten as one that would be created.
        while creates and spare:
            updates.append((spare.pop(0), creates.pop(0)))
        for sl, want in updates:
            self._update(key, svc, sl, want)
        for want in creates:
            self._create(key, svc, want)
        for sl in spare + leftovers:
            self._delete(key, sl)

    def _desired(self, svc: JSON) -> list[_Want]:
        groups: dict[tuple[EndpointPort, ...], list[JSON]] = {}
        for pod in self.pods.objects(meta(svc).get("namespace")):
            if not selects(svc, pod) or not should_be_in_endpoints(pod, include_terminating=True):
                continue
            groups.setdefault(endpoint_ports(svc, pod), []).append(self._endpoint(svc, pod))
        wants: list[_Want] = []
        for ports in sorted(groups):
            eps = sorted(
                groups[ports], key=lambda e: (ipaddress.ip_address(e["addresses"][0]), e["targetRef"]["name"])
            )
            for i in range(0, len(eps), MAX_ENDPOINTS_PER_SLICE):
                wants.append(_Want(ports, tuple(eps[i : i + MAX_ENDPOINTS_PER_SLICE])))
        return wants or [_Want((), ())]  # the placeholder slice

    def _endpoint(self, svc: JSON, pod: JSON) -> JSON:
        publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
        serving = is_ready(pod)
        terminating = bool(meta(pod).get("deletionTimestamp"))
        ready = publish or (serving and not terminating)
        ep: JSON = {
            "addresses": [pod_ipv4(pod)],
            "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
            "targetRef": target_ref(pod),
        }
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name:
            ep["nodeName"] = node_name
            zone = (meta(self.nodes.get(str(node_name)) or {}).get("labels") or {}).get(LABEL_ZONE)
            if zone:
                ep["zone"] = zone
        if should_set_hostname(pod, svc):
            ep["hostname"] = pod["spec"]["hostname"]
        return ep

    def _labels(self, svc: JSON) -> dict[str, str]:
        reserved = (LABEL_SERVICE_NAME, LABEL_MANAGED_BY, LABEL_HEADLESS)
        labels = {k: v for k, v in (meta(svc).get("labels") or {}).items() if k not in reserved}
        if is_headless(svc):
            labels[LABEL_HEADLESS] = ""
        labels[LABEL_SERVICE_NAME] = str(meta(svc).get("name"))
        labels[LABEL_MANAGED_BY] = MANAGED_BY
        return labels

    def _owner(self, svc: JSON) -> JSON:
        m = meta(svc)
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "name": m.get("name", ""),
            "uid": m.get("uid", ""),
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def _body(self, svc: JSON, want: _Want, base: JSON | None) -> JSON:
        body = copy.deepcopy(base) if base is not None else {"metadata": {}}
        body["apiVersion"] = "discovery.k8s.io/v1"
        body["kind"] = "EndpointSlice"
        m = body["metadata"]
        m["namespace"] = meta(svc).get("namespace")
        m["labels"] = self._labels(svc)
        m["ownerReferences"] = [self._owner(svc)]
        body["addressType"] = "IPv4"
        body["endpoints"] = [copy.deepcopy(e) for e in want.endpoints]
        if want.ports:
            body["ports"] = [p.to_slice() for p in want.ports]
        else:
            body.pop("ports", None)
        return body

    @staticmethod
    def _same(current: JSON, wanted: JSON) -> bool:
        cm, wm = meta(current), meta(wanted)
        return (
            (cm.get("labels") or {}) == wm.get("labels")
            and (cm.get("ownerReferences") or []) == wm.get("ownerReferences")
            and current.get("addressType") == wanted.get("addressType")
            and (current.get("endpoints") or []) == wanted.get("endpoints")
            and (current.get("ports") or []) == (wanted.get("ports") or [])
        )

    def _path(self, ns: str, name: str = "") -> str:
        url = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
        return f"{url}/{name}" if name else url

    def _create(self, key: str, svc: JSON, want: _Want) -> None:
        body = self._body(svc, want, None)
        body["metadata"]["generateName"] = f"{meta(svc).get('name')}-"[:_GENERATED_NAME_BASE]
        ns = str(meta(svc).get("namespace"))
        try:
            created = self.kube.create(self._path(ns), body)
        except Exception as err:
            if is_terminating_namespace(err):
                return
            self._failed(svc, err)
            raise
        self.tracker.wrote(key, key_of(created), _rv(created))
        log.debug("created EndpointSlice %s for %s", key_of(created), key)

    def _update(self, key: str, svc: JSON, current: JSON, want: _Want) -> None:
        body = self._body(svc, want, current)
        if self._same(current, body):
            return
        ns, name = str(meta(current).get("namespace")), str(meta(current).get("name"))
        try:
            written = self.kube.update(self._path(ns, name), body)
        except Exception as err:
            if not (is_conflict(err) or is_not_found(err)):
                self._failed(svc, err)
            raise
        self.tracker.wrote(key, key_of(written), _rv(written))

    def _delete(self, key: str, sl: JSON) -> None:
        m = meta(sl)
        try:
            self.kube.delete(self._path(str(m.get("namespace")), str(m.get("name"))))
        except Exception as err:
            if is_not_found(err):
                return
            raise
        self.tracker.wrote(key, key_of(sl), WriteTracker.DELETED)

    def _failed(self, svc: JSON, err: BaseException) -> None:
        self.recorder.event(
            svc,
            WARNING,
            "FailedToUpdateEndpointSlices",
            f"Error updating Endpoint Slices for Service {key_of(svc)}: {describe_error(err)}",
        )
