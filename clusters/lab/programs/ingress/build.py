"""Kubernetes objects → the routing :class:`~render.Model`, the way ingress-nginx builds it.

Pure: the informer caches come in as a :class:`Snapshot`, certificates through a lookup, the
clock as ``now``; out come the model, the log lines ingress-nginx would print while building
(``Service "ns/svc" does not have any active Endpoint.``, the certificate warnings …) and the
Ingresses this controller owns (for status). Source of the rules: ingress-nginx
``internal/ingress/controller/controller.go`` (createUpstreams, createServers) and ``store.go``.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from clusters.lab.programs.ingress.certs import (
    CertError,
    CertInfo,
    go_time,
    hostname_error,
    verify_hostname,
    verify_san,
)
from clusters.lab.programs.ingress.render import (
    DEFAULT_SERVER,
    CertFiles,
    Location,
    Model,
    PathType,
    Server,
    Upstream,
)

JSON = dict[str, Any]
CertLookup = Callable[[str], CertInfo | CertError | None]
"""``ns/secret`` → its certificate, the reason it is unusable, or None when no such Secret."""

SSL_REDIRECT = "nginx.ingress.kubernetes.io/ssl-redirect"
LEGACY_CLASS = "kubernetes.io/ingress.class"
DEFAULT_CLASS = "ingressclass.kubernetes.io/is-default-class"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
EXPIRY_WARNING = timedelta(hours=240)
_HOST = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class Options:
    controller_class: str = "k8s.io/ingress-nginx"
    ingress_class: str = "nginx"
    watch_without_class: bool = False
    prefix: str = "/etc/nginx"
    http_port: int = 80
    https_port: int = 443
    bind_address: str = ""
    access_log: str = "off"
    default_backend_service: str = ""


@dataclass(frozen=True)
class Snapshot:
    ingresses: tuple[JSON, ...] = ()
    classes: tuple[JSON, ...] = ()
    services: tuple[JSON, ...] = ()
    slices: tuple[JSON, ...] = ()


@dataclass(frozen=True)
class Note:
    """One log line: ``level`` is a :mod:`logging` level."""

    level: int
    text: str


@dataclass(frozen=True)
class Built:
    model: Model
    notes: tuple[Note, ...]
    ingresses: tuple[JSON, ...]
    cert_files: frozenset[str]
    ignored: tuple[tuple[str, str], ...] = ()
    """(``ns/name``, reason) of Ingresses of other classes."""


def _meta(obj: JSON) -> JSON:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def key(obj: JSON) -> str:
    m = _meta(obj)
    return f"{m.get('namespace', '')}/{m.get('name', '')}"


# -- which Ingresses are ours ---------------------------------------------------------------------


def class_problem(ing: JSON, classes: Iterable[JSON], opts: Options) -> str:
    """Why ``ing`` is not ours ('' when it is): ingress-nginx's ``GetIngressClass``."""
    ours = {
        str(_meta(c).get("name")): c
        for c in classes
        if (c.get("spec") or {}).get("controller") == opts.controller_class
    }
    name = (ing.get("spec") or {}).get("ingressClassName")
    if name:
        return "" if name in ours else f'ingress class "{name}" is not handled by {opts.controller_class}'
    annotation = (_meta(ing).get("annotations") or {}).get(LEGACY_CLASS)
    if annotation is not None:
        if annotation == opts.ingress_class:
            return ""
        return "ingress class annotation is not equal to the expected by Ingress Controller"
    if opts.watch_without_class:
        return ""
    if any((_meta(c).get("annotations") or {}).get(DEFAULT_CLASS) == "true" for c in ours.values()):
        return ""  # the API server's DefaultIngressClass admission would have set our class
    return "ingress does not contain a valid IngressClass"


# -- upstreams ------------------------------------------------------------------------------------


def upstream_name(namespace: str, service: str, port: str) -> str:
    return f"{namespace}-{service}-{port}"


