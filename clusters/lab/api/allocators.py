"""Service ClusterIP and NodePort allocation, with the real apiserver's error wording.

Dynamic ClusterIPs come from above the static band (the first 256 addresses of a /16, kept for
addresses people pick, such as 10.96.0.10 for kube-dns), as the real allocator prefers since 1.27.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable
from typing import Any

from clusters.lab.api.resources import ResourceType
from clusters.lab.api.status import ApiError, invalid
from clusters.lab.layout import SERVICE_SUBNET

NODE_PORT_RANGE = range(30000, 32768)
STATIC_BAND = 256
_rng = random.SystemRandom()


def used_ips(services: Iterable[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for svc in services:
        spec = svc.get("spec") or {}
        for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]:
            if ip and ip != "None":
                out.add(str(ip))
    return out


def used_node_ports(services: Iterable[dict[str, Any]]) -> set[int]:
    out: set[int] = set()
    for svc in services:
        for port in (svc.get("spec") or {}).get("ports") or []:
            if port.get("nodePort"):
                out.add(int(port["nodePort"]))
        hc = (svc.get("spec") or {}).get("healthCheckNodePort")
        if hc:
            out.add(int(hc))
    return out


def allocate_cluster_ip(rt: ResourceType, name: str, spec: dict[str, Any], used: set[str]) -> None:
    """Fill spec.clusterIP/clusterIPs, or raise 422 as the real allocator does."""
    if spec.get("type") == "ExternalName":
        return
    wanted = spec.get("clusterIP") or (spec.get("clusterIPs") or [None])[0]
    if wanted == "None":
        spec["clusterIP"] = "None"
        spec["clusterIPs"] = ["None"]
        return
    if wanted:
        try:
            addr = ipaddress.ip_address(wanted)
        except ValueError:
            raise invalid(
                rt,
                name,
                [
                    (
                        "FieldValueInvalid",
                        "spec.clusterIPs[0]",
                        f'Invalid value: "{wanted}": must be a valid IP address, '
                        "(e.g. 10.9.8.7 or 2001:db8::ffff)",
                    )
                ],
            ) from None
        if addr not in SERVICE_SUBNET or addr in (
            SERVICE_SUBNET.network_address,
            SERVICE_SUBNET.broadcast_address,
        ):
            raise _alloc_error(
                rt,
                name,
                wanted,
                f"the provided IP ({wanted}) is not in the valid range. "
                f"The range of valid IPs is {SERVICE_SUBNET}",
            )
        if wanted in used:
            raise _alloc_error(rt, name, wanted, "provided IP is already allocated")
        ip = str(addr)
    else:
        size = SERVICE_SUBNET.num_addresses
        for _ in range(4096):
            candidate = str(SERVICE_SUBNET.network_address + _rng.randrange(STATIC_BAND, size - 1))
            if candidate not in used:
                ip = candidate
                break
        else:
            raise ApiError(
                500, "InternalError", "Internal error occurred: failed to allocate a serviceIP: range is full"
            )
    spec["clusterIP"] = ip
    spec["clusterIPs"] = [ip]


def _alloc_error(rt: ResourceType, name: str, ip: str, why: str) -> ApiError:
    return invalid(
        rt,
        name,
        [
            (
                "FieldValueInvalid",
                "spec.clusterIPs",
                f'Invalid value: []string{{"{ip}"}}: failed to allocate IP {ip}: {why}',
            )
        ],
    )


def allocate_node_ports(rt: ResourceType, name: str, spec: dict[str, Any], used: set[int]) -> None:
    if spec.get("type") not in ("NodePort", "LoadBalancer"):
        for port in spec.get("ports") or []:
            if port.get("nodePort"):
                raise invalid(
                    rt,
                    name,
                    [
                        (
                            "FieldValueForbidden",
                            "spec.ports[0].nodePort",
                            "Forbidden: may not be used when `type` is 'ClusterIP'",
                        )
                    ],
                )
        return
    if spec.get("type") == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is False:
        return
    taken = set(used)
    for i, port in enumerate(spec.get("ports") or []):
        want = port.get("nodePort")
        if want:
            if int(want) not in NODE_PORT_RANGE:
                raise invalid(
                    rt,
                    name,
                    [
                        (
                            "FieldValueInvalid",
                            f"spec.ports[{i}].nodePort",
                            f"Invalid value: {want}: provided port is not in the valid range. "
                            "The range of valid ports is 30000-32767",
                        )
                    ],
                )
            if int(want) in taken:
                raise invalid(
                    rt,
                    name,
                    [
                        (
                            "FieldValueInvalid",
                            f"spec.ports[{i}].nodePort",
                            f"Invalid value: {want}: provided port is already allocated",
                        )
                    ],
                )
            taken.add(int(want))
            continue
        free = [p for p in NODE_PORT_RANGE if p not in taken]
        if not free:
            raise ApiError(
                500, "InternalError", "Internal error occurred: failed to allocate a nodePort: range is full"
            )
        port["nodePort"] = _rng.choice(free)
        taken.add(port["nodePort"])


def keep_allocations(old: dict[str, Any], new: dict[str, Any]) -> None:
    """An update that leaves allocated fields empty keeps the old values (real PrepareForUpdate)."""
    ospec, nspec = old.get("spec") or {}, new.setdefault("spec", {})
    if not nspec.get("clusterIP") and ospec.get("clusterIP") and nspec.get("type") != "ExternalName":
        nspec["clusterIP"] = ospec["clusterIP"]
        nspec["clusterIPs"] = list(ospec.get("clusterIPs") or [ospec["clusterIP"]])
    if nspec.get("type") in ("NodePort", "LoadBalancer") and ospec.get("type") in (
        "NodePort",
        "LoadBalancer",
    ):
        by_port = {
            (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort") for p in ospec.get("ports") or []
        }
        for p in nspec.get("ports") or []:
            if not p.get("nodePort"):
                prev = by_port.get((p.get("port"), p.get("protocol", "TCP")))
                if prev:
                    p["nodePort"] = prev
