"""What every fault module shares: the record-then-break / restore-then-forget protocol, node
commands that fail loudly, and the Kubernetes API calls the faults make.

Not an activity module (no ``__all__`` of activities): Chaos Toolkit never calls these.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from clusters.errors import CommandFailed, UsageProblem
from clusters.handle import Cluster
from faults import context, originals
from faults.originals import FaultRecord, Revert

log = logging.getLogger(__name__)

API_TIMEOUT = 30.0
NODE_TIMEOUT = 30.0
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
Result = dict[str, Any]


def record(
    cluster: Cluster,
    fault: str,
    target: str,
    revert: Callable[..., Any],
    arguments: Mapping[str, Any],
    original: Callable[[], Mapping[str, Any]],
) -> FaultRecord:
    """Save the original before breaking anything; reuse an earlier record of the same fault."""
    existing = originals.find(cluster, fault, target)
    if existing is not None:
        return existing
    rec = FaultRecord(
        fault=fault,
        target=target,
        run_id=context.run_id(),
        revert=Revert(revert.__module__, revert.__name__, dict(arguments)),
        original=dict(original()),
    )
    return originals.save(cluster, rec)


def restore(
    cluster: Cluster, fault: str, target: str, put_back: Callable[[FaultRecord], Result]
) -> Result:
    """Put the saved original back and forget it; nothing saved means nothing to do (idempotent)."""
    rec = originals.find(cluster, fault, target)
    if rec is None:
        log.info("revert %s on %s: nothing saved, nothing to do", fault, target)
        return {"fault": fault, "target": target, "reverted": False}
    result = put_back(rec)
    originals.delete(cluster, rec)
    log.info("reverted %s on %s (injected by run %s)", fault, target, rec.run_id)
    return {"fault": fault, "target": target, "reverted": True, "run_id": rec.run_id, **result}


def node_run(
    cluster: Cluster, node: str, argv: Sequence[str], stdin: str | None = None, timeout: float = NODE_TIMEOUT
) -> str:
    """Run ``argv`` on ``node``; a failure raises with the command, exit code and stderr tail."""
    result = cluster.node_exec(node, list(argv), stdin=stdin, timeout=timeout)
    if not result.ok:
        raise CommandFailed([f"[{node}]", *argv], result.returncode, result.stderr)
    return result.stdout


def node_try(cluster: Cluster, node: str, argv: Sequence[str], stdin: str | None = None) -> bool:
    """Run ``argv`` on ``node``; True when it exited 0 (for probes like ``test -e``)."""
    return cluster.node_exec(node, list(argv), stdin=stdin, timeout=NODE_TIMEOUT).ok


CONTROL_PLANE_ROLE = "node-role.kubernetes.io/control-plane"


def resolve_node(cluster: Cluster, node: str) -> str:
    """``node`` itself, or for ``@worker1``/``@worker2``/… the N-th worker by name (nodes without
    the control-plane role; all nodes if there are too few workers), so one experiment file runs
    on kind (``knetcheck-calico-worker``), the lab and an existing cluster alike."""
    if not node.startswith("@"):
        names = cluster.node_names()
        if node not in names:
            raise UsageProblem(f"no node {node!r} in cluster {cluster.name!r}; nodes: {', '.join(names)}")
        return node
    index = node.removeprefix("@worker")
    if index == node or not (index or "1").isdigit():
        raise UsageProblem(f"node {node!r}: write a node name or @worker1, @worker2, ...")
    nodes = core(cluster).list_node(_request_timeout=API_TIMEOUT).items
    workers = sorted(n.metadata.name for n in nodes if CONTROL_PLANE_ROLE not in (n.metadata.labels or {}))
    pool = workers if len(workers) >= int(index or "1") else sorted(n.metadata.name for n in nodes)
    if len(pool) < int(index or "1"):
        raise UsageProblem(f"node {node!r}: cluster {cluster.name!r} has only {len(pool)} node(s)")
    return str(pool[int(index or "1") - 1])


def core(cluster: Cluster) -> Any:
    from kubernetes import client

    return client.CoreV1Api(cluster.api_client)


def apps(cluster: Cluster) -> Any:
    from kubernetes import client

    return client.AppsV1Api(cluster.api_client)


def networking(cluster: Cluster) -> Any:
    from kubernetes import client

    return client.NetworkingV1Api(cluster.api_client)


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rollout_restart(cluster: Cluster, kind: str, name: str, namespace: str) -> Result:
    """``kubectl rollout restart``: stamp the pod template, so the controller replaces every pod."""
    stamp = now()
    body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    if kind.lower() in ("deployment", "deploy", "deployments"):
        apps(cluster).patch_namespaced_deployment(name, namespace, body, _request_timeout=API_TIMEOUT)
    elif kind.lower() in ("daemonset", "ds", "daemonsets"):
        apps(cluster).patch_namespaced_daemon_set(name, namespace, body, _request_timeout=API_TIMEOUT)
    else:
        raise UsageProblem(f"cannot restart a {kind!r}: use deployment or daemonset")
    log.info("rollout restart %s %s/%s at %s", kind, namespace, name, stamp)
    return {"restarted": f"{kind}/{namespace}/{name}", "at": stamp}


def is_not_found(exc: BaseException) -> bool:
    from kubernetes.client.exceptions import ApiException

    return isinstance(exc, ApiException) and exc.status == 404