def _backend(backend: Any) -> tuple[str, str] | None:
    """(service name, port number-or-name) of an IngressBackend with a service."""
    svc = (backend or {}).get("service") if isinstance(backend, dict) else None
    if not isinstance(svc, dict) or not svc.get("name"):
        return None
    port = svc.get("port") or {}
    value = port.get("number") if port.get("number") is not None else port.get("name", "")
    return str(svc["name"]), str(value)


def endpoints(svc: JSON, port: str, slices: Iterable[JSON]) -> tuple[str, ...]:
    """Ready ``ip:port`` of ``svc``'s port ``port`` (number, name or targetPort) from its slices."""
    m = _meta(svc)
    sp = next(
        (
            p
            for p in (svc.get("spec") or {}).get("ports") or []
            if str(p.get("port")) == port or p.get("name") == port or str(p.get("targetPort")) == port
        ),
        None,
    )
    if sp is None or (sp.get("protocol") or "TCP") != "TCP":
        return ()
    found: list[str] = []
    for sl in slices:
        sm = _meta(sl)
        if sm.get("namespace") != m.get("namespace"):
            continue
        if (sm.get("labels") or {}).get(SERVICE_NAME_LABEL) != m.get("name"):
            continue
        if sl.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
            continue
        target = next(
            (
                p.get("port")
                for p in sl.get("ports") or []
                if (p.get("name") or "") == (sp.get("name") or "") and (p.get("protocol") or "TCP") == "TCP"
            ),
            None,
        )
        if target is None:
            continue
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            for addr in ep.get("addresses") or []:
                host = f"[{addr}]" if ":" in str(addr) else str(addr)
                entry = f"{host}:{target}"
                if entry not in found:
                    found.append(entry)
    return tuple(sorted(found))


# -- the model ------------------------------------------------------------------------------------


@dataclass
class _Draft:
    locations: list[Location] = field(default_factory=list)
    root: str = ""  # the default backend upstream of the Ingress that created the host
    root_redirect: bool = True
    tls: CertFiles | None = None


