"""Service backends: agnhost netexec pods pinned across nodes, the Services in front of them, and
what the API says about both (ClusterIPs, NodePorts, EndpointSlice readiness, LoadBalancer ingress).

The Service and DNS modules need the same thing the topology gives the pod-network module: pods
whose answers name them (netexec ``/hostname`` is the pod's hostname), placed so every path is
exercised. Backends are bare pods pinned with node affinity, like the probe pods, rather than a
Deployment: the spread must be exact (a scheduler may pack replicas on one node), and a backend
meant to stay unready must be told apart by name.

Each backend runs two netexec containers, so a multi-port Service can target two different
container ports: ``netexec`` (TCP 8080, UDP 8081) and ``netexec-alt`` (TCP 9080, UDP 9081).
Nothing listens on UDP :9 (discard), which :mod:`suites.namecheck` uses to learn where a name
points. A backend built ``ready=False`` has its readiness probe on TCP 8082, where nothing
listens, so it runs, answers on its ports, and never becomes Ready: the faithful way to hold an
endpoint not-ready on every cluster, since netexec has no readiness toggle.

Manifests are plain dicts from pure functions (validated against the real schemas in the
project's tests); every object carries the run-id labels. Every Service of a module selects all
of the module's backends (one ``app`` label).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clusters.handle import Cluster
from clusters.labels import run_labels
from suites.progress import Progress
from suites.topology import AGNHOST_IMAGE, NodeInfo, pod_ready_ip, why_not_ready

log = logging.getLogger(__name__)

APP_LABEL = "knetcheck.io/backend"
HTTP_PORT = 8080
UDP_PORT = 8081
ALT_HTTP_PORT = 9080
ALT_UDP_PORT = 9081
CLOSED_PORT = 8082
"""TCP port nothing listens on: the readiness probe of a backend that must never be Ready."""
DISCARD_PORT = 9
"""UDP port nothing listens on in a backend (see :mod:`suites.namecheck`)."""
READY_TIMEOUT = 240.0
API_TIMEOUT = 30.0
POLL_INTERVAL = 0.5
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class Backend:
    name: str
    node: NodeInfo
    app: str
    ready: bool = True
    """False: the readiness probe points at a closed port, so the pod never becomes Ready."""
    hostname: str = ""
    subdomain: str = ""

    @property
    def answers_as(self) -> str:
        """What netexec ``/hostname`` answers: the pod's hostname (``spec.hostname`` or its name)."""
        return self.hostname or self.name


@dataclass(frozen=True)
class PlacedBackend:
    backend: Backend
    ip: str


@dataclass(frozen=True)
class PortInfo:
    name: str
    port: int
    protocol: str
    node_port: int = 0


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    type: str
    cluster_ip: str
    """The ClusterIP, "None" for a headless Service, "" for ExternalName."""
    ports: tuple[PortInfo, ...] = ()
    external_name: str = ""

    def port(self, name: str) -> PortInfo:
        for p in self.ports:
            if p.name == name:
                return p
        raise KeyError(f"service {self.name} has no port named {name!r}")


@dataclass(frozen=True)
class Deployed:
    namespace: str
    backends: tuple[PlacedBackend, ...]
    services: Mapping[str, ServiceInfo]

    @property
    def ready(self) -> list[PlacedBackend]:
        return [b for b in self.backends if b.backend.ready]

    @property
    def unready(self) -> list[PlacedBackend]:
        return [b for b in self.backends if not b.backend.ready]

    @property
    def ready_names(self) -> frozenset[str]:
        return frozenset(b.backend.answers_as for b in self.ready)

    def service(self, name: str) -> ServiceInfo:
        return self.services[name]


# ---- planning and manifests --------------------------------------------------------------------


def spread(prefix: str, app: str, nodes: Sequence[NodeInfo], count: int) -> list[Backend]:
    """``count`` backends named ``<prefix>-<i>``, round-robin over ``nodes`` (in order)."""
    if not nodes:
        raise ValueError("no node to place backends on")
    return [Backend(f"{prefix}-{i}", nodes[i % len(nodes)], app) for i in range(count)]


def _netexec(name: str, image: str, http: int, udp: int, port_prefix: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["netexec", f"--http-port={http}", f"--udp-port={udp}"],
        "ports": [
            {"containerPort": http, "name": f"{port_prefix}http", "protocol": "TCP"},
            {"containerPort": udp, "name": f"{port_prefix}udp", "protocol": "UDP"},
        ],
    }


