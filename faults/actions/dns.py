"""Cluster DNS faults: a CoreDNS forwarding loop, a kube-dns Service that selects nothing, CoreDNS
scaled to zero. Each inject saves what it changes first (see :mod:`faults.originals`), so its
revert works from any process, and a revert with nothing saved does nothing.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from faults import context
from faults.actions import _support as s
from faults.originals import FaultRecord

__all__ = [
    "break_dns_service_selector",
    "loop_coredns",
    "restart_coredns",
    "restore_coredns_replicas",
    "restore_corefile",
    "restore_dns_service_selector",
    "scale_coredns_to_zero",
]

log = logging.getLogger(__name__)

NAMESPACE = "kube-system"
FORWARD = re.compile(r"^(?P<indent>\s*)forward\s+\.\s+[^{\n]*", re.MULTILINE)


def _loop_target(cluster: Any, target: str, service: str) -> str:
    if target == "localhost":
        return "127.0.0.1"
    if target == "kube-dns":
        svc = s.core(cluster).read_namespaced_service(service, NAMESPACE, _request_timeout=s.API_TIMEOUT)
        return str(svc.spec.cluster_ip)
    raise ValueError(f"loop target {target!r} is not 'localhost' or 'kube-dns'")


def loop_coredns(
    target: str = "localhost",
    configmap: str = "coredns",
    service: str = "kube-dns",
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Make CoreDNS forward to itself, so its ``loop`` plugin halts it (CrashLoopBackOff).

    Rewrites every ``forward . <upstream>`` in the Corefile of ConfigMap ``kube-system/<configmap>``
    to ``forward . 127.0.0.1`` (``target="localhost"``) or to the kube-dns ClusterIP
    (``target="kube-dns"``, which loops through the Service). The running pods only notice at
    their next reload (minutes on a real cluster): follow with :func:`restart_coredns`.
    Revert: :func:`restore_corefile`.
    """
    cluster = context.cluster_for(configuration)
    upstream = _loop_target(cluster, target, service)
    core = s.core(cluster)
    cm = core.read_namespaced_config_map(configmap, NAMESPACE, _request_timeout=s.API_TIMEOUT)
    corefile = str((cm.data or {}).get("Corefile", ""))
    if not FORWARD.search(corefile):
        raise ValueError(f"ConfigMap {NAMESPACE}/{configmap} has no 'forward .' line to loop")
    s.record(cluster, "coredns-loop", f"configmap/{NAMESPACE}/{configmap}", restore_corefile,
             {"configmap": configmap, "restart": True}, lambda: {"Corefile": corefile})
    looped = FORWARD.sub(lambda m: f"{m.group('indent')}forward . {upstream} ", corefile)
    core.patch_namespaced_config_map(configmap, NAMESPACE, {"data": {"Corefile": looped}},
                                     _request_timeout=s.API_TIMEOUT)
    log.info("CoreDNS in %s/%s now forwards to %s", NAMESPACE, configmap, upstream)
    return {"configmap": f"{NAMESPACE}/{configmap}", "forward": upstream}


