"""The provider protocol: how a Cluster handle is obtained and given back.

A provider turns a :class:`ClusterRequest` (the user's options, validated) into a
:class:`~clusters.handle.Cluster`, and releases it at the end. Providers own every
provider-specific decision, so nothing above ``clusters`` needs to know which one ran.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from clusters.handle import Cluster
from clusters.recipes import CniRecipe


class ClusterKind(enum.StrEnum):
    AUTO = "auto"
    KIND = "kind"
    EXISTING = "existing"
    LAB = "lab"


@dataclass(frozen=True)
class ClusterRequest:
    """Everything the user asked for, already validated (see :mod:`clusters.options`)."""

    kind: ClusterKind
    cni: CniRecipe | None
    """The recipe to install or assume; ``None`` only for an existing cluster without ``--cni``,
    whose provider detects it (:func:`clusters.options.parse` always sets it for kind and lab)."""
    run_id: str
    state_dir: Path
    """Where the run keeps kubeconfigs, rendered configs and logs (``.knetcheck/`` by default)."""
    kubeconfig: Path | None = None
    context: str | None = None
    keep_cluster: bool = False
    allow_destructive: bool = False
    node_image: str | None = None
    k8s_version: str | None = None
    nodes: int = 3
    """Nodes in a cluster we create: one control plane plus workers (kind default topology)."""


class Provider(Protocol):
    """Creates or attaches to a cluster. ``release`` must be safe to call after a failed
    ``acquire`` and must never delete a cluster the provider did not create."""

    name: str

    def acquire(self, request: ClusterRequest) -> Cluster: ...

    def release(self, cluster: Cluster, request: ClusterRequest) -> None: ...
