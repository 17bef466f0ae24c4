"""Ingress under test: which class and controller, what that controller promises where the API
leaves the choice open, the backends and Ingress objects, and the address the cluster publishes.

Backends are one-replica Deployments running ``netexec --http-override=/hostname``, so every
path answers the pod's hostname: path routing is judged by who answered, not by what the backend
knows about the path. The class is named explicitly on every Ingress (the default class, or
``KNETCHECK_INGRESS_CLASS``) so a cluster with two controllers cannot serve it twice.

Expectations that differ between controllers (a missing backend Service, the HTTP->HTTPS
redirect) are data in :data:`CONTROLLERS`, keyed by the IngressClass's ``spec.controller``.
Probing is :mod:`suites.curlprobe`.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusters.handle import Cluster
from clusters.labels import run_labels
from clusters.proc import run
from suites.topology import AGNHOST_IMAGE

BACKEND_PORT = 8080
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
FAKE_CERT_CN = "Kubernetes Ingress Controller Fake Certificate"
"""ingress-nginx's certificate where it has no usable Secret for a host."""

# ---- what a controller promises -------------------------------------------------------------


@dataclass(frozen=True)
class ControllerExpectations:
    """Behaviour the Ingress API leaves to the controller, per ``IngressClass.spec.controller``."""

    missing_backend: frozenset[int]
    """Statuses for a path whose backend Service does not exist."""
    tls_redirect: int | None
    """Status of plain HTTP to a TLS host (None: this controller promises no redirect)."""


CONTROLLERS: Mapping[str, ControllerExpectations] = {
    # ingress-nginx: a backend without endpoints (or Service) is 503; TLS hosts redirect with 308
    # unless nginx.ingress.kubernetes.io/ssl-redirect: "false" (ingress-nginx docs, annotations).
    "k8s.io/ingress-nginx": ControllerExpectations(frozenset({503}), 308),
    # cloud-provider-kind turns Ingresses into Gateway API HTTPRoutes served by Envoy; the Gateway
    # API says requests to an invalid backendRef get 500 (Envoy's "no healthy upstream" is 503).
    # It promises no HTTP->HTTPS redirect. Not verified against a live cluster: revisit on kind.
    "kind.sigs.k8s.io/ingress-controller": ControllerExpectations(frozenset({500, 503}), None),
}
UNKNOWN_CONTROLLER = ControllerExpectations(frozenset({500, 502, 503}), None)
"""Any other controller: some 5xx for a missing backend; no redirect promised."""


def expectations_for(controller: str) -> ControllerExpectations:
    return CONTROLLERS.get(controller, UNKNOWN_CONTROLLER)


@dataclass(frozen=True)
class IngressClassInfo:
    name: str
    controller: str
    default: bool = False


def pick_class(classes: Sequence[Mapping[str, Any]], wanted: str = "") -> IngressClassInfo | str:
    """The IngressClass the checks use: ``wanted`` if given, else the default class, else the only
    class. A string instead says why none fits (a finding: the cluster declares ingress)."""
    infos = [
        IngressClassInfo(
            str(c["metadata"]["name"]),
            str((c.get("spec") or {}).get("controller") or ""),
            ((c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"),
        )
        for c in classes
    ]
    names = ", ".join(sorted(i.name for i in infos)) or "none"
    if wanted:
        found = next((i for i in infos if i.name == wanted), None)
        return found or f"IngressClass {wanted!r} does not exist (classes: {names})"
    defaults = [i for i in infos if i.default]
    if len(defaults) == 1:
        return defaults[0]
    if len(defaults) > 1:
        return f"{len(defaults)} IngressClasses are marked default ({names}): name one to use"
    if len(infos) == 1:
        return infos[0]
    if not infos:
        return "the cluster has no IngressClass: no ingress controller is installed"
    return f"no IngressClass is marked default among {names}: name one to use"


# ---- manifests --------------------------------------------------------------------------------


def backend_deployment(namespace: str, run_id: str, name: str, app_label: str,
                       image: str = AGNHOST_IMAGE) -> dict[str, Any]:
    """One netexec replica answering its hostname on every path (``--http-override``)."""
    selector = {app_label: name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": run_labels(run_id)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": {**run_labels(run_id), **selector}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{
                        "name": "netexec",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["netexec", f"--http-port={BACKEND_PORT}", "--http-override=/hostname"],
                        "ports": [{"containerPort": BACKEND_PORT, "name": "http", "protocol": "TCP"}],
                        "readinessProbe": {"tcpSocket": {"port": BACKEND_PORT}, "periodSeconds": 1},
                    }],
                },
            },
        },
    }


