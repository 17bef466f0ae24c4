"""Graceful deletion: when a DELETE only marks a pod, and how a later DELETE may shorten the mark.

A real cluster never removes a running pod on DELETE: the API server stamps
``deletionTimestamp`` (now + grace) and ``deletionGracePeriodSeconds``, the node's kubelet sees
that, stops the containers within the grace period and then deletes the pod with grace 0, which
removes it. Clients and tests depend on that window (a Terminating pod, an endpoint that is
``terminating``, a namespace that waits for its pods), so the lab reproduces it here, apart from
the storage code: this is the apiserver's ``rest.BeforeDelete`` with the pod strategy's
``CheckGracefulDelete``. Only pods delete gracefully, as in Kubernetes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from clusters.lab.api.resources import ResourceType

Obj = dict[str, Any]
DEFAULT_GRACE = 30
"""The pod default for spec.terminationGracePeriodSeconds (also set by defaulting)."""
_TERMINAL = ("Succeeded", "Failed")
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


class Outcome(enum.Enum):
    IMMEDIATE = "immediate"
    """Not graceful: remove now (or, with finalizers, mark with grace 0), as for any object."""
    MARKED = "marked"
    """The object's deletion mark was set or shortened: store it (remove it if grace became 0)."""
    PENDING = "pending"
    """Already terminating with a grace no longer than asked for: nothing changes."""


def pod_grace_period(pod: Obj, requested: int | None) -> int:
    """podStrategy.CheckGracefulDelete: the asked grace, else the pod's own; 0 when no kubelet
    runs the pod (unbound) or nothing runs any more (terminal phase)."""
    spec, phase = pod.get("spec") or {}, (pod.get("status") or {}).get("phase")
    if requested is not None:
        period = requested
    else:
        period = int(spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE) or 0)
    if not spec.get("nodeName") or phase in _TERMINAL:
        return 0
    return max(period, 0)


def before_delete(rt: ResourceType, obj: Obj, requested: int | None, now: datetime | None = None) -> Outcome:
    """Decide a DELETE's effect and, for MARKED, update ``obj``'s metadata in place.

    A negative grace counts as 1 s (the apiserver's rule). On an object already being deleted a
    request may only shorten the period; the new deadline keeps the original request time
    (old deadline - old grace + new grace), like the apiserver. Graceful marking bumps the
    generation, as BeforeDelete does.
    """
    if rt.kind != "Pod":
        return Outcome.IMMEDIATE
    if requested is not None and requested < 0:
        requested = 1
    meta = obj["metadata"]
    if meta.get("deletionTimestamp"):
        current = meta.get("deletionGracePeriodSeconds")
        if not current:
            return Outcome.IMMEDIATE
        if requested is None or requested >= int(current):
            return Outcome.PENDING
        requested_at = parse_time(str(meta["deletionTimestamp"])) - timedelta(seconds=int(current))
        meta["deletionTimestamp"] = format_time(requested_at + timedelta(seconds=requested))
        meta["deletionGracePeriodSeconds"] = requested
        return Outcome.MARKED
    period = pod_grace_period(obj, requested)
    if period == 0:
        return Outcome.IMMEDIATE
    meta["deletionTimestamp"] = format_time((now or datetime.now(UTC)) + timedelta(seconds=period))
    meta["deletionGracePeriodSeconds"] = period
    if "generation" in meta:
        meta["generation"] = int(meta["generation"]) + 1
    return Outcome.MARKED


def delete_during_update(old: Obj, new: Obj, finalizers_of: Callable[[Obj], list[str]]) -> bool:
    """rest.ShouldDeleteDuringUpdate: an update that removes the last finalizer of an object
    whose deletion is due (grace 0) removes it; a pod still in its grace period stays."""
    meta = new["metadata"]
    if finalizers_of(new) or not finalizers_of(old):
        return False
    return bool(meta.get("deletionTimestamp")) and not meta.get("deletionGracePeriodSeconds")


def parse_time(stamp: str) -> datetime:
    return datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)


def format_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime(_STAMP)
