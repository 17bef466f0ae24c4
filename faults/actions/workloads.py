"""Workload actions experiments need around a fault: restarting a Deployment or DaemonSet the way
``kubectl rollout restart`` does, a canary pod that must get a sandbox after a fault (node faults
only show on NEW pods), and cleaning up the run's chaos namespace.
"""

from __future__ import annotations

import logging
from typing import Any

from faults import context, workspace
from faults.actions import _support as s

__all__ = ["create_canary_pod", "delete_canary_pod", "delete_chaos_namespace", "rollout_restart"]

log = logging.getLogger(__name__)


def rollout_restart(
    kind: str,
    name: str,
    namespace: str = "kube-system",
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``kubectl -n <namespace> rollout restart <kind>/<name>`` (``deployment`` or ``daemonset``):
    stamp ``kubectl.kubernetes.io/restartedAt`` on the pod template so every pod is replaced."""
    return s.rollout_restart(context.cluster_for(configuration), kind, name, namespace)


def create_canary_pod(
    node: str,
    name: str = "canary",
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create an agnhost pod bound to ``node`` in the run's chaos namespace, without waiting: after
    a CNI or IPAM fault its sandbox fails, and the events it gets are the doctor's evidence. It
    starts by itself once the fault is fixed. Undo: :func:`delete_canary_pod`."""
    cluster = context.cluster_for(configuration)
    node = s.resolve_node(cluster, node)
    run = context.run_id()
    namespace = workspace.ensure_namespace(cluster, run)
    workspace.ensure_pod(cluster, namespace, workspace.agnhost_pod(name, run, "canary", node))
    return {"pod": f"{namespace}/{name}", "node": node}


def delete_canary_pod(
    name: str = "canary",
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Delete the canary pod (already gone is fine)."""
    cluster = context.cluster_for(configuration)
    namespace = workspace.namespace_name(context.run_id())
    try:
        s.core(cluster).delete_namespaced_pod(name, namespace, grace_period_seconds=0,
                                              _request_timeout=s.API_TIMEOUT)
    except Exception as exc:
        if not s.is_not_found(exc):
            raise
        return {"pod": f"{namespace}/{name}", "deleted": False}
    return {"pod": f"{namespace}/{name}", "deleted": True}


def delete_chaos_namespace(
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Delete the run's chaos namespace (prober, canaries, demo apps); already gone is fine."""
    cluster = context.cluster_for(configuration)
    run = context.run_id()
    return {"namespace": workspace.namespace_name(run), "deleted": workspace.delete_namespace(cluster, run)}