@dataclass(frozen=True)
class Route:
    path: str
    path_type: str
    service: str
    port: int = 80


@dataclass(frozen=True)
class Rule:
    host: str
    paths: tuple[Route, ...]


@dataclass(frozen=True)
class IngressSpec:
    name: str
    rules: tuple[Rule, ...]
    tls: tuple[tuple[str, str], ...] = ()
    """(host, secretName) pairs."""
    annotations: Mapping[str, str] = field(default_factory=dict)


def ingress_manifest(namespace: str, run_id: str, spec: IngressSpec, class_name: str) -> dict[str, Any]:
    rules = [
        {"host": r.host, "http": {"paths": [
            {"path": p.path, "pathType": p.path_type,
             "backend": {"service": {"name": p.service, "port": {"number": p.port}}}}
            for p in r.paths
        ]}}
        for r in spec.rules
    ]
    body: dict[str, Any] = {"ingressClassName": class_name, "rules": rules}
    if spec.tls:
        body["tls"] = [{"hosts": [host], "secretName": secret} for host, secret in spec.tls]
    metadata: dict[str, Any] = {"name": spec.name, "namespace": namespace, "labels": run_labels(run_id)}
    if spec.annotations:
        metadata["annotations"] = dict(spec.annotations)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata, "spec": body}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def tls_secret_manifest(
    namespace: str, run_id: str, name: str, cert_pem: str, key_pem: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace, "labels": run_labels(run_id)},
        # data, not stringData: the lab's API server does not fold stringData into data (a real
        # one does), and base64 data means the same everywhere
        "data": {"tls.crt": _b64(cert_pem), "tls.key": _b64(key_pem)},
    }


def self_signed(host: str, directory: Path, timeout: float = 30.0) -> tuple[str, str]:
    """(cert PEM, key PEM) for ``host`` (CN and SAN), valid one day, from the runner's openssl."""
    key, crt = directory / "tls.key", directory / "tls.crt"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}",
         "-keyout", str(key), "-out", str(crt)], timeout=timeout)
    return crt.read_text(), key.read_text()


# ---- the published address ---------------------------------------------------------------------