class _Builder:
    def __init__(
        self, snap: Snapshot, opts: Options, certs: CertLookup, default_cert: CertFiles, now: datetime
    ):
        self.snap, self.opts, self.certs, self.default_cert, self.now = snap, opts, certs, default_cert, now
        self.services = {key(s): s for s in snap.services}
        self.upstreams: dict[str, Upstream] = {}
        self.notes: list[Note] = []
        self.servers: dict[str, _Draft] = {DEFAULT_SERVER: _Draft()}
        self.cert_files: set[str] = set()

    def note(self, level: int, text: str) -> None:
        n = Note(level, text)
        if n not in self.notes:
            self.notes.append(n)

    def upstream(self, namespace: str, backend: tuple[str, str]) -> str:
        svc_name, port = backend
        name = upstream_name(namespace, svc_name, port)
        if name in self.upstreams:
            return name
        svc_key = f"{namespace}/{svc_name}"
        svc = self.services.get(svc_key)
        eps: tuple[str, ...] = ()
        if svc is None:
            self.note(
                logging.WARNING,
                f'Error obtaining Endpoints for Service "{svc_key}": '
                f'no object matching key "{svc_key}" in local store',
            )
        elif (svc.get("spec") or {}).get("type") == "ExternalName":
            self.note(
                logging.WARNING, f'Service "{svc_key}" is ExternalName: not supported by the lab controller'
            )
        else:
            eps = endpoints(svc, port, self.snap.slices)
            if not eps:
                self.note(logging.WARNING, f'Service "{svc_key}" does not have any active Endpoint.')
        self.upstreams[name] = Upstream(name, eps)
        return name

    def build(self, ingresses: list[JSON]) -> None:
        if self.opts.default_backend_service:
            ns, _, name = self.opts.default_backend_service.partition("/")
            svc = self.services.get(self.opts.default_backend_service)
            ports = [str(p.get("port")) for p in ((svc or {}).get("spec") or {}).get("ports") or []]
            if ports:
                up = self.upstream(ns, (name, ports[0]))
                if self.upstreams[up].endpoints:
                    self.servers[DEFAULT_SERVER].root = up
        for ing in ingresses:
            self.ingress(ing)

    def ingress(self, ing: JSON) -> None:
        ns = str(_meta(ing).get("namespace", ""))
        ing_key = key(ing)
        spec = ing.get("spec") or {}
        redirect = (_meta(ing).get("annotations") or {}).get(SSL_REDIRECT, "true").lower() != "false"
        default_up = ""
        backend = _backend(spec.get("defaultBackend"))
        if backend is not None:
            default_up = self.upstream(ns, backend)
            catch_all = self.servers[DEFAULT_SERVER]
            if not spec.get("rules") and not catch_all.root:
                catch_all.root, catch_all.root_redirect = default_up, redirect
        hosts: list[str] = []
        for rule in spec.get("rules") or []:
            host = str(rule.get("host") or DEFAULT_SERVER)
            if host != DEFAULT_SERVER and not _HOST.match(host):
                self.note(logging.WARNING, f'Ingress "{ing_key}": invalid host "{host}", rule ignored')
                continue
            draft = self.servers.get(host)
            if draft is None:
                draft = self.servers[host] = _Draft(root=default_up, root_redirect=redirect)
            hosts.append(host)
            for path in (rule.get("http") or {}).get("paths") or []:
                loc = self.location(ing_key, ns, path, redirect)
                if loc is not None:
                    draft.locations.append(loc)
        for tls in spec.get("tls") or []:
            for host in tls.get("hosts") or []:
                draft = self.servers.get(host)
                if host not in hosts or draft is None or draft.tls is not None:
                    continue
                draft.tls = self.certificate(ns, str(tls.get("secretName") or ""), host)

    def location(self, ing_key: str, ns: str, path: JSON, redirect: bool) -> Location | None:
        raw = str(path.get("path") or "/")
        try:
            ptype = PathType(path.get("pathType") or "ImplementationSpecific")
        except ValueError:
            self.note(logging.WARNING, f'Ingress "{ing_key}": unknown pathType {path.get("pathType")!r}')
            return None
        if not raw.startswith("/") or any(c.isspace() or ord(c) < 32 for c in raw):
            self.note(logging.WARNING, f'Ingress "{ing_key}": invalid path "{raw}", path ignored')
            return None
        backend = _backend(path.get("backend"))
        if backend is None:
            self.note(
                logging.INFO,
                f'Ingress "{ing_key}" and path "{raw}" does not contain a service backend, '
                "using default backend",
            )
            return Location(raw, ptype, "", ing_key, "", redirect)
        up = self.upstream(ns, backend)
        return Location(raw, ptype, up, ing_key, f"{ns}/{backend[0]}", redirect)

    def certificate(self, ns: str, secret: str, host: str) -> CertFiles:
        if not secret:
            self.note(
                logging.INFO,
                f'Host "{host}" is listed in the TLS section but secretName is empty. '
                "Using default certificate",
            )
            return self.default_cert
        sk = f"{ns}/{secret}"
        got = self.certs(sk)
        if isinstance(got, CertError):
            self.note(logging.WARNING, f"Error obtaining X.509 certificate: {got}")
            got = None
        if got is None:
            self.note(
                logging.WARNING,
                f'Error getting SSL certificate "{sk}": local SSL certificate {sk} was not found. '
                "Using default certificate",
            )
            return self.default_cert
        if not verify_san(got, host):
            err = hostname_error(got, host)
            self.note(
                logging.WARNING,
                f'Unexpected error validating SSL certificate "{sk}" for server "{host}": {err}',
            )
            self.note(
                logging.WARNING,
                "Validating certificate against DNS names. This will be deprecated in a future version",
            )
            if not verify_hostname(got, host):
                self.note(
                    logging.WARNING,
                    f'SSL certificate "{sk}" does not contain a Common Name or Subject Alternative Name '
                    f'for server "{host}": {err}',
                )
                self.note(logging.WARNING, "Using default certificate")
                return self.default_cert
        if got.not_after < self.now:
            self.note(
                logging.WARNING, f'SSL certificate for server "{host}" expired ({go_time(got.not_after)})'
            )
        elif got.not_after < self.now + EXPIRY_WARNING:
            self.note(
                logging.WARNING,
                f'SSL certificate for server "{host}" is about to expire ({go_time(got.not_after)})',
            )
        self.cert_files.add(got.files.cert)
        return got.files

    def servers_out(self) -> tuple[Server, ...]:
        out = []
        for host, d in self.servers.items():
            root = Location("/", PathType.PREFIX, d.root, "", "", d.root_redirect)
            out.append(Server(host, (*d.locations, root), d.tls))
        return tuple(out)


