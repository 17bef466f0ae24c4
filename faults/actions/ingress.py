"""Ingress faults: a backend Service that does not exist, an expired TLS certificate.

Both act on an Ingress the experiment owns: :func:`deploy_ingress_app` puts a small app (agnhost
pod, Service, Ingress) into the run's chaos namespace, so a fault never touches a user's Ingress
unless the experiment names one. The expired certificate is made with ``openssl ca`` and explicit
``-startdate/-enddate`` (OpenSSL 3.0's ``req`` cannot backdate; no faketime needed).
"""

from __future__ import annotations

import base64
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from clusters.handle import Cluster
from clusters.labels import run_labels
from clusters.proc import run
from faults import context, workspace
from faults.actions import _support as s
from faults.originals import FaultRecord

__all__ = [
    "break_ingress_backend",
    "deploy_ingress_app",
    "expire_ingress_tls",
    "restore_ingress_backend",
    "restore_ingress_tls",
]

log = logging.getLogger(__name__)

APP = "web"
HOST = "web.knetcheck.test"
EXPIRED_START = "20200101000000Z"
EXPIRED_END = "20200102000000Z"


def _serialize(cluster: Cluster) -> Any:
    client: Any = cluster.api_client
    return client.sanitize_for_serialization


def _namespace(cluster: Cluster, namespace: str | None) -> str:
    return namespace or workspace.ensure_namespace(cluster, context.run_id())