def published_address(ingress: Mapping[str, Any]) -> str:
    """The first ``status.loadBalancer.ingress`` ip (or hostname); "" while there is none."""
    for entry in ((ingress.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        address = entry.get("ip") or entry.get("hostname")
        if address:
            return str(address)
    return ""


def unusable_from_pods(address: str) -> str | None:
    """Why a pod cannot use ``address`` (None when it can): a loopback address names the pod
    itself, as ingress-nginx's kind manifest publishes (``--publish-status-address=localhost``)."""
    if address.lower().rstrip(".") == "localhost":
        return "it is 'localhost', the pod's own loopback"
    try:
        if ipaddress.ip_address(address).is_loopback:
            return f"{address} is a loopback address, the pod's own"
    except ValueError:
        pass
    return None


# ---- talking to the API ----------------------------------------------------------------------

API_TIMEOUT = 30.0
POLL_INTERVAL = 0.5


class IngressNotReady(AssertionError):
    """Backends or an Ingress did not settle in time; the message is the evidence."""


def _as_dict(cluster: Cluster, obj: object) -> dict[str, Any]:
    serialize: Any = cluster.api_client.sanitize_for_serialization
    doc: dict[str, Any] = serialize(obj)
    return doc


def _networking(cluster: Cluster) -> Any:
    from kubernetes import client

    return client.NetworkingV1Api(cluster.api_client)


def list_classes(cluster: Cluster) -> list[dict[str, Any]]:
    listing = _networking(cluster).list_ingress_class(_request_timeout=API_TIMEOUT)
    return [_as_dict(cluster, c) for c in listing.items]


def deploy_backends(cluster: Cluster, namespace: str, run_id: str, names: Sequence[str],
                    timeout: float) -> dict[str, frozenset[str]]:
    """A Deployment + ClusterIP Service (port 80) per name; waits until each Service's ready
    endpoints are exactly its Ready pods. Returns each backend's pod names (= what it answers)."""
    from kubernetes import client

    from suites import backends as bk
    from suites.topology import pod_ready_ip, why_not_ready

    apps: Any = client.AppsV1Api(cluster.api_client)
    core: Any = client.CoreV1Api(cluster.api_client)
    for name in names:
        body = backend_deployment(namespace, run_id, name, bk.APP_LABEL)
        apps.create_namespaced_deployment(namespace, body, _request_timeout=API_TIMEOUT)
        bk.create_service(cluster, bk.service_manifest(
            namespace, run_id, name, {"ports": [bk.port("http", 80, BACKEND_PORT)]}, name))
    deadline = time.monotonic() + timeout
    found: dict[str, frozenset[str]] = {}
    last: dict[str, str] = {}
    while True:
        for name in names:
            if name in found:
                continue
            pods = [_as_dict(cluster, p) for p in core.list_namespaced_pod(
                namespace, label_selector=f"{bk.APP_LABEL}={name}", _request_timeout=API_TIMEOUT).items]
            ready = {str(p["metadata"]["name"]): ip for p in pods if (ip := pod_ready_ip(p))}
            endpoints = {ip for ip, ok in bk.read_endpoints(cluster, namespace, name).items() if ok}
            if ready and endpoints == set(ready.values()):
                found[name] = frozenset(ready)
            else:
                states = "; ".join(f"{p['metadata']['name']}: {why_not_ready(p)}" for p in pods) or "no pods"
                last[name] = f"pods {states}; ready endpoints {sorted(endpoints)}"
        if len(found) == len(names):
            return found
        if time.monotonic() >= deadline:
            lines = [f"ingress backends in {namespace} not ready after {timeout:.0f}s:"]
            lines += [f"  {n}: {last.get(n, '?')}" for n in names if n not in found]
            raise IngressNotReady("\n".join(lines))
        time.sleep(POLL_INTERVAL)


def create_secret(cluster: Cluster, manifest: Mapping[str, Any]) -> None:
    from kubernetes import client

    core: Any = client.CoreV1Api(cluster.api_client)
    core.create_namespaced_secret(
        manifest["metadata"]["namespace"], manifest, _request_timeout=API_TIMEOUT)


def create_ingress(cluster: Cluster, manifest: Mapping[str, Any]) -> None:
    _networking(cluster).create_namespaced_ingress(
        manifest["metadata"]["namespace"], manifest, _request_timeout=API_TIMEOUT)


def delete_ingress(cluster: Cluster, namespace: str, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        # raw: the client cannot parse the Status some API servers answer a delete with
        _networking(cluster).delete_namespaced_ingress(
            name, namespace, _request_timeout=API_TIMEOUT, _preload_content=False).read()
    except ApiException as exc:
        if exc.status != 404:
            raise


def _events(cluster: Cluster, namespace: str, name: str) -> list[str]:
    """The Ingress's events, oldest first ("" reasons where an API server gives none)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        listing = client.CoreV1Api(cluster.api_client).list_namespaced_event(
            namespace, field_selector=f"involvedObject.kind=Ingress,involvedObject.name={name}",
            _request_timeout=API_TIMEOUT)
    except ApiException as exc:
        return [f"(events not readable: {exc.status} {exc.reason})"]
    events = [_as_dict(cluster, e) for e in listing.items]
    return [" ".join(f"{e.get('type') or ''} {e.get('reason') or ''}: {e.get('message') or ''}".split())
            for e in events]


def no_address_message(namespace: str, name: str, klass: IngressClassInfo, status: Mapping[str, Any],
                       events: Sequence[str], timeout: float, kubectl: Sequence[str]) -> str:
    """The evidence for an Ingress that never got an address: a finding, not a skip."""
    lines = [
        f"Ingress {namespace}/{name} (class {klass.name}, controller {klass.controller or '?'}) has no "
        f"status.loadBalancer.ingress after {timeout:.0f}s: the controller did not serve it or has no "
        "address to publish (its Service of type LoadBalancer may have none either)",
        f"  status: {json.dumps(dict(status), sort_keys=True)}",
        "  events: " + ("; ".join(events) if events else "none"),
        f"  look: {shlex.join([*kubectl, '-n', namespace, 'describe', 'ingress', name])}",
        f"        {shlex.join([*kubectl, 'get', 'ingressclass', klass.name, '-o', 'yaml'])}",
    ]
    return "\n".join(lines)


def wait_address(cluster: Cluster, namespace: str, name: str, klass: IngressClassInfo, timeout: float) -> str:
    """The address the cluster published for the Ingress, once it did (else IngressNotReady)."""
    deadline = time.monotonic() + timeout
    while True:
        doc = _as_dict(cluster, _networking(cluster).read_namespaced_ingress(
            name, namespace, _request_timeout=API_TIMEOUT))
        address = published_address(doc)
        if address:
            return address
        if time.monotonic() >= deadline:
            raise IngressNotReady(no_address_message(
                namespace, name, klass, doc.get("status") or {}, _events(cluster, namespace, name), timeout,
                cluster.kubectl_argv()))
        time.sleep(POLL_INTERVAL)