def _created(ing: JSON) -> tuple[str, str]:
    return (str(_meta(ing).get("creationTimestamp") or ""), key(ing))


def build(snap: Snapshot, opts: Options, certs: CertLookup, default_cert: CertFiles, now: datetime) -> Built:
    """The model for every Ingress of ours, oldest first (older Ingresses win path conflicts)."""
    problems = {key(i): class_problem(i, snap.classes, opts) for i in snap.ingresses}
    ours = sorted((i for i in snap.ingresses if not problems[key(i)]), key=_created)
    ignored = tuple(sorted((k, why) for k, why in problems.items() if why))
    b = _Builder(snap, opts, certs, default_cert, now)
    b.build(ours)
    model = Model(
        prefix=opts.prefix,
        http_port=opts.http_port,
        https_port=opts.https_port,
        default_cert=default_cert,
        servers=b.servers_out(),
        upstreams=tuple(b.upstreams.values()),
        bind_address=opts.bind_address,
        access_log=opts.access_log,
    )
    return Built(model, tuple(b.notes), tuple(ours), frozenset(b.cert_files), ignored)


# -- status ---------------------------------------------------------------------------------------


def _lb_entry(name: str) -> JSON:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return {"hostname": name}
    return {"ip": name}


def status_addresses(publish_service: JSON | None, publish_status_address: str) -> list[JSON] | None:
    """ingress-nginx's ``runningAddresses`` for the flags we support; None = unknown (keep status).

    ``--publish-status-address`` wins; else the ``--publish-service``: ClusterIP → its ClusterIP,
    NodePort → externalIPs or ClusterIP, LoadBalancer → its LB ingress (+ externalIPs),
    ExternalName → the name.
    """
    if publish_status_address:
        return _sorted([_lb_entry(a.strip()) for a in publish_status_address.split(",") if a.strip()])
    if publish_service is None:
        return None
    spec = publish_service.get("spec") or {}
    kind = spec.get("type") or "ClusterIP"
    external = [str(ip) for ip in spec.get("externalIPs") or []]
    if kind == "ExternalName":
        return [{"hostname": str(spec.get("externalName", ""))}]
    if kind == "ClusterIP":
        return [{"ip": str(spec.get("clusterIP", ""))}]
    if kind == "NodePort":
        return _sorted([{"ip": ip} for ip in external] or [{"ip": str(spec.get("clusterIP", ""))}])
    addrs: list[JSON] = []
    for lb in ((publish_service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        addrs.append({"ip": lb["ip"]} if lb.get("ip") else {"hostname": str(lb.get("hostname", ""))})
    for ip in external:
        if not any(ip in (a.get("ip"), a.get("hostname")) for a in addrs):
            addrs.append({"ip": ip})
    return _sorted(addrs)


def _sorted(addrs: list[JSON]) -> list[JSON]:
    return sorted(addrs, key=lambda a: (str(a.get("hostname", "")), str(a.get("ip", ""))))


def current_status(ing: JSON) -> list[JSON]:
    lb = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return _sorted(
        [{k: v for k, v in e.items() if k in ("ip", "hostname")} for e in lb if isinstance(e, dict)]
    )
