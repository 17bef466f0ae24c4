"""The Cluster handle: the one thing suites and faults hold to reach any cluster.

It carries a kubeconfig and context (for the official ``kubernetes`` client and for the
commands a person can paste), the CNI recipe, declared capabilities, and the node channel.
The provider name is kept for display only; code above ``clusters`` must not branch on it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from clusters.capabilities import Capability
from clusters.errors import UsageProblem
from clusters.proc import CommandResult

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from clusters.recipes import CniRecipe


class NodeChannel(Protocol):
    """Runs a command on a node: ``docker exec`` on kind, a node shell in the lab, a debug pod
    on an existing cluster. Never a shell string: ``argv`` is passed as a list end to end."""

    def exec(self, node: str, argv: Sequence[str], stdin: str | None, timeout: float) -> CommandResult: ...


@dataclass(frozen=True)
class NoNodeChannel:
    """The channel of a cluster without node access: every call explains how to get it."""

    reason: str

    def exec(self, node: str, argv: Sequence[str], stdin: str | None, timeout: float) -> CommandResult:
        raise UsageProblem(f"no node access to {node}: {self.reason}")


@dataclass(frozen=True)
class Cluster:
    name: str
    provider: str
    kubeconfig: Path
    context: str | None
    cni: CniRecipe
    capabilities: frozenset[Capability]
    node_channel: NodeChannel = field(compare=False)
    run_id: str = ""

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def missing(self, capability: Capability) -> str | None:
        """The skip reason when ``capability`` is absent, naming the CNI and the capability."""
        if self.has(capability):
            return None
        return f"cni={self.cni.name} on {self.provider} cluster {self.name!r} lacks {capability.value}"

    @functools.cached_property
    def api_client(self) -> ApiClient:
        """A ``kubernetes`` ApiClient configured from this cluster's kubeconfig and context."""
        from clusters.kubeclient import api_client

        return api_client(self.kubeconfig, self.context)

    def node_names(self) -> list[str]:
        from kubernetes import client

        nodes = client.CoreV1Api(self.api_client).list_node()
        return sorted(str(n.metadata.name) for n in nodes.items if n.metadata is not None)

    def node_exec(
        self, node: str, argv: Sequence[str], stdin: str | None = None, timeout: float = 30.0
    ) -> CommandResult:
        """Run ``argv`` on ``node``; needs :attr:`Capability.NODE_ACCESS`."""
        return self.node_channel.exec(node, list(argv), stdin, timeout)

    def kubectl_argv(self, *args: str) -> list[str]:
        """A kubectl command line against this cluster, for reproduction hints and contract calls."""
        argv = ["kubectl", f"--kubeconfig={self.kubeconfig}"]
        if self.context:
            argv.append(f"--context={self.context}")
        return [*argv, *args]
