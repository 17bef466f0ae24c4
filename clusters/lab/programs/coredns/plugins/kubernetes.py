"""The kubernetes plugin: list+watch Services, EndpointSlices and Namespaces, answer cluster names.

Like CoreDNS it blocks start-up until the caches sync or ``startup_timeout`` (5 s) passes, reports
not-ready to the ready plugin until then, answers SERVFAIL while unsynced, and hands name errors in
``fallthrough`` zones to the next plugin (kubeadm: in-addr.arpa and ip6.arpa go on to forward).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from dnslib import RCODE

from clusters.lab.programs import container
from clusters.lab.programs.coredns.corefile import Directive, fqdn
from clusters.lab.programs.coredns.plugin import (
    Handler,
    Plugin,
    PluginError,
    Request,
    SetupContext,
    SetupError,
    arg_error,
    parse_duration,
    setup_error,
    zone_match,
)
from clusters.lab.programs.coredns.plugins.fallthrough import NEVER, parse_fallthrough
from clusters.lab.programs.coredns.plugins.k8s_index import Index, build_index
from clusters.lab.programs.coredns.plugins.k8s_records import Options, Outcome, PodMode, resolve, soa

if TYPE_CHECKING:
    from clusters.lab.controllers.informer import Informer

log = logging.getLogger(__name__)

RESOURCES = {
    "services": "/api/v1/services",
    "endpointslices": "/apis/discovery.k8s.io/v1/endpointslices",
    "namespaces": "/api/v1/namespaces",
}
PODS = "/api/v1/pods"
# Options CoreDNS accepts that change nothing the lab can observe (documented lab difference).
ACCEPTED = frozenset(
    {"tls", "labels", "namespace_labels", "endpoint_pod_names", "noendpoints", "ignore", "multicluster",
     "apiserver_qps", "apiserver_burst", "apiserver_max_inflight"}
)  # fmt: skip


class Kubernetes(Plugin):
    name = "kubernetes"

    def __init__(self, zones: tuple[str, ...], path: str) -> None:
        self.zones = zones
        self.path = path
        self.ttl = 5
        self.pods = PodMode.DISABLED
        self.kubeconfig = ""
        self.context = ""
        self.endpoint = ""
        self.namespaces: frozenset[str] = frozenset()
        self.fall = NEVER
        self.startup_timeout = 5.0
        self.lookup: Any = None
        self._informers: dict[str, Informer] = {}
        self._api: Any = None
        self._lock = threading.Lock()
        self._changes = 0
        self._built = -1
        self._serial = int(time.time())
        self._index = Index()

    # -- lifecycle -----------------------------------------------------------------------------

    async def startup(self) -> None:
        # imported here: the client stack costs ~0.7 s, which a Corefile without kubernetes never pays
        from clusters.lab.controllers.client import Kube
        from clusters.lab.controllers.informer import Handlers, Informer

        self._api = self._client()
        kube = Kube(self._api)
        paths = dict(RESOURCES)
        if self.pods is PodMode.VERIFIED:
            paths["pods"] = PODS
        for key, path in paths.items():
            inf = Informer(kube, path)
            inf.add_handlers(Handlers(self._changed, lambda _o, _n: self._changed(_o), self._changed))
            self._informers[key] = inf
            inf.start()
        deadline = time.monotonic() + self.startup_timeout
        next_log = time.monotonic() + 0.5
        while not self.ready():
            now = time.monotonic()
            if now >= deadline:
                log.warning("plugin/kubernetes: starting server with unsynced Kubernetes API")
                return
            if now >= next_log:
                log.info("plugin/kubernetes: waiting for Kubernetes API before starting server")
                next_log = now + 0.5
            await asyncio.sleep(0.05)

    async def shutdown(self) -> None:
        for inf in self._informers.values():
            inf.stop()
        if self._api is not None:
            api, self._api = self._api, None
            await asyncio.get_running_loop().run_in_executor(None, api.close)

    def ready(self) -> bool:
        return bool(self._informers) and all(i.synced.is_set() for i in self._informers.values())

    def _client(self) -> Any:
        from kubernetes import client, config

        if self.kubeconfig:
            if self.context:
                loader: Any = config.new_client_from_config
                return loader(
                    config_file=str(container.container_path(self.kubeconfig)), context=self.context
                )
            return container.api_client(self.kubeconfig)
        if self.endpoint:
            return client.ApiClient(client.Configuration(host=self.endpoint))
        try:
            return container.api_client()
        except RuntimeError as err:
            raise SetupError(
                "plugin/kubernetes: unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and "
                "KUBERNETES_SERVICE_PORT must be defined"
            ) from err

    def _changed(self, _obj: Any) -> None:
        with self._lock:
            self._changes += 1
            self._serial = int(time.time())

    def index(self) -> Index:
        with self._lock:
            if self._built == self._changes:
                return self._index
            version, serial = self._changes, self._serial
        svcs = self._informers["services"].objects()
        slices = self._informers["endpointslices"].objects()
        nss = self._informers["namespaces"].objects()
        if self.namespaces:
            svcs = [s for s in svcs if (s.get("metadata") or {}).get("namespace") in self.namespaces]
            nss = [n for n in nss if (n.get("metadata") or {}).get("name") in self.namespaces]
        idx = build_index(svcs, slices, nss, serial)
        with self._lock:
            self._index, self._built = idx, version
        return idx

    def _pod_ips(self) -> frozenset[str]:
        inf = self._informers.get("pods")
        if inf is None:
            return frozenset()
        return frozenset(
            ip.get("ip", "") for p in inf.objects() for ip in (p.get("status") or {}).get("podIPs") or []
        )

    # -- serving -------------------------------------------------------------------------------

    async def serve(self, req: Request, nxt: Handler) -> Any:
        zone = zone_match(self.zones, req.qname)
        if not zone:
            return await nxt(req)
        if not self.ready():
            raise PluginError(self.name, "Kubernetes API not synced", RCODE.SERVFAIL)
        idx = self.index()
        forward_zone = next((z for z in self.zones if not z.endswith("arpa.")), "cluster.local.")
        opt = Options(forward_zone, self.ttl, self.pods, self._pod_ips())
        res = resolve(idx, req.qname, req.qtype, zone, opt)
        if res.outcome is Outcome.NXDOMAIN and self.fall.through(req.qname):
            return await nxt(req)
        if res.outcome is not Outcome.ANSWER:
            rcode = RCODE.NXDOMAIN if res.outcome is Outcome.NXDOMAIN else RCODE.NOERROR
            resp = req.reply(rcode, authoritative=True)
            resp.add_auth(soa(zone, idx.serial, self.ttl))
            return resp
        resp = req.reply(authoritative=True)
        for rr in res.answer:
            resp.add_answer(rr)
        for rr in res.extra:
            resp.add_ar(rr)
        chase = res.chase
        for _ in range(MAX_IN_ZONE_CNAMES):
            # An ExternalName pointing inside our zones is answered from the index, as the real
            # plugin does; only targets outside them go through the rest of the chain.
            in_zone = zone_match(self.zones, chase) if chase else None
            if not in_zone:
                break
            inner = resolve(idx, chase, req.qtype, in_zone, opt)
            if inner.outcome is not Outcome.ANSWER:
                return resp
            for rr in inner.answer:
                resp.add_answer(rr)
            chase = inner.chase
        res_chase = chase
        if res_chase and self.lookup is not None and not zone_match(self.zones, res_chase):
            try:
                chased = await self.lookup(res_chase, req.qtype)
            except PluginError:
                chased = None
            if chased is not None:
                for rr in chased.rr:
                    resp.add_answer(rr)
        return resp


MAX_IN_ZONE_CNAMES = 8
"""CNAME hops followed inside the cluster zones before giving up (a CNAME loop)."""


def setup(d: Directive, ctx: SetupContext) -> Kubernetes:
    zones = tuple(fqdn(z) for z in d.args) or ctx.zones
    k = Kubernetes(zones, ctx.path)
    k.lookup = ctx.lookup
    for opt in d.block:
        a = opt.args
        if opt.name == "pods":
            if len(a) != 1 or a[0] not in {m.value for m in PodMode}:
                raise setup_error("kubernetes", ctx.path, opt.line, f"pods: invalid value {' '.join(a)!r}")
            k.pods = PodMode(a[0])
        elif opt.name == "ttl":
            if len(a) != 1 or not a[0].isdigit() or int(a[0]) > 3600:
                raise setup_error("kubernetes", ctx.path, opt.line, f"ttl must be in range [0, 3600]: {a}")
            k.ttl = int(a[0])
        elif opt.name == "fallthrough":
            k.fall = parse_fallthrough(a)
        elif opt.name == "kubeconfig":
            if len(a) not in (1, 2):
                raise arg_error("kubernetes", ctx.path, opt)
            k.kubeconfig, k.context = a[0], a[1] if len(a) == 2 else ""
        elif opt.name == "endpoint":
            if len(a) != 1:
                raise arg_error("kubernetes", ctx.path, opt)
            k.endpoint = a[0]
        elif opt.name == "namespaces":
            k.namespaces = frozenset(a)
        elif opt.name == "startup_timeout":
            try:
                k.startup_timeout = parse_duration(a[0]) if len(a) == 1 else -1.0
            except ValueError as err:
                raise setup_error("kubernetes", ctx.path, opt.line, str(err)) from err
            if k.startup_timeout < 0:
                raise arg_error("kubernetes", ctx.path, opt)
        elif opt.name not in ACCEPTED:
            raise setup_error("kubernetes", ctx.path, opt.line, f"unknown property '{opt.name}'")
    return k