def deploy_ingress_app(
    host: str = HOST,
    name: str = APP,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create an agnhost pod, a Service ``<name>`` (80 -> 8080) and an Ingress ``<name>`` routing
    ``host`` to it, in the run's chaos namespace; returns once the pod is Ready (60 s at most).
    Removed with the namespace (:func:`faults.actions.workloads.delete_chaos_namespace`)."""
    cluster = context.cluster_for(configuration)
    run_id = context.run_id()
    namespace = workspace.ensure_namespace(cluster, run_id)
    labels = {**run_labels(run_id), "app": name}
    pod = workspace.agnhost_pod(name, run_id, "ingress-app")
    pod["metadata"]["labels"].update(labels)
    workspace.ensure_pod(cluster, namespace, pod)
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": run_labels(run_id)},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }
    ingress = {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "labels": run_labels(run_id)},
        "spec": {"rules": [{"host": host, "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": name, "port": {"number": 80}}},
        }]}}]},
    }
    for create, body in ((s.core(cluster).create_namespaced_service, service),
                         (s.networking(cluster).create_namespaced_ingress, ingress)):
        try:
            create(namespace, body, _request_timeout=s.API_TIMEOUT)
        except Exception as exc:
            if getattr(exc, "status", None) != 409:
                raise
    ready = workspace.wait_pod_ready(cluster, namespace, name, 60.0) is not None
    return {"namespace": namespace, "ingress": name, "host": host, "ready": ready}


def break_ingress_backend(
    ingress: str = APP,
    namespace: str | None = None,
    service: str | None = None,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Point every Service backend of Ingress ``<namespace>/<ingress>`` (default: the run's chaos
    namespace) at a Service that does not exist (``service``, default ``knetcheck-missing-<run>``):
    ingress-nginx answers 503. Revert: :func:`restore_ingress_backend`."""
    cluster = context.cluster_for(configuration)
    ns = _namespace(cluster, namespace)
    api = s.networking(cluster)
    ing = api.read_namespaced_ingress(ingress, ns, _request_timeout=s.API_TIMEOUT)
    spec = _serialize(cluster)(ing.spec)
    s.record(cluster, "ingress-backend", f"ingress/{ns}/{ingress}", restore_ingress_backend,
             {"ingress": ingress, "namespace": ns}, lambda: {"spec": json.dumps(spec, sort_keys=True)})
    missing = service or f"knetcheck-missing-{context.run_id()}"
    broken = json.loads(json.dumps(spec))
    if (broken.get("defaultBackend") or {}).get("service"):
        broken["defaultBackend"]["service"]["name"] = missing
    for rule in broken.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            if (path.get("backend") or {}).get("service"):
                path["backend"]["service"]["name"] = missing
    api.patch_namespaced_ingress(ingress, ns, [{"op": "replace", "path": "/spec", "value": broken}],
                                 _request_timeout=s.API_TIMEOUT)
    return {"ingress": f"{ns}/{ingress}", "backend": missing}


def restore_ingress_backend(
    ingress: str = APP,
    namespace: str | None = None,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Put back the Ingress spec :func:`break_ingress_backend` saved."""
    cluster = context.cluster_for(configuration)
    ns = namespace or workspace.namespace_name(context.run_id())

    def put_back(rec: FaultRecord) -> s.Result:
        spec = json.loads(str(rec.original["spec"]))
        try:
            s.networking(cluster).patch_namespaced_ingress(
                ingress, ns, [{"op": "replace", "path": "/spec", "value": spec}],
                _request_timeout=s.API_TIMEOUT,
            )
        except Exception as exc:
            if not s.is_not_found(exc):
                raise
        return {"ingress": f"{ns}/{ingress}"}

    return s.restore(cluster, "ingress-backend", f"ingress/{ns}/{ingress}", put_back)


def expired_certificate(host: str, timeout: float = 30.0) -> tuple[str, str]:
    """(cert PEM, key PEM) for ``host``, valid 2020-01-01 .. 2020-01-02 only."""
    with tempfile.TemporaryDirectory(prefix="knetcheck-tls-") as tmp:
        d = Path(tmp)
        (d / "index.txt").write_text("")
        (d / "serial").write_text("01\n")
        (d / "ca.cnf").write_text(
            f"[ca]\ndefault_ca = dflt\n[dflt]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\n"
            f"serial = {d}/serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n"
            f"[any]\ncommonName = supplied\n[ext]\nsubjectAltName = DNS:{host}\nbasicConstraints = CA:FALSE\n"
        )
        key, csr, cert = d / "key.pem", d / "csr.pem", d / "cert.pem"
        run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", f"/CN={host}"], timeout=timeout)
        run(["openssl", "ca", "-batch", "-selfsign", "-config", str(d / "ca.cnf"), "-keyfile", str(key),
             "-in", str(csr), "-out", str(cert), "-startdate", EXPIRED_START, "-enddate", EXPIRED_END,
             "-extensions", "ext", "-notext"], timeout=timeout)
        return cert.read_text(), key.read_text()


def _secret_name(run_id: str) -> str:
    return f"kc-expired-tls-{run_id.lower()}"


def expire_ingress_tls(
    ingress: str = APP,
    namespace: str | None = None,
    host: str = HOST,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Serve ``host`` on Ingress ``<namespace>/<ingress>`` with an expired certificate: a TLS Secret
    ``kc-expired-tls-<run>`` (expired 2020-01-02) put under ``spec.tls``. ingress-nginx keeps
    serving it; clients fail with x509 "certificate has expired". Revert: :func:`restore_ingress_tls`."""
    cluster = context.cluster_for(configuration)
    ns = _namespace(cluster, namespace)
    api = s.networking(cluster)
    ing = api.read_namespaced_ingress(ingress, ns, _request_timeout=s.API_TIMEOUT)
    tls = _serialize(cluster)(ing.spec.tls) or []
    rec = s.record(cluster, "ingress-tls", f"ingress/{ns}/{ingress}", restore_ingress_tls,
                   {"ingress": ingress, "namespace": ns}, lambda: {"tls": json.dumps(tls, sort_keys=True)})
    cert, key = expired_certificate(host)
    name = _secret_name(rec.run_id)
    secret = {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "labels": run_labels(rec.run_id)},
        "data": {"tls.crt": base64.b64encode(cert.encode()).decode(),
                 "tls.key": base64.b64encode(key.encode()).decode()},
    }
    try:
        s.core(cluster).create_namespaced_secret(ns, secret, _request_timeout=s.API_TIMEOUT)
    except Exception as exc:
        if getattr(exc, "status", None) != 409:
            raise
    patch = [{"op": "add", "path": "/spec/tls", "value": [{"hosts": [host], "secretName": name}]}]
    api.patch_namespaced_ingress(ingress, ns, patch, _request_timeout=s.API_TIMEOUT)
    return {"ingress": f"{ns}/{ingress}", "secret": f"{ns}/{name}", "notAfter": EXPIRED_END}


def restore_ingress_tls(
    ingress: str = APP,
    namespace: str | None = None,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Put back the Ingress's original ``spec.tls`` and delete the expired Secret."""
    cluster = context.cluster_for(configuration)
    ns = namespace or workspace.namespace_name(context.run_id())

    def put_back(rec: FaultRecord) -> s.Result:
        tls = json.loads(str(rec.original["tls"]))
        patch: list[dict[str, Any]] = [{"op": "add", "path": "/spec/tls", "value": tls}]
        if not tls:
            patch = [{"op": "remove", "path": "/spec/tls"}]
        for call, args in ((s.networking(cluster).patch_namespaced_ingress, (ingress, ns, patch)),
                           (s.core(cluster).delete_namespaced_secret, (_secret_name(rec.run_id), ns))):
            try:
                call(*args, _request_timeout=s.API_TIMEOUT)
            except Exception as exc:
                if not s.is_not_found(exc) and getattr(exc, "status", None) != 422:
                    raise
        return {"ingress": f"{ns}/{ingress}"}

    return s.restore(cluster, "ingress-tls", f"ingress/{ns}/{ingress}", put_back)
