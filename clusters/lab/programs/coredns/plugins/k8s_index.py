"""Services, EndpointSlices and Namespaces (API JSON) → a frozen index the record lookups read.

Why an index rebuilt on change instead of scanning per query: PTR lookups need IP → name and a
query must see one consistent snapshot, while the informer threads keep changing the caches.
Readiness follows CoreDNS: an endpoint counts when ``conditions.ready`` is true or unset (the
EndpointSlice controller already marks publishNotReadyAddresses endpoints ready).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

JSON = dict[str, Any]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class Kind(Enum):
    CLUSTER_IP = "ClusterIP"
    HEADLESS = "Headless"
    EXTERNAL_NAME = "ExternalName"


@dataclass(frozen=True)
class Port:
    name: str
    port: int
    protocol: str  # lower case: tcp, udp, sctp


@dataclass(frozen=True)
class Endpoint:
    ip: str
    label: str  # its DNS label under the service: the hostname, else the dashed IP
    ports: tuple[Port, ...]


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    kind: Kind
    cluster_ips: tuple[str, ...]
    external_name: str
    ports: tuple[Port, ...]
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class Index:
    services: Mapping[tuple[str, str], Service] = field(default_factory=dict)
    namespaces: frozenset[str] = frozenset()
    reverse: Mapping[str, tuple[str, str, str]] = field(default_factory=dict)
    """IP → (namespace, service, endpoint label or "" for a ClusterIP)."""
    serial: int = 0


def dashed(ip: str) -> str:
    """``10.244.1.5`` → ``10-244-1-5``; IPv6 colons become dashes too (CoreDNS endpointHostname)."""
    return ip.replace(".", "-").replace(":", "-")


def build_index(
    services: Iterable[JSON], slices: Iterable[JSON], namespaces: Iterable[JSON], serial: int
) -> Index:
    by_service: dict[tuple[str, str], list[Endpoint]] = {}
    for sl in slices:
        meta = sl.get("metadata") or {}
        svc = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not svc or sl.get("addressType") not in ("IPv4", "IPv6"):
            continue
        ports = tuple(_port(p) for p in sl.get("ports") or [] if p.get("port") is not None)
        eps = by_service.setdefault((str(meta.get("namespace", "")), str(svc)), [])
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            hostname = str(ep.get("hostname") or "")
            for ip in ep.get("addresses") or []:
                eps.append(Endpoint(_canon(ip), hostname.lower() or dashed(_canon(ip)), ports))
    out: dict[tuple[str, str], Service] = {}
    reverse: dict[str, tuple[str, str, str]] = {}
    for obj in services:
        s = _service(obj, by_service)
        out[(s.namespace, s.name)] = s
        for ip in s.cluster_ips:
            reverse.setdefault(ip, (s.namespace, s.name, ""))
    for s in out.values():
        for ep in s.endpoints:
            reverse.setdefault(ep.ip, (s.namespace, s.name, ep.label))
    ns = frozenset(str((n.get("metadata") or {}).get("name", "")) for n in namespaces)
    return Index(out, ns, reverse, serial)


def _service(obj: JSON, eps: Mapping[tuple[str, str], list[Endpoint]]) -> Service:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
    ports = tuple(_port(p) for p in spec.get("ports") or [])
    if spec.get("type") == "ExternalName":
        kind = Kind.EXTERNAL_NAME
        ips: tuple[str, ...] = ()
    elif spec.get("clusterIP") == "None":
        kind = Kind.HEADLESS
        ips = ()
    else:
        kind = Kind.CLUSTER_IP
        raw = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        ips = tuple(_canon(ip) for ip in raw if ip and ip != "None")
    return Service(
        key[0],
        key[1],
        kind,
        ips,
        str(spec.get("externalName") or "").lower().rstrip("."),
        ports,
        tuple(eps.get(key, [])),
    )


def _port(p: JSON) -> Port:
    return Port(
        str(p.get("name") or "").lower(), int(p.get("port") or 0), str(p.get("protocol") or "TCP").lower()
    )


def _canon(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip
