"""The legacy core/v1 Endpoints controller: one Endpoints object per Service with a selector, named
like the Service, as kube-controller-manager's endpoint controller writes it.

``kubectl describe service`` and the doctor read it. Ready pods go to ``addresses``, the others to
``notReadyAddresses`` (all to ``addresses`` with publishNotReadyAddresses); terminating pods are
left out unless publishNotReadyAddresses; addresses carry nodeName, targetRef and the hostname
of pods whose subdomain names the Service. Subsets are repacked as ``RepackSubsets`` does: one
subset per distinct set of addresses, listing every port those addresses serve. Labels are the
Service's, plus ``service.kubernetes.io/headless`` for headless Services and the
``endpoints.kubernetes.io/managed-by: endpoint-controller`` label Kubernetes >= 1.33 adds.

Lab differences: no last-change-trigger-time annotation and no 1000-address truncation; on
Service deletion only Endpoints carrying the managed-by label are deleted (the real controller
also removes unlabelled ones), so objects a test or user wrote by hand are never touched.
"""

from __future__ import annotations

import copy
import ipaddress
import logging

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
from clusters.lab.controllers.endpointslice import (
    LABEL_HEADLESS,
    EndpointPort,
    ServiceBackendsController,
    endpoint_ports,
    is_headless,
    manages_endpoints,
    pod_ipv4,
    selects,
    should_be_in_endpoints,
    should_set_hostname,
    target_ref,
)
from clusters.lab.controllers.events import WARNING
from clusters.lab.controllers.informer import Handlers
from clusters.lab.controllers.pods import is_ready

log = logging.getLogger(__name__)

ENDPOINTS = "/api/v1/endpoints"
LABEL_MANAGED_BY = "endpoints.kubernetes.io/managed-by"
MANAGED_BY = "endpoint-controller"

_NO_PORT = EndpointPort("", "", -1)
"""RepackSubsets' sentinel for a headless Service without ports: the address still counts."""


def _address_key(addr: JSON) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str]:
    return ipaddress.ip_address(addr["ip"]), str((addr.get("targetRef") or {}).get("uid", ""))


def repack(entries: list[tuple[JSON, bool, EndpointPort]]) -> list[JSON]:
    """(address, ready, port) triples → subsets: addresses grouped by the exact set of ports they
    serve, sorted so that equal inputs give equal output (the no-churn comparison relies on it)."""
    by_port: dict[EndpointPort, dict[tuple[str, str], tuple[JSON, bool]]] = {}
    for addr, ready, port in entries:
        by_port.setdefault(port, {})[(addr["ip"], str(addr["targetRef"]["uid"]))] = (addr, ready)
    by_addresses: dict[frozenset[tuple[tuple[str, str], bool]], list[EndpointPort]] = {}
    members: dict[frozenset[tuple[tuple[str, str], bool]], list[tuple[JSON, bool]]] = {}
    for port, addrs in by_port.items():
        group = frozenset((k, ready) for k, (_a, ready) in addrs.items())
        by_addresses.setdefault(group, [])
        if port != _NO_PORT:
            by_addresses[group].append(port)
        members[group] = list(addrs.values())
    subsets: list[JSON] = []
    for group, ports in by_addresses.items():
        ready_addrs = sorted((a for a, r in members[group] if r), key=_address_key)
        not_ready = sorted((a for a, r in members[group] if not r), key=_address_key)
        subset: JSON = {}
        if ready_addrs:
            subset["addresses"] = ready_addrs
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        if ports:
            subset["ports"] = [p.to_endpoints() for p in sorted(ports)]
        subsets.append(subset)
    return sorted(subsets, key=_subset_order)


def _subset_order(subset: JSON) -> tuple[object, ...]:
    addrs = (subset.get("addresses") or []) + (subset.get("notReadyAddresses") or [])
    first = _address_key(addrs[0]) if addrs else (ipaddress.ip_address("0.0.0.0"), "")
    return (first, [(p.get("port"), p.get("protocol"), p.get("name", "")) for p in subset.get("ports") or []])


class EndpointsController(ServiceBackendsController):
    name = "endpoint-controller"

    def setup(self) -> None:
        self.watch_services_and_pods()
        self.endpoints = self.informer(ENDPOINTS)
        # Like onEndpointsDelete: an Endpoints deleted under a Service is written again.
        self.endpoints.add_handlers(Handlers(None, None, self.enqueue))

    def _path(self, ns: str, name: str = "") -> str:
        url = f"/api/v1/namespaces/{ns}/endpoints"
        return f"{url}/{name}" if name else url

    def sync(self, key: str) -> None:
        ns, name = split_key(key)
        ns = ns or ""
        svc = self.services.get(key)
        current = self.endpoints.get(key)
        if svc is None:
            self.tracker.forget(key)
            if (
                current is not None
                and (meta(current).get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY
            ):
                try:
                    self.kube.delete(self._path(ns, name))
                except Exception as err:
                    if not is_not_found(err):
                        raise
            return
        if not manages_endpoints(svc) or meta(svc).get("deletionTimestamp"):
            return
        if self.tracker.stale(key, self.endpoints):
            self.queue.add_after(key, 0.05)
            return
        subsets = repack(self._entries(svc))
        labels = {k: v for k, v in (meta(svc).get("labels") or {}).items() if k != LABEL_HEADLESS}
        if is_headless(svc):
            labels[LABEL_HEADLESS] = ""
        labels[LABEL_MANAGED_BY] = MANAGED_BY
        if (
            current is not None
            and (current.get("subsets") or []) == subsets
            and (meta(current).get("labels") or {}) == labels
        ):
            return
        body: JSON = copy.deepcopy(current) if current is not None else {"metadata": {"name": name}}
        body["apiVersion"], body["kind"] = "v1", "Endpoints"
        body["metadata"]["namespace"] = ns
        body["metadata"]["labels"] = labels
        if subsets:
            body["subsets"] = subsets
        else:
            body.pop("subsets", None)
        try:
            if current is None:
                written = self.kube.create(self._path(ns), body)
            else:
                written = self.kube.update(self._path(ns, name), body)
        except Exception as err:
            if is_terminating_namespace(err):
                return
            if not (is_conflict(err) or is_not_found(err)):
                reason, verb = (
                    ("FailedToCreateEndpoint", "Failed to create endpoint for service")
                    if current is None
                    else ("FailedToUpdateEndpoint", "Failed to update endpoint")
                )
                self.recorder.event(body, WARNING, reason, f"{verb} {key}: {describe_error(err)}")
            raise
        self.tracker.wrote(key, key_of(written), int(meta(written).get("resourceVersion") or 0))

    def _entries(self, svc: JSON) -> list[tuple[JSON, bool, EndpointPort]]:
        spec = svc.get("spec") or {}
        publish = bool(spec.get("publishNotReadyAddresses"))
        entries: list[tuple[JSON, bool, EndpointPort]] = []
        for pod in self.pods.objects(meta(svc).get("namespace")):
            if not selects(svc, pod) or not should_be_in_endpoints(pod, include_terminating=publish):
                continue
            addr: JSON = {"ip": pod_ipv4(pod), "targetRef": target_ref(pod)}
            node_name = (pod.get("spec") or {}).get("nodeName")
            if node_name:
                addr["nodeName"] = node_name
            if should_set_hostname(pod, svc):
                addr["hostname"] = pod["spec"]["hostname"]
            ready = publish or is_ready(pod)
            if not spec.get("ports"):
                if is_headless(svc):
                    entries.append((addr, ready, _NO_PORT))
                continue
            for port in endpoint_ports(svc, pod):
                entries.append((addr, ready, port))
        return entries
