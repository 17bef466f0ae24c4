"""The node channel of an existing cluster: one privileged debug pod per node, opt-in only.

An existing cluster gives us no ``docker exec`` and no SSH, so node-level work goes the way
``kubectl debug node/…`` does: a pod pinned to the node with the host's PID and network
namespaces, and ``nsenter -t 1`` into PID 1's namespaces to run the command as if on the node.
Pods are created on first use (most runs never touch a node), live in one namespace per run
that carries the run-id labels (so a sweep finds a crashed run's pods), and go at release.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clusters import proc
from clusters.errors import ClusterUnavailable
from clusters.labels import run_labels
from clusters.proc import CommandResult

log = logging.getLogger(__name__)

DEBUG_IMAGE = "docker.io/library/busybox:1.36.1"
"""Pinned: busybox ships ``nsenter`` and ``sleep`` and nothing else we could trip over."""
READY_TIMEOUT = 120.0
KUBECTL_TIMEOUT = 60.0
NSENTER = ("nsenter", "-t", "1", "-m", "-u", "-n", "-i", "--")


def namespace_for(run_id: str) -> str:
    return f"kc-{run_id}-nodes"


def pod_name(node: str) -> str:
    """``kc-node-<node>``, shortened with a hash when the node name would overflow 63 characters."""
    slug = re.sub(r"[^a-z0-9-]+", "-", node.lower()).strip("-")
    if len(slug) > 40:
        digest = hashlib.sha256(node.encode()).hexdigest()[:8]
        slug = f"{slug[:31].rstrip('-')}-{digest}"
    return f"kc-node-{slug}"


def namespace_manifest(run_id: str) -> dict[str, Any]:
    labels = {
        **run_labels(run_id),
        # Privileged pods are refused in namespaces that enforce the baseline/restricted profile.
        "pod-security.kubernetes.io/enforce": "privileged",
    }
    metadata = {"name": namespace_for(run_id), "labels": labels}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}


def pod_manifest(node: str, run_id: str) -> dict[str, Any]:
    """A pod on ``node`` that can enter the node's namespaces; it only sleeps until deleted."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(node),
            "namespace": namespace_for(run_id),
            "labels": {**run_labels(run_id), "knetcheck.io/node": pod_name(node).removeprefix("kc-node-")},
        },
        "spec": {
            "nodeName": node,
            "hostPID": True,
            "hostNetwork": True,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {
                    "name": "node",
                    "image": DEBUG_IMAGE,
                    "command": ["sleep", "2147483647"],
                    "securityContext": {"privileged": True},
                }
            ],
        },
    }


class DebugPodChannel:
    """A :class:`~clusters.handle.NodeChannel` over privileged debug pods; mutable (pods appear
    on first use), so it is kept out of the frozen Cluster's equality."""

    def __init__(self, kubeconfig: Path, context: str | None, run_id: str):
        self.kubeconfig = kubeconfig
        self.context = context
        self.run_id = run_id
        self.namespace = namespace_for(run_id)
        self._ready: set[str] = set()
        self._namespace_made = False
        self._lock = threading.Lock()

    def kubectl(self, *args: str) -> list[str]:
        argv = ["kubectl", f"--kubeconfig={self.kubeconfig}"]
        if self.context:
            argv.append(f"--context={self.context}")
        return [*argv, *args]

    def exec_argv(self, node: str, argv: Sequence[str], stdin: bool) -> list[str]:
        flags = ["-i"] if stdin else []
        return self.kubectl("-n", self.namespace, "exec", *flags, pod_name(node), "--", *NSENTER, *argv)

    def exec(self, node: str, argv: Sequence[str], stdin: str | None, timeout: float) -> CommandResult:
        self._ensure_pod(node)
        return proc.run(self.exec_argv(node, argv, stdin is not None), timeout=timeout, stdin=stdin,
                        check=False)

    def _apply(self, manifest: dict[str, Any]) -> None:
        proc.run(self.kubectl("apply", "-f", "-"), stdin=json.dumps(manifest), timeout=KUBECTL_TIMEOUT)

    def _ensure_pod(self, node: str) -> None:
        with self._lock:
            if node in self._ready:
                return
            if not self._namespace_made:
                self._apply(namespace_manifest(self.run_id))
                self._namespace_made = True
            self._apply(pod_manifest(node, self.run_id))
            waited = proc.run(
                self.kubectl("-n", self.namespace, "wait", "--for=condition=Ready",
                             f"pod/{pod_name(node)}", f"--timeout={int(READY_TIMEOUT)}s"),
                timeout=READY_TIMEOUT + 15, check=False,
            )
            if not waited.ok:
                raise ClusterUnavailable(
                    f"debug pod {self.namespace}/{pod_name(node)} on node {node} did not become Ready "
                    f"in {int(READY_TIMEOUT)}s (image {DEBUG_IMAGE}): see `kubectl -n {self.namespace} "
                    f"describe pod {pod_name(node)}`"
                )
            self._ready.add(node)

    def close(self) -> None:
        """Delete the run's debug namespace (and so every debug pod); safe to call twice."""
        with self._lock:
            if not self._namespace_made:
                return
            done = proc.run(
                self.kubectl("delete", "namespace", self.namespace, "--ignore-not-found",
                             "--timeout=90s"),
                timeout=100, check=False,
            )
            if not done.ok:  # the namespace carries the run labels: the next run's sweep removes it
                log.warning("could not delete debug namespace %s (exit %d): %s", self.namespace,
                            done.returncode, done.stderr.strip()[-300:])
            self._namespace_made = False
            self._ready.clear()
