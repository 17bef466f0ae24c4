"""Pod status as the kubelet reports it, built by pure functions from a frozen view.

``kubectl get pods``/``describe`` and the doctor read these fields, so the phase rules
(kubelet ``getPhase``), the condition wording (``pkg/kubelet/status/generate.go``) and the
container-state shapes follow the real kubelet. Keeping them pure makes every rule a unit test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

JSON = dict[str, Any]


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Running:
    started_at: datetime


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    finished_at: datetime
    started_at: datetime | None = None
    message: str = ""
    container_id: str = ""
    signal: int = 0


State = Waiting | Running | Terminated


@dataclass(frozen=True)
class ContainerView:
    name: str
    image: str
    state: State
    image_id: str = ""
    container_id: str = ""
    last_state: Terminated | None = None
    ready: bool = False
    started: bool = False
    restart_count: int = 0


@dataclass(frozen=True)
class PodView:
    """What the kubelet knows about one pod at one moment."""

    restart_policy: str
    init_containers: tuple[ContainerView, ...]
    containers: tuple[ContainerView, ...]
    container_names: tuple[str, ...]
    """Spec order of regular containers (a container with no view yet has unknown status)."""
    init_names: tuple[str, ...] = ()
    sandbox_ready: bool = False
    pod_ips: tuple[str, ...] = ()
    host_ip: str = ""
    start_time: datetime | None = None
    terminal: bool = False
    """The pod was killed for good (deleted): a stopped pod then ends Succeeded or Failed."""


def state_dict(state: State | None) -> JSON:
    if state is None:
        return {}
    if isinstance(state, Waiting):
        waiting: JSON = {"reason": state.reason}
        if state.message:
            waiting["message"] = state.message
        return {"waiting": waiting}
    if isinstance(state, Running):
        return {"running": {"startedAt": rfc3339(state.started_at)}}
    term: JSON = {"exitCode": state.exit_code, "reason": state.reason}
    if state.signal:
        term["signal"] = state.signal
    if state.message:
        term["message"] = state.message
    term["startedAt"] = rfc3339(state.started_at) if state.started_at else None
    term["finishedAt"] = rfc3339(state.finished_at)
    if state.container_id:
        term["containerID"] = state.container_id
    return {"terminated": term}


def container_status(view: ContainerView, *, init: bool = False) -> JSON:
    out: JSON = {
        "name": view.name,
        "state": state_dict(view.state),
        "lastState": state_dict(view.last_state),
        "ready": view.ready,
        "restartCount": view.restart_count,
        "image": view.image,
        "imageID": view.image_id,
        "started": view.started,
    }
    if view.container_id:
        out["containerID"] = view.container_id
    if init:
        # An init container is "ready" once it completed successfully (kubelet_pods.go).
        out["ready"] = isinstance(view.state, Terminated) and view.state.exit_code == 0
        out["started"] = isinstance(view.state, Running)
    return out


def _init_incomplete(view: PodView) -> list[str]:
    done = {
        c.name for c in view.init_containers if isinstance(c.state, Terminated) and c.state.exit_code == 0
    }
    return [name for name in view.init_names if name not in done]


def _init_failed(view: PodView) -> bool:
    if view.restart_policy != "Never":
        return False
    return any(isinstance(c.state, Terminated) and c.state.exit_code != 0 for c in view.init_containers)


def pod_phase(view: PodView) -> str:
    """kubelet ``getPhase`` for the regular containers, after the init containers."""
    if _init_failed(view):
        return "Failed"
    by_name = {c.name: c for c in view.containers}
    running = stopped = succeeded = waiting = unknown = 0
    for name in view.container_names:
        c = by_name.get(name)
        if c is None:
            unknown += 1
        elif isinstance(c.state, Running):
            running += 1
        elif isinstance(c.state, Terminated):
            stopped += 1
            succeeded += c.state.exit_code == 0
        elif c.last_state is not None:
            stopped += 1
        else:
            waiting += 1
    if _init_incomplete(view) or waiting:
        return "Pending"
    if running and not unknown:
        return "Running"
    if running + stopped < len(view.container_names):
        return "Pending"
    if not running and stopped and not unknown:
        if view.terminal:
            return "Succeeded" if stopped == succeeded else "Failed"
        if view.restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if view.restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _go_list(names: Sequence[str]) -> str:
    return "[" + " ".join(names) + "]"


def _condition(kind: str, ok: bool, reason: str = "", message: str = "") -> JSON:
    cond: JSON = {"type": kind, "status": "True" if ok else "False"}
    # Explicit nulls so a strategic-merge patch clears a stale reason/message.
    cond["reason"] = reason or None
    cond["message"] = message or None
    return cond


def pod_conditions(view: PodView, phase: str) -> list[JSON]:
    """The five conditions in the kubelet's order (without transition times)."""
    init_missing = _init_incomplete(view)
    if phase == "Succeeded":
        initialized = _condition("Initialized", True, "PodCompleted")
    elif init_missing:
        initialized = _condition(
            "Initialized",
            False,
            "ContainersNotInitialized",
            f"containers with incomplete status: {_go_list(init_missing)}",
        )
    else:
        initialized = _condition("Initialized", True)

    by_name = {c.name: c for c in view.containers}
    unknown = [n for n in view.container_names if n not in by_name]
    unready = [n for n in view.container_names if n in by_name and not by_name[n].ready]
    messages = []
    if unknown:
        messages.append(f"containers with unknown status: {_go_list(unknown)}")
    if unready:
        messages.append(f"containers with unready status: {_go_list(unready)}")
    if phase == "Succeeded" and not unknown:
        ready = _condition("Ready", False, "PodCompleted")
        containers_ready = _condition("ContainersReady", False, "PodCompleted")
    elif messages:
        text = ", ".join(messages)
        ready = _condition("Ready", False, "ContainersNotReady", text)
        containers_ready = _condition("ContainersReady", False, "ContainersNotReady", text)
    else:
        ready = _condition("Ready", True)
        containers_ready = _condition("ContainersReady", True)
    return [
        _condition("PodReadyToStartContainers", view.sandbox_ready),
        initialized,
        ready,
        containers_ready,
        _condition("PodScheduled", True),
    ]


