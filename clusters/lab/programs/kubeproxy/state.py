"""Services + EndpointSlices (API objects) → :class:`~.model.ProxyState`.

This is the lab's ServiceChangeTracker and EndpointSliceCache in one pass: it decides which
Services are proxied at all (not ExternalName, not headless, IPv4 only), applies the API defaults
kube-proxy relies on, and matches slice ports to service ports by name and protocol, deduplicated
and in the cache's order. Keeping it apart from rendering means the rule writers never see an API
shape, and a sync can rebuild the whole state from the informer caches every time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from clusters.lab.programs.kubeproxy.model import DEFAULT_STICKY_SECONDS, Endpoint, ProxyState, ServicePort

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def service_ports(svc: Mapping[str, Any]) -> list[ServicePort]:
    """The proxied ports of a Service; ExternalName and headless Services have none."""
    meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
    cluster_ip = str(spec.get("clusterIP") or "")
    if spec.get("type") == "ExternalName" or not cluster_ip or cluster_ip == "None":
        return []
    try:
        family = ipaddress.ip_address(cluster_ip).version
    except ValueError:
        return []
    if family != 4:
        return []  # the lab proxies IPv4 only
    affinity = spec.get("sessionAffinity") == "ClientIP"
    sticky = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get(
        "timeoutSeconds"
    ) or DEFAULT_STICKY_SECONDS
    svc_type = spec.get("type") or "ClusterIP"
    lb_ips: tuple[str, ...] = ()
    if svc_type == "LoadBalancer":
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        lb_ips = tuple(str(i["ip"]) for i in ingress if isinstance(i, dict) and i.get("ip"))
    external_local = spec.get("externalTrafficPolicy") == "Local" and svc_type in ("NodePort", "LoadBalancer")
    out = []
    for p in spec.get("ports") or []:
        out.append(
            ServicePort(
                namespace=str(meta.get("namespace") or "default"),
                name=str(meta.get("name") or ""),
                port_name=str(p.get("name") or ""),
                protocol=str(p.get("protocol") or "TCP"),
                cluster_ip=cluster_ip,
                port=int(p.get("port") or 0),
                node_port=int(p.get("nodePort") or 0) if svc_type in ("NodePort", "LoadBalancer") else 0,
                external_ips=tuple(str(ip) for ip in spec.get("externalIPs") or ()),
                load_balancer_ips=lb_ips,
                load_balancer_source_ranges=tuple(str(r) for r in spec.get("loadBalancerSourceRanges") or ()),
                client_ip_affinity=affinity,
                sticky_seconds=int(sticky),
                external_policy_local=external_local,
                internal_policy_local=spec.get("internalTrafficPolicy") == "Local",
                health_check_node_port=int(spec.get("healthCheckNodePort") or 0) if external_local else 0,
            )
        )
    return out


def slice_endpoints(slices: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str, str], list[Endpoint]]:
    """EndpointSlices → endpoints per (namespace, service, port name, protocol), deduplicated and
    sorted by ``ip:port`` string as the endpoint slice cache does."""
    found: dict[tuple[str, str, str, str], dict[str, Endpoint]] = {}
    for sl in slices:
        meta = sl.get("metadata") or {}
        svc = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not svc or sl.get("addressType", "IPv4") != "IPv4":
            continue
        ns = str(meta.get("namespace") or "default")
        for p in sl.get("ports") or []:
            port = p.get("port")
            if not port:
                continue
            key = (ns, str(svc), str(p.get("name") or ""), str(p.get("protocol") or "TCP"))
            bucket = found.setdefault(key, {})
            for e in sl.get("endpoints") or []:
                addrs = e.get("addresses") or []
                if not addrs:
                    continue
                cond = e.get("conditions") or {}
                ready = cond.get("ready")
                ready = True if ready is None else bool(ready)
                serving = cond.get("serving")
                ep = Endpoint(
                    ip=str(addrs[0]),
                    port=int(port),
                    ready=ready,
                    serving=ready if serving is None else bool(serving),
                    terminating=bool(cond.get("terminating") or False),
                    node_name=str(e.get("nodeName") or ""),
                )
                bucket.setdefault(ep.address, ep)
    return {k: sorted(v.values(), key=lambda ep: ep.address) for k, v in found.items()}


def build_state(services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]]) -> ProxyState:
    """The state one sync renders, from the informers' Services and EndpointSlices."""
    by_port = slice_endpoints(slices)
    ports: list[ServicePort] = []
    eps: dict[tuple[str, str], tuple[Endpoint, ...]] = {}
    for svc in services:
        for sp in service_ports(svc):
            ports.append(sp)
            eps[(sp.name_string, sp.protocol)] = tuple(
                by_port.get((sp.namespace, sp.name, sp.port_name, sp.protocol), ())
            )
    ports.sort(key=lambda sp: (sp.name_string, sp.protocol))
    return ProxyState(services=tuple(ports), endpoints=eps)