def backend_manifest(
    namespace: str, run_id: str, backend: Backend, image: str = AGNHOST_IMAGE
) -> dict[str, Any]:
    main = _netexec("netexec", image, HTTP_PORT, UDP_PORT, "")
    alt = _netexec("netexec-alt", image, ALT_HTTP_PORT, ALT_UDP_PORT, "alt-")
    probe_port = HTTP_PORT if backend.ready else CLOSED_PORT
    main["readinessProbe"] = {
        "httpGet": {"path": "/healthz", "port": probe_port},
        "periodSeconds": 1,
        "failureThreshold": 3,
    }
    pin = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [backend.node.name]}]}
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 0,
        "containers": [main, alt],
        "affinity": {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [pin]}}
        },
    }
    if backend.hostname:
        spec["hostname"] = backend.hostname
    if backend.subdomain:
        spec["subdomain"] = backend.subdomain
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": backend.name,
            "namespace": namespace,
            "labels": {**run_labels(run_id), APP_LABEL: backend.app},
        },
        "spec": spec,
    }


def port(name: str, number: int, target: int, protocol: str = "TCP") -> dict[str, Any]:
    return {"name": name, "port": number, "targetPort": target, "protocol": protocol}


def service_manifest(
    namespace: str, run_id: str, name: str, spec: Mapping[str, Any], app: str | None = None
) -> dict[str, Any]:
    """A Service selecting the backends of ``app`` (none for ExternalName)."""
    body: dict[str, Any] = dict(spec)
    if app is not None:
        body["selector"] = {APP_LABEL: app}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": run_labels(run_id)},
        "spec": body,
    }


def service_info(doc: Mapping[str, Any]) -> ServiceInfo:
    spec = doc.get("spec") or {}
    ports = tuple(
        PortInfo(
            str(p.get("name") or ""),
            int(p["port"]),
            str(p.get("protocol") or "TCP"),
            int(p.get("nodePort") or 0),
        )
        for p in spec.get("ports") or []
    )
    return ServiceInfo(
        str(doc["metadata"]["name"]),
        str(spec.get("type") or "ClusterIP"),
        str(spec.get("clusterIP") or ""),
        ports,
        str(spec.get("externalName") or ""),
    )


def endpoint_readiness(slices: Sequence[Mapping[str, Any]]) -> dict[str, bool]:
    """``{ip: ready}`` over a Service's EndpointSlices (a missing ``ready`` counts as ready, per
    the API: "nil should be interpreted as true")."""
    found: dict[str, bool] = {}
    for sl in slices:
        for ep in sl.get("endpoints") or []:
            ready = (ep.get("conditions") or {}).get("ready")
            for ip in ep.get("addresses") or []:
                found[str(ip)] = ready is not False
    return found


def load_balancer_address(doc: Mapping[str, Any]) -> str:
    """The first ``status.loadBalancer.ingress`` IP (or hostname), "" while there is none."""
    ingress = ((doc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    for entry in ingress:
        address = entry.get("ip") or entry.get("hostname")
        if address:
            return str(address)
    return ""


# ---- talking to the API ----------------------------------------------------------------------


class BackendsNotReady(AssertionError):
    """Backends or their endpoints did not settle in time; the message says which and why."""


def _core(cluster: Cluster) -> Any:
    from kubernetes import client

    return client.CoreV1Api(cluster.api_client)


def _as_dict(cluster: Cluster, obj: object) -> dict[str, Any]:
    serialize: Any = cluster.api_client.sanitize_for_serialization
    doc: dict[str, Any] = serialize(obj)
    return doc


def read_endpoints(cluster: Cluster, namespace: str, service: str) -> dict[str, bool]:
    from kubernetes import client

    api: Any = client.DiscoveryV1Api(cluster.api_client)
    listing = api.list_namespaced_endpoint_slice(
        namespace, label_selector=f"{SERVICE_NAME_LABEL}={service}", _request_timeout=API_TIMEOUT
    )
    return endpoint_readiness([_as_dict(cluster, s) for s in listing.items])


def read_service(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return _as_dict(
        cluster, _core(cluster).read_namespaced_service(name, namespace, _request_timeout=API_TIMEOUT)
    )


def create_service(cluster: Cluster, manifest: Mapping[str, Any]) -> ServiceInfo:
    created = _core(cluster).create_namespaced_service(
        manifest["metadata"]["namespace"], manifest, _request_timeout=API_TIMEOUT
    )
    return service_info(_as_dict(cluster, created))


def deploy(
    cluster: Cluster,
    namespace: str,
    backends: Sequence[Backend],
    services: Sequence[Mapping[str, Any]],
    progress: Progress,
    *,
    timeout: float = READY_TIMEOUT,
    image: str = AGNHOST_IMAGE,
    run_id: str,
) -> Deployed:
    """Create backends and Services; wait until every backend runs (Ready unless built not to be)
    and every selecting Service lists exactly the ready backends as ready endpoints."""
    api = _core(cluster)
    for b in backends:
        api.create_namespaced_pod(
            namespace, backend_manifest(namespace, run_id, b, image), _request_timeout=API_TIMEOUT
        )
    infos = {str(m["metadata"]["name"]): create_service(cluster, m) for m in services}
    deadline = time.monotonic() + timeout
    placed = _wait_pods(cluster, namespace, backends, progress, deadline, timeout)
    ready_ips = {p.ip for p in placed if p.backend.ready}
    selecting = [str(m["metadata"]["name"]) for m in services if (m.get("spec") or {}).get("selector")]
    with progress.step(
        f"endpoints of {len(selecting)} services in {namespace}", total=len(selecting)
    ) as step:
        for name in selecting:
            while True:
                seen = read_endpoints(cluster, namespace, name)
                listed = {ip for ip, ok in seen.items() if ok}
                if listed == ready_ips:
                    step.advance()
                    break
                if time.monotonic() >= deadline:
                    raise BackendsNotReady(
                        f"service {namespace}/{name}: ready endpoints {sorted(listed)}"
                        f", expected the ready backends {sorted(ready_ips)} after {timeout:.0f}s"
                    )
                time.sleep(POLL_INTERVAL)
    # read back after the controllers ran: allocated ClusterIPs and NodePorts
    infos = {name: service_info(read_service(cluster, namespace, name)) for name in infos}
    return Deployed(namespace, tuple(placed), infos)


def _wait_pods(
    cluster: Cluster,
    namespace: str,
    backends: Sequence[Backend],
    progress: Progress,
    deadline: float,
    timeout: float,
) -> list[PlacedBackend]:
    api = _core(cluster)
    ips: dict[str, str] = {}
    last: dict[str, dict[str, Any]] = {}
    want = {b.name: b for b in backends}
    with progress.step(f"service backends running in {namespace}", total=len(want)) as step:
        while True:
            listing = api.list_namespaced_pod(namespace, _request_timeout=API_TIMEOUT)
            for obj in listing.items:
                doc = _as_dict(cluster, obj)
                name = str(doc["metadata"]["name"])
                if name not in want or name in ips:
                    continue
                last[name] = doc
                status = doc.get("status") or {}
                running = status.get("phase") == "Running" and status.get("podIP")
                ip = pod_ready_ip(doc) if want[name].ready else (str(status["podIP"]) if running else None)
                if ip:
                    ips[name] = ip
                    step.advance()
            if len(ips) == len(want):
                return [PlacedBackend(b, ips[b.name]) for b in backends]
            if time.monotonic() >= deadline:
                lines = [f"service backends in {namespace} not up after {timeout:.0f}s:"]
                lines += [
                    f"  {b.name} on {b.node.name}: {why_not_ready(last.get(b.name))}"
                    for b in backends
                    if b.name not in ips
                ]
                raise BackendsNotReady("\n".join(lines))
            time.sleep(POLL_INTERVAL)


def wait_load_balancer(cluster: Cluster, namespace: str, name: str, timeout: float) -> str:
    """The Service's ingress address once a load-balancer implementation wrote it."""
    deadline = time.monotonic() + timeout
    while True:
        address = load_balancer_address(read_service(cluster, namespace, name))
        if address:
            return address
        if time.monotonic() >= deadline:
            raise BackendsNotReady(
                f"service {namespace}/{name} of type LoadBalancer has no status.loadBalancer.ingress after "
                f"{timeout:.0f}s: the cluster's load-balancer implementation did not assign an address "
                f"(kubectl -n {namespace} describe service {name})"
            )
        time.sleep(POLL_INTERVAL)


def delete(cluster: Cluster, namespace: str, pods: Sequence[str], services: Sequence[str]) -> None:
    """Delete what :func:`deploy` made (the namespace goes with the module; this frees NodePorts now)."""
    from kubernetes.client.exceptions import ApiException

    api = _core(cluster)
    calls: list[tuple[Any, str, dict[str, Any]]] = [(api.delete_namespaced_service, s, {}) for s in services]
    calls += [(api.delete_namespaced_pod, p, {"grace_period_seconds": 0}) for p in pods]
    for call, name, extra in calls:
        try:
            # raw: the client cannot parse the Status some API servers answer a delete with
            call(name, namespace, _request_timeout=API_TIMEOUT, _preload_content=False, **extra).read()
        except ApiException as exc:
            if exc.status != 404:
                raise
