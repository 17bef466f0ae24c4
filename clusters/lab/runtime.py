"""The contract between a lab kubelet and its node's container runtime (the containerd role).

The runtime owns network namespaces, the CNI config directory with containerd's reload rules
(reference §3.1), and CNI ADD/DEL with the real plugin binaries. The kubelet owns pods:
it asks for a sandbox, starts container processes inside it, and reports status and events.
Errors carry the exact containerd/kubelet wording so events look like a real node's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class SandboxError(Exception):
    """Sandbox creation failed. ``reason`` is the event reason (``FailedCreatePodSandBox`` or
    ``NetworkNotReady``); ``str(err)`` is the event message, worded as kubelet/containerd do."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Sandbox:
    pod_uid: str
    netns: str
    """Network namespace name (under /run/netns)."""
    ips: tuple[str, ...]
    sandbox_id: str
    """64 hex characters, like a containerd sandbox id."""


@dataclass(frozen=True)
class NetworkStatus:
    ready: bool
    message: str
    """Empty when ready; else the CRI wording, e.g. ``Network plugin returns error: cni plugin
    not initialized``."""


@dataclass(frozen=True)
class ProcessSpec:
    """A container process: argv already resolved from the image and the pod spec."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    log_path: Path
    host_network: bool


class NodeRuntime(Protocol):
    node: str

    def network_status(self) -> NetworkStatus: ...

    def run_pod_sandbox(self, pod_uid: str, namespace: str, name: str) -> Sandbox: ...

    def stop_pod_sandbox(self, pod_uid: str) -> None:
        """CNI DEL and namespace removal; idempotent."""
        ...

    def start_process(self, sandbox: Sandbox | None, spec: ProcessSpec) -> int:
        """Start a container process in the sandbox's netns (or the node's, for hostNetwork)
        and return its pid."""
        ...

    def node_exec_argv(self, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` in the node shell (node netns + node file tree)."""
        ...
