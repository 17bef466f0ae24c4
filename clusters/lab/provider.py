"""The lab provider: the embedded cluster behind the same Cluster handle as kind.

It attaches to a lab that is already up (``knetcheck lab up``) and leaves it running, or starts
one and stops it at the end unless ``--keep-cluster``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clusters import proc
from clusters.capabilities import Capability
from clusters.handle import Cluster
from clusters.lab import control, layout
from clusters.proc import CommandResult
from clusters.provider import ClusterRequest
from clusters.recipes import load_recipe

log = logging.getLogger(__name__)

LAB_CAPABILITIES = frozenset({Capability.NODE_ACCESS, Capability.LOAD_BALANCER, Capability.INGRESS})
"""What the lab itself provides whatever its CNI: node shells, a LoadBalancer controller handing
out 172.18.255.x (like cloud-provider-kind or MetalLB on kind), and ingress-nginx."""


@dataclass(frozen=True)
class LabNodeChannel:
    """``docker exec`` for lab nodes: the node shell enters the node's netns and file tree."""

    root: Path
    prefix: str = layout.PREFIX

    def exec(self, node: str, argv: Sequence[str], stdin: str | None, timeout: float) -> CommandResult:
        from clusters.lab.node.shell import shell_argv

        argv = shell_argv(self.root, node, argv, self.prefix)
        return proc.run(argv, stdin=stdin, timeout=timeout, check=False)


class LabProvider:
    name = "lab"

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or layout.default_root()
        self._started = False

    def acquire(self, request: ClusterRequest) -> Cluster:
        cni = request.cni or load_recipe("lab")
        config = control.LabConfig(root=self.root, nodes=request.nodes, cni=cni.name)
        already = control.status(self.root)
        lab = control.up(config)
        self._started = not (already.running and already.api_url)
        log.info("lab %s: %s, cni=%s, nodes %s", "started" if self._started else "attached",
                 self.root, lab.cni, ", ".join(lab.nodes))
        return Cluster(
            name=layout.CLUSTER_NAME,
            provider=self.name,
            kubeconfig=lab.kubeconfig,
            context=None,
            cni=cni,
            capabilities=frozenset(cni.capabilities | LAB_CAPABILITIES),
            node_channel=LabNodeChannel(self.root, lab.prefix),
            run_id=request.run_id,
        )

    def release(self, cluster: Cluster, request: ClusterRequest) -> None:
        if self._started and not request.keep_cluster:
            control.down(self.root)
