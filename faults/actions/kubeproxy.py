"""kube-proxy configuration faults: a bad ``config.conf`` in ConfigMap ``kube-system/kube-proxy``.

Running kube-proxy ignores ConfigMap edits (kubelet swaps a symlink its file watch never sees), so
every variant needs :func:`restart_kube_proxy` to take effect, and so does the fix. A crashing
kube-proxy keeps the node's last rules: existing Services keep working, new ones are not
programmed (reference §3.3).
"""

from __future__ import annotations

import logging
from typing import Any

import yaml

from faults import context
from faults.actions import _support as s
from faults.originals import FaultRecord

__all__ = ["break_kube_proxy_config", "restart_kube_proxy", "restore_kube_proxy_config"]

log = logging.getLogger(__name__)

NAMESPACE = "kube-system"
VARIANTS = ("mode-foo", "invalid-yaml", "wrong-kubeconfig", "wrong-cluster-cidr")
WRONG_KUBECONFIG = "/wrong/path"
WRONG_CLUSTER_CIDR = "10.99.0.0/16"


def broken_config(original: str, variant: str, cluster_cidr: str = WRONG_CLUSTER_CIDR) -> str:
    """``original`` (a KubeProxyConfiguration) broken the way ``variant`` names."""
    if variant == "invalid-yaml":
        return original.rstrip("\n") + "\nmode: [iptables\n"
    doc = yaml.safe_load(original) or {}
    if not isinstance(doc, dict):
        raise ValueError("config.conf is not a YAML mapping")
    if variant == "mode-foo":
        doc["mode"] = "foo"
    elif variant == "wrong-kubeconfig":
        doc.setdefault("clientConnection", {})["kubeconfig"] = WRONG_KUBECONFIG
    elif variant == "wrong-cluster-cidr":
        doc["clusterCIDR"] = cluster_cidr
    else:
        raise ValueError(f"kube-proxy fault variant {variant!r} is not one of {', '.join(VARIANTS)}")
    return str(yaml.safe_dump(doc, sort_keys=False))


def break_kube_proxy_config(
    variant: str = "mode-foo",
    cluster_cidr: str = WRONG_CLUSTER_CIDR,
    configmap: str = "kube-proxy",
    key: str = "config.conf",
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Break kube-proxy's configuration in ConfigMap ``kube-system/<configmap>``.

    Variants (reference §3.3): ``mode-foo`` (exits: invalid ProxyMode), ``invalid-yaml`` (exits:
    failed to decode), ``wrong-kubeconfig`` (``clientConnection.kubeconfig: /wrong/path``, exits:
    stat ... no such file), ``wrong-cluster-cidr`` (runs, but pod->Service traffic is masqueraded:
    ``cluster_cidr`` is used). Follow with :func:`restart_kube_proxy`. Revert:
    :func:`restore_kube_proxy_config`.
    """
    if variant not in VARIANTS:
        raise ValueError(f"kube-proxy fault variant {variant!r} is not one of {', '.join(VARIANTS)}")
    cluster = context.cluster_for(configuration)
    core = s.core(cluster)
    cm = core.read_namespaced_config_map(configmap, NAMESPACE, _request_timeout=s.API_TIMEOUT)
    data = dict(cm.data or {})
    if key not in data:
        raise ValueError(f"ConfigMap {NAMESPACE}/{configmap} has no key {key!r}")
    rec = s.record(cluster, "kube-proxy-config", f"configmap/{NAMESPACE}/{configmap}/{key}",
                   restore_kube_proxy_config,
                   {"configmap": configmap, "key": key, "restart": True},
                   lambda: {"config": str(data[key])})
    broken = broken_config(str(rec.original["config"]), variant, cluster_cidr)
    core.patch_namespaced_config_map(configmap, NAMESPACE, {"data": {key: broken}},
                                     _request_timeout=s.API_TIMEOUT)
    log.info("kube-proxy config %s/%s[%s] broken: %s", NAMESPACE, configmap, key, variant)
    return {"configmap": f"{NAMESPACE}/{configmap}", "key": key, "variant": variant}


def restore_kube_proxy_config(
    configmap: str = "kube-proxy",
    key: str = "config.conf",
    restart: bool = False,
    daemonset: str = "kube-proxy",
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Put back the ``config.conf`` :func:`break_kube_proxy_config` saved; with ``restart``, also
    restart kube-proxy (only if something was put back): it never re-reads an edited ConfigMap."""
    cluster = context.cluster_for(configuration)

    def put_back(rec: FaultRecord) -> s.Result:
        body = {"data": {key: str(rec.original["config"])}}
        s.core(cluster).patch_namespaced_config_map(
            configmap, NAMESPACE, body, _request_timeout=s.API_TIMEOUT
        )
        if restart:
            s.rollout_restart(cluster, "daemonset", daemonset, NAMESPACE)
        return {"configmap": f"{NAMESPACE}/{configmap}", "key": key, "restarted": restart}

    return s.restore(cluster, "kube-proxy-config", f"configmap/{NAMESPACE}/{configmap}/{key}", put_back)


def restart_kube_proxy(
    daemonset: str = "kube-proxy",
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``kubectl -n kube-system rollout restart ds/kube-proxy``: the only way a ConfigMap change
    (the fault, or its fix) reaches kube-proxy."""
    return s.rollout_restart(context.cluster_for(configuration), "daemonset", daemonset, NAMESPACE)
