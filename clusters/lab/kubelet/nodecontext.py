"""What one kubelet hands each of its pod workers: settings, clock and the node's services.

Kept apart from the pod worker so the kubelet and every part of a worker (sandbox, containers,
probes, status) can name these types without importing one another; tests build a
:class:`NodeContext` with a fake runtime, a loopback connector or their own :class:`Clock`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from clusters.lab.controllers.client import Kube
from clusters.lab.controllers.events import EventRecorder
from clusters.lab.kubelet.backoff import BackoffPolicy
from clusters.lab.kubelet.env import ObjectSource
from clusters.lab.kubelet.klog import KlogFile
from clusters.lab.kubelet.probes import Connector
from clusters.lab.layout import LabLayout
from clusters.lab.runtime import NodeRuntime

JSON = dict[str, Any]


class Clock(Protocol):
    """Monotonic seconds for timers and back-off, wall time for what the API shows."""

    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class KubeletConfig:
    crash_backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    image_backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    retry_backoff: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base=1.0, cap=10.0))
    """Sandbox, mount and container-config retries (the pod worker's error back-off)."""
    sync_period: float = 0.25
    """How often a pod worker polls its processes when nothing wakes it."""
    volume_refresh: float = 10.0
    """ConfigMap/Secret volume resync (real: about a minute; shorter so faults show sooner)."""
    node_status_period: float = 4.0
    shutdown_grace: float = 5.0
    """Grace of each container when the kubelet itself stops (lab down)."""


@dataclass(frozen=True)
class NodeContext:
    """What every pod worker of one kubelet shares."""

    node: str
    host_ip: str
    layout: LabLayout
    runtime: NodeRuntime
    kube: Kube
    recorder: EventRecorder
    objects: ObjectSource
    clock: Clock
    config: KubeletConfig
    connect: Connector
    get_pod: Callable[[str], JSON | None]
    klog: KlogFile