def with_transition_times(
    conditions: Sequence[JSON], previous: Sequence[Mapping[str, Any]], now: datetime
) -> list[JSON]:
    """Keep ``lastTransitionTime`` of a condition whose status did not change (status manager)."""
    old = {str(c.get("type")): c for c in previous}
    out = []
    for cond in conditions:
        prior = old.get(cond["type"])
        stamped = dict(cond)
        stamped["lastProbeTime"] = None
        if prior is not None and prior.get("status") == cond["status"] and prior.get("lastTransitionTime"):
            stamped["lastTransitionTime"] = prior["lastTransitionTime"]
        else:
            stamped["lastTransitionTime"] = rfc3339(now)
        out.append(stamped)
    return out


def pod_status(view: PodView, previous: Mapping[str, Any], now: datetime) -> JSON:
    """The ``status`` body for the pods/status subresource."""
    phase = pod_phase(view)
    conditions = with_transition_times(
        pod_conditions(view, phase), list(previous.get("conditions") or []), now
    )
    status: JSON = {"phase": phase, "conditions": conditions}
    if view.host_ip:
        status["hostIP"] = view.host_ip
        status["hostIPs"] = [{"ip": view.host_ip}]
    if view.pod_ips:
        status["podIP"] = view.pod_ips[0]
        status["podIPs"] = [{"ip": ip} for ip in view.pod_ips]
    if view.start_time is not None:
        status["startTime"] = previous.get("startTime") or rfc3339(view.start_time)
    if view.init_names:
        status["initContainerStatuses"] = [container_status(c, init=True) for c in view.init_containers]
    status["containerStatuses"] = sorted(
        (container_status(c) for c in view.containers), key=lambda s: str(s["name"])
    )
    return status
