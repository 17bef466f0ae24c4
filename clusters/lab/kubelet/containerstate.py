"""The live state of a pod's containers, kept by its worker between one sync and the next.

Records here are mutable on purpose, unlike status.py's frozen views: the worker thread steps
each one through :class:`Step` on every sync, and probe threads flip ``ready``/``started``/
``liveness_failed`` (and only those, under the pod's lock). :meth:`Container.view` freezes a
record for status.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from clusters.lab.kubelet.probes import ProbeSpec, ProbeWorker
from clusters.lab.kubelet.status import ContainerView, State, Terminated, Waiting

JSON = dict[str, Any]


class Step(enum.Enum):
    NEW = "new"
    """Not started yet (waiting: creating, image or config errors)."""
    RUNNING = "running"
    EXITED = "exited"
    """Exited; the restart policy decides next."""
    CRASH_WAIT = "crash-wait"
    DONE = "done"
    """Exited for good."""


@dataclass
class Container:
    """Live state of one container of the pod; owned by the pod worker thread."""

    spec: JSON
    init: bool
    state: State
    step: Step = Step.NEW
    last_state: Terminated | None = None
    last_exit: Terminated | None = None
    restart_count: int = 0
    container_id: str = ""
    image_id: str = ""
    pid: int | None = None
    started_wall: datetime | None = None
    finished_mono: float = 0.0
    ready: bool = False
    started: bool = False
    liveness_failed: bool = False
    retry_at: float = 0.0
    pull_error: str = ""
    backoff_posted: bool = False
    probes: list[ProbeWorker] = field(default_factory=list)
    pending_probes: list[ProbeSpec] = field(default_factory=list)
    rootfs: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def field_path(self) -> str:
        return f"spec.{'initContainers' if self.init else 'containers'}{{{self.name}}}"

    def view(self) -> ContainerView:
        return ContainerView(
            name=self.name,
            image=str(self.spec.get("image", "")),
            state=self.state,
            image_id=self.image_id,
            container_id=self.container_id,
            last_state=self.last_state,
            ready=self.ready,
            started=self.started,
            restart_count=self.restart_count,
        )


def containers_of(pod: JSON) -> dict[str, Container]:
    """Every container of the pod, init containers first, all waiting to be created."""
    spec = pod.get("spec") or {}
    has_init = bool(spec.get("initContainers"))
    waiting = Waiting("PodInitializing" if has_init else "ContainerCreating")
    containers: dict[str, Container] = {}
    for c in spec.get("initContainers") or []:
        containers[c["name"]] = Container(spec=c, init=True, state=waiting)
    for c in spec.get("containers") or []:
        containers[c["name"]] = Container(spec=c, init=False, state=waiting)
    return containers


def of_kind(containers: dict[str, Container], *, init: bool) -> list[Container]:
    return [c for c in containers.values() if c.init == init]


def restart_wanted(c: Container, policy: str) -> bool:
    """Whether the pod's restartPolicy restarts a regular container that exited."""
    code = c.last_exit.exit_code if c.last_exit else 0
    if policy == "Always":
        return True
    return policy == "OnFailure" and code != 0
