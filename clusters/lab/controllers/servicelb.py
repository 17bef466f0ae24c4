"""LoadBalancer IPs for the lab, in the role MetalLB's controller plays on a kind cluster.

For each Service of type LoadBalancer (without a ``spec.loadBalancerClass``, which would name
another implementation) it takes an address from :data:`clusters.lab.layout.LB_POOL` and writes
``status.loadBalancer.ingress: [{ip, ipMode: VIP}]`` through the services/status subresource.
Addresses are handed out lowest first, skipping the pool's ``.0``, ``.1`` (the gateway on a
Docker network) and ``.255``; ``spec.loadBalancerIP`` is honoured when it lies in the pool and is
free. An address already in a Service's status is kept across restarts of this controller (the
oldest Service wins if two claim one). The address is released when the Service is deleted,
stops being a LoadBalancer (its status is then cleared, as MetalLB does) or asks for another.

Events use MetalLB's reasons and wording: ``IPAllocated`` ``Assigned IP ["172.18.255.2"]``, and
``AllocationFailed`` ``Failed to allocate IP for "ns/name": …``. A Service that could not get an
address is retried whenever an address is released. Making the address reachable is the data
plane's job (kube-proxy's LoadBalancer rules), not this controller's.
"""

from __future__ import annotations

import copy
import logging
import threading

from clusters.lab.controllers.base import Controller
from clusters.lab.controllers.client import JSON, is_not_found, key_of, meta, split_key
from clusters.lab.controllers.endpointslice import SERVICES
from clusters.lab.controllers.events import NORMAL, WARNING
from clusters.lab.controllers.informer import Handlers
from clusters.lab.layout import LB_POOL

log = logging.getLogger(__name__)

_SKIPPED_HOSTS = (0, 1, 255)


def pool_addresses() -> list[str]:
    """The pool in allocation order (lowest first), without .0, .1 and .255."""
    base = int(LB_POOL.network_address)
    return [
        str(ip) for ip in LB_POOL if int(ip) - base not in _SKIPPED_HOSTS and ip != LB_POOL.broadcast_address
    ]


_POOL = frozenset(pool_addresses())


def in_pool(ip: str) -> bool:
    return ip in _POOL


def is_ours(svc: JSON) -> bool:
    spec = svc.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass")


def status_ips(svc: JSON) -> list[str]:
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [str(i["ip"]) for i in ingress if isinstance(i, dict) and i.get("ip")]


class ServiceLBController(Controller):
    name = "metallb-controller"

    def setup(self) -> None:
        self._lock = threading.Lock()
        self._assigned: dict[str, str] = {}
        self._pool = pool_addresses()
        self.services = self.informer(SERVICES)
        self.services.add_handlers(Handlers(self.enqueue, lambda _o, n: self.enqueue(n), self.enqueue))

    def assigned(self) -> dict[str, str]:
        """Service key → address, as this controller holds them (for tests and diagnostics)."""
        with self._lock:
            return dict(self._assigned)

    def sync(self, key: str) -> None:
        svc = self.services.get(key)
        if svc is None or not is_ours(svc):
            self._release(key)
            if svc is not None and (svc.get("spec") or {}).get("type") != "LoadBalancer" and status_ips(svc):
                self._write_status(svc, None)
            return
        if meta(svc).get("deletionTimestamp"):
            return
        current = status_ips(svc)
        ip = self._choose(key, svc, current)
        if ip is None:
            return
        with self._lock:
            self._assigned[key] = ip
        if self._status_differs(svc, ip):
            self._write_status(svc, ip)
            if current != [ip]:
                self.recorder.event(svc, NORMAL, "IPAllocated", f'Assigned IP ["{ip}"]')

    def _choose(self, key: str, svc: JSON, current: list[str]) -> str | None:
        """The address this Service should have, or None (after an AllocationFailed event)."""
        requested = str((svc.get("spec") or {}).get("loadBalancerIP") or "")
        taken = self._taken_by_others(key)
        with self._lock:
            mine = self._assigned.get(key)
        if requested:
            if not in_pool(requested):
                self._fail(svc, f'"{requested}" is not allowed in config')
                return None
            if requested in taken:
                self._fail(svc, f"address {requested} is already in use by {taken[requested]}")
                return None
            return requested
        for candidate in [mine, *current]:
            if candidate and in_pool(candidate) and candidate not in taken:
                return candidate
        for candidate in self._pool:
            if candidate not in taken:
                return candidate
        self._fail(svc, "no available IPs")
        return None

    def _taken_by_others(self, key: str) -> dict[str, str]:
        """address → holder: what this controller assigned, plus addresses other LoadBalancer
        Services hold in their status and are senior for (older, or same age and name first)."""
        assigned = self.assigned()
        taken = {ip: k for k, ip in assigned.items() if k != key}
        me = self.services.get(key) or {}
        my_rank = (str(meta(me).get("creationTimestamp") or ""), key)
        for other in self.services.objects():
            okey = key_of(other)
            if okey == key or not is_ours(other) or okey in assigned:
                continue
            rank = (str(meta(other).get("creationTimestamp") or ""), okey)
            for ip in status_ips(other):
                if in_pool(ip) and rank < my_rank:
                    taken.setdefault(ip, okey)
        return taken

    def _release(self, key: str) -> None:
        with self._lock:
            released = self._assigned.pop(key, None)
        if released is None:
            return
        log.info("released %s from %s", released, key)
        # MetalLB retries Services that failed to get an address whenever one is freed.
        for other in self.services.objects():
            if is_ours(other) and not status_ips(other):
                self.queue.add(key_of(other))

    @staticmethod
    def _status_differs(svc: JSON, ip: str) -> bool:
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return ingress != [{"ip": ip, "ipMode": "VIP"}]

    def _write_status(self, svc: JSON, ip: str | None) -> None:
        fresh = copy.deepcopy(svc)
        status = fresh.setdefault("status", {})
        status["loadBalancer"] = {"ingress": [{"ip": ip, "ipMode": "VIP"}]} if ip else {}
        ns, name = split_key(key_of(svc))
        try:
            self.kube.update(f"/api/v1/namespaces/{ns}/services/{name}/status", fresh)
        except Exception as err:
            if is_not_found(err):
                return
            raise

    def _fail(self, svc: JSON, why: str) -> None:
        self.recorder.event(
            svc, WARNING, "AllocationFailed", f'Failed to allocate IP for "{key_of(svc)}": {why}'
        )
