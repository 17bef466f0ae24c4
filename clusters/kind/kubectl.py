"""kubectl against one kind cluster: installs, readiness waits, and the config-hash ConfigMap.

The provider uses the kubectl binary rather than the Python client here because manifests
are installed from URLs (``kubectl create -f <url>``) and because each command is one a person
can paste to reproduce a failure.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusters.errors import ClusterUnavailable
from clusters.kind.driver import Timeouts, tail
from clusters.proc import CommandResult, run
from clusters.recipes import ReadinessObject

log = logging.getLogger(__name__)

_ROLLOUT_KINDS = {"daemonset": "daemonset", "deployment": "deployment", "statefulset": "statefulset"}


def _not_found(res: CommandResult) -> bool:
    text = res.stderr.lower()
    # Also "the server doesn't have a resource type": the CRD is not installed yet.
    markers = ("notfound", "not found", "no matching resources", "doesn't have a resource type")
    return any(m in text for m in markers)


@dataclass(frozen=True)
class Kubectl:
    kubeconfig: Path
    context: str
    timeouts: Timeouts

    def argv(self, *args: str) -> list[str]:
        return ["kubectl", f"--kubeconfig={self.kubeconfig}", f"--context={self.context}", *args]

    def run(self, *args: str, timeout: float | None = None, stdin: str | None = None) -> CommandResult:
        return run(self.argv(*args), timeout=timeout or self.timeouts.quick, stdin=stdin)

    def install_manifest(self, verb: str, source: str) -> None:
        """``create`` or ``apply`` one manifest URL or path."""
        self.run(verb, "-f", source, timeout=self.timeouts.install)

    def apply_object(self, obj: Mapping[str, Any]) -> None:
        self.run("apply", "-f", "-", stdin=json.dumps(obj))

    def get_object(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        """The object as JSON, or None when it does not exist."""
        res = run(
            self.argv("-n", namespace, "get", kind, name, "-o", "json"),
            timeout=self.timeouts.quick,
            check=False,
        )
        if res.ok:
            obj: dict[str, Any] = json.loads(res.stdout)
            return obj
        if _not_found(res):
            return None
        raise ClusterUnavailable(
            f"cannot read {kind} {namespace}/{name} ({tail(res.stderr)}); "
            f"check the cluster with: {' '.join(self.argv('get', 'nodes'))}"
        )

    def _until_ready(self, what: str, *args: str) -> None:
        """Run a kubectl wait-style command until it succeeds or the deadline passes.

        kubectl's own ``--timeout`` waits for the condition, but it fails at once when the
        object does not exist yet (an operator creates it later), so that case is retried.
        """
        deadline = time.monotonic() + self.timeouts.ready
        while True:
            remaining = max(1, int(deadline - time.monotonic()))
            res = run(
                self.argv(*args, f"--timeout={remaining}s"),
                timeout=remaining + self.timeouts.quick,
                check=False,
            )
            if res.ok:
                log.info("ready: %s", what)
                return
            if not _not_found(res) or time.monotonic() + self.timeouts.poll_interval >= deadline:
                raise ClusterUnavailable(
                    f"{what} not ready within {self.timeouts.ready:.0f}s ({tail(res.stderr or res.stdout)}); "
                    f"inspect with: {' '.join(self.argv(*args))}"
                )
            time.sleep(self.timeouts.poll_interval)

    def wait_nodes_ready(self) -> None:
        self._until_ready("nodes", "wait", "--for=condition=Ready", "nodes", "--all")

    def wait_object(self, obj: ReadinessObject) -> None:
        kind = obj.kind.lower()
        what = f"{obj.kind} {obj.namespace}/{obj.name}"
        if kind in _ROLLOUT_KINDS:
            self._until_ready(what, "-n", obj.namespace, "rollout", "status", f"{kind}/{obj.name}")
        else:
            # TigeraStatus and other status-only objects report an Available condition.
            ns = ["-n", obj.namespace] if obj.namespace else []
            self._until_ready(what, *ns, "wait", "--for=condition=Available", f"{kind}/{obj.name}")

    def wait_coredns(self) -> None:
        self._until_ready(
            "Deployment kube-system/coredns",
            "-n",
            "kube-system",
            "wait",
            "--for=condition=Available",
            "deployment/coredns",
        )