def restore_corefile(
    configmap: str = "coredns",
    restart: bool = False,
    deployment: str = "coredns",
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Put back the Corefile :func:`loop_coredns` saved; with ``restart``, also restart CoreDNS
    (only if something was put back) so the fix applies now, as the runbook says."""
    cluster = context.cluster_for(configuration)

    def put_back(rec: FaultRecord) -> s.Result:
        body = {"data": {"Corefile": str(rec.original["Corefile"])}}
        s.core(cluster).patch_namespaced_config_map(
            configmap, NAMESPACE, body, _request_timeout=s.API_TIMEOUT
        )
        if restart:
            s.rollout_restart(cluster, "deployment", deployment, NAMESPACE)
        return {"configmap": f"{NAMESPACE}/{configmap}", "restarted": restart}

    return s.restore(cluster, "coredns-loop", f"configmap/{NAMESPACE}/{configmap}", put_back)


def restart_coredns(
    deployment: str = "coredns",
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``kubectl -n kube-system rollout restart deploy/coredns``: apply a Corefile change now
    instead of waiting for the reload plugin and kubelet's ConfigMap refresh (up to ~2 min)."""
    return s.rollout_restart(context.cluster_for(configuration), "deployment", deployment, NAMESPACE)


def break_dns_service_selector(
    service: str = "kube-dns",
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Point Service ``kube-system/<service>`` at a label no pod has: no endpoints, DNS fails fast
    (kube-proxy REJECTs a Service without endpoints). Revert: :func:`restore_dns_service_selector`."""
    cluster = context.cluster_for(configuration)
    svc = s.core(cluster).read_namespaced_service(service, NAMESPACE, _request_timeout=s.API_TIMEOUT)
    selector = dict(svc.spec.selector or {})
    if not selector:
        raise ValueError(f"Service {NAMESPACE}/{service} has no selector to break")
    s.record(cluster, "dns-service-selector", f"service/{NAMESPACE}/{service}", restore_dns_service_selector,
             {"service": service}, lambda: {"selector": json.dumps(selector, sort_keys=True)})
    nothing = {key: f"knetcheck-selects-nothing-{context.run_id()}" for key in selector}
    s.core(cluster).patch_namespaced_service(service, NAMESPACE, {"spec": {"selector": nothing}},
                                             _request_timeout=s.API_TIMEOUT)
    return {"service": f"{NAMESPACE}/{service}", "selector": nothing}


def restore_dns_service_selector(
    service: str = "kube-dns",
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Put back the selector :func:`break_dns_service_selector` saved (a JSON patch replace)."""
    cluster = context.cluster_for(configuration)

    def put_back(rec: FaultRecord) -> s.Result:
        selector = json.loads(str(rec.original["selector"]))
        patch = [{"op": "replace", "path": "/spec/selector", "value": selector}]
        s.core(cluster).patch_namespaced_service(service, NAMESPACE, patch, _request_timeout=s.API_TIMEOUT)
        return {"selector": selector}

    return s.restore(cluster, "dns-service-selector", f"service/{NAMESPACE}/{service}", put_back)


def scale_coredns_to_zero(
    deployment: str = "coredns",
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``kubectl -n kube-system scale deploy/coredns --replicas=0``. Nothing scales it back on a
    kubeadm/kind cluster (no addon manager). Revert: :func:`restore_coredns_replicas`."""
    cluster = context.cluster_for(configuration)
    api = s.apps(cluster)
    scale = api.read_namespaced_deployment_scale(deployment, NAMESPACE, _request_timeout=s.API_TIMEOUT)
    replicas = int(scale.spec.replicas or 0)
    s.record(cluster, "coredns-replicas", f"deployment/{NAMESPACE}/{deployment}", restore_coredns_replicas,
             {"deployment": deployment}, lambda: {"replicas": replicas})
    api.patch_namespaced_deployment_scale(deployment, NAMESPACE, {"spec": {"replicas": 0}},
                                          _request_timeout=s.API_TIMEOUT)
    return {"deployment": f"{NAMESPACE}/{deployment}", "replicas": 0, "was": replicas}


def restore_coredns_replicas(
    deployment: str = "coredns",
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Scale CoreDNS back to the replica count :func:`scale_coredns_to_zero` saved."""
    cluster = context.cluster_for(configuration)

    def put_back(rec: FaultRecord) -> s.Result:
        replicas = int(rec.original["replicas"])
        s.apps(cluster).patch_namespaced_deployment_scale(
            deployment, NAMESPACE, {"spec": {"replicas": replicas}}, _request_timeout=s.API_TIMEOUT
        )
        return {"replicas": replicas}

    return s.restore(cluster, "coredns-replicas", f"deployment/{NAMESPACE}/{deployment}", put_back)
