"""Ingress rules: the runbook's "check ingress rules, certificates, load balancer" step.

A backend Service that is missing or has no ready endpoint is ingress-nginx's 503; an expired
certificate is still served (reference §3.4), so clients fail while the controller looks healthy.
Certificate dates come from ``openssl x509 -noout -enddate`` (no crypto dependency), run once per
Secret through :func:`clusters.proc.run`.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from clusters.errors import CommandFailed
from clusters.proc import run
from faults.doctor.snapshot import Facts, Obj, name_of, ns_of, parse_time
from faults.findings import Finding, FindingId, Severity

log = logging.getLogger(__name__)

EXPIRY_WARNING_DAYS = 10
"""ingress-nginx warns ``is about to expire`` within 10 days; so do we."""
PUBLISH_GRACE = 120.0
"""Seconds after creation an Ingress may still wait for its address."""
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"

EndDate = Callable[[str], datetime | None]


def openssl_enddate(pem: str) -> datetime | None:
    """notAfter of the first certificate in ``pem``; None if openssl cannot read it."""
    try:
        result = run(["openssl", "x509", "-noout", "-enddate"], stdin=pem, timeout=10)
    except CommandFailed as exc:
        log.info("openssl could not read a certificate: %s", exc)
        return None
    text = result.stdout.strip().removeprefix("notAfter=")
    try:
        return datetime.strptime(text, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)
    except ValueError:
        return None


def _backends(ing: Obj) -> Iterator[tuple[str, str, object]]:
    """(where, service name, port) for every Service backend of the Ingress."""
    spec = ing.get("spec") or {}
    default = (spec.get("defaultBackend") or {}).get("service")
    if default:
        yield "defaultBackend", str(default.get("name")), _port(default)
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            svc = (path.get("backend") or {}).get("service")
            if svc:
                where = f"{rule.get('host') or '*'}{path.get('path') or '/'}"
                yield where, str(svc.get("name")), _port(svc)


def _port(backend: Obj) -> object:
    port = backend.get("port") or {}
    return port.get("number") or port.get("name") or ""


def _service_has_port(svc: Obj, port: object) -> bool:
    for p in (svc.get("spec") or {}).get("ports") or []:
        if port in (p.get("port"), p.get("name")):
            return True
    return port == ""


def backend_rule(facts: Facts) -> list[Finding]:
    out = []
    snap = facts.snapshot
    for ing in snap.ingresses:
        namespace, name = ns_of(ing), name_of(ing)
        problems: list[str] = []
        for where, service, port in _backends(ing):
            svc = snap.find("services", namespace, service)
            if svc is None:
                problems.append(
                    f"{where} -> service {namespace}/{service}:{port}: the Service does not exist"
                )
                continue
            if not _service_has_port(svc, port):
                ports = [p.get("port") for p in (svc.get("spec") or {}).get("ports") or []]
                problems.append(
                    f"{where} -> service {namespace}/{service}:{port}: the Service has no such "
                    "port "
                    f"(ports {ports})"
                )
                continue
            if (svc.get("spec") or {}).get("type") == "ExternalName":
                continue
            ready = sum(
                1
                for s in snap.slices_of(namespace, service)
                for e in s.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready") is not False
            )
            if not ready:
                problems.append(
                    f"{where} -> service {namespace}/{service}:{port}: no ready endpoints "
                    f'(ingress-nginx: Service "{namespace}/{service}" does not have any '
                    "active Endpoint)"
                )
        if problems:
            out.append(
                Finding(
                    FindingId.INGRESS_BACKEND_MISSING,
                    f"ingress/{namespace}/{name}",
                    f"ingress {namespace}/{name} routes to {len(problems)} backend(s) that cannot answer "
                    "(HTTP "
                    "503)",
                    tuple(problems),
                    "point the backend at an existing Service and port with ready pods (kubectl -n "
                    f"{namespace} edit "
                    f"ingress {name}), or fix the Service's selector: kubectl -n {namespace} get "
                    "svc,endpointslices",
                )
            )
    return out


def tls_rule(facts: Facts, enddate: EndDate = openssl_enddate) -> list[Finding]:
    out = []
    snap = facts.snapshot
    for ing in snap.ingresses:
        namespace, name = ns_of(ing), name_of(ing)
        for tls in (ing.get("spec") or {}).get("tls") or []:
            secret_name = str(tls.get("secretName") or "")
            secret = snap.find("secrets", namespace, secret_name) if secret_name else None
            if secret is None:
                continue
            raw = str((secret.get("data") or {}).get("tls.crt") or "")
            try:
                pem = base64.b64decode(raw).decode("utf-8", errors="replace")
            except ValueError:
                continue
            end = enddate(pem) if pem.strip() else None
            if end is None:
                continue
            left = (end - snap.now).total_seconds() / 86400
            if left > EXPIRY_WARNING_DAYS:
                continue
            hosts = ", ".join(str(h) for h in tls.get("hosts") or []) or "(no hosts)"
            expired = left <= 0
            out.append(
                Finding(
                    FindingId.INGRESS_TLS_EXPIRED,
                    f"secret/{namespace}/{secret_name}",
                    (
                        f"the TLS certificate for {hosts} expired on {end:%Y-%m-%d %H:%M} UTC"
                        if expired
                        else f"the TLS certificate for {hosts} expires in {left:.1f} days "
                             f"({end:%Y-%m-%d %H:%M} UTC)"
                    ),
                    (
                        f"ingress {namespace}/{name} spec.tls secretName {secret_name} (hosts {hosts})",
                        f"openssl x509 -noout -enddate: notAfter={end:%b %d %H:%M:%S %Y} GMT",
                        'ingress-nginx keeps serving an expired certificate; clients get x509 "certificate '
                        'has '
                        'expired"',
                    ),
                    f"renew the certificate and replace the Secret: kubectl -n {namespace} create secret tls "
                    f"{secret_name} "
                    "--cert=<new.crt> --key=<new.key> --dry-run=client -o yaml | kubectl apply -f -",
                    severity=Severity.CRITICAL if expired else Severity.WARNING,
                )
            )
    return out


def _controller_classes(facts: Facts) -> tuple[set[str], str | None]:
    classes = {name_of(c) for c in facts.snapshot.ingressclasses}
    default = next(
        (
            name_of(c)
            for c in facts.snapshot.ingressclasses
            if ((c.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"
        ),
        None,
    )
    return classes, default


def address_rule(facts: Facts) -> list[Finding]:
    """ingress-no-address: a controller exists for the Ingress's class but never published an address."""
    classes, default = _controller_classes(facts)
    if not classes:
        return []
    out = []
    for ing in facts.snapshot.ingresses:
        spec = ing.get("spec") or {}
        cls = (
            spec.get("ingressClassName")
            or (((ing.get("metadata") or {}).get("annotations") or {}).get("kubernetes.io/ingress.class"))
            or default
        )
        if cls not in classes:
            continue
        created = parse_time((ing.get("metadata") or {}).get("creationTimestamp"))
        if created is not None and (facts.snapshot.now - created).total_seconds() < PUBLISH_GRACE:
            continue
        if ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress"):
            continue
        namespace, name = ns_of(ing), name_of(ing)
        waited = None if created is None else (facts.snapshot.now - created).total_seconds()
        age = "" if waited is None else f"{waited:.0f}s after creation"
        out.append(
            Finding(
                FindingId.INGRESS_NO_ADDRESS,
                f"ingress/{namespace}/{name}",
                f"ingress {namespace}/{name} (class {cls}) has no address: its controller has not "
                "published one",
                (
                    f"ingress {namespace}/{name}: status.loadBalancer is empty {age}".rstrip(),
                    f"IngressClass {cls} exists",
                ),
                f"check the {cls} controller is running and its publish Service (type LoadBalancer) has an "
                "address: "
                "kubectl get pods,svc -A -l app.kubernetes.io/component=controller; on kind install "
                "cloud-provider-kind or use the hostPort ingress-nginx manifest",
                severity=Severity.WARNING,
            )
        )
    return out


def rules(facts: Facts, enddate: EndDate = openssl_enddate) -> list[Finding]:
    return backend_rule(facts) + tls_rule(facts, enddate) + address_rule(facts)
