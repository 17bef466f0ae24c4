"""Pod facts the workload controllers share: active, ready, available, deletion order, and pod
creation with a generated name the way the API server's generateName does it."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime

from clusters.lab.controllers.client import JSON, Kube, meta

log = logging.getLogger(__name__)

_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
"""k8s.io/apimachinery/pkg/util/rand's alphabet (no vowels, no confusable characters)."""


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(_ALPHANUMS) for _ in range(n))


def is_active(pod: JSON) -> bool:
    return not meta(pod).get("deletionTimestamp") and (pod.get("status") or {}).get("phase") not in (
        "Succeeded",
        "Failed",
    )


def ready_since(pod: JSON) -> datetime | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            stamp = cond.get("lastTransitionTime")
            if not stamp:
                return datetime.now(UTC)
            return parse_time(str(stamp))
    return None


def parse_time(stamp: str) -> datetime:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)


def is_ready(pod: JSON) -> bool:
    return ready_since(pod) is not None


def available_in(pod: JSON, min_ready_seconds: int) -> float | None:
    """0 if available now, seconds until it will be (minReadySeconds), or None if not ready."""
    since = ready_since(pod)
    if since is None:
        return None
    if min_ready_seconds <= 0:
        return 0.0
    left = min_ready_seconds - (datetime.now(UTC) - since).total_seconds()
    return max(0.0, left)


def deletion_rank(pod: JSON) -> tuple[int, int, int, int, str]:
    """controller.ActivePods ordering: the pods to delete first sort first."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(str(status.get("phase")), 0)
    try:
        cost = int(
            (meta(pod).get("annotations") or {}).get("controller.kubernetes.io/pod-deletion-cost", "0")
        )
    except ValueError:
        cost = 0
    created = str(meta(pod).get("creationTimestamp") or "")
    # Newer first: invert the timestamp's ordering by negating each character.
    newer_first = "".join(chr(0x10FFFF - ord(c)) for c in created)
    return (1 if spec.get("nodeName") else 0, phase_rank, 1 if is_ready(pod) else 0, cost, newer_first)


def create_pod(kube: Kube, namespace: str, pod: JSON, generate_name: str) -> JSON:
    """POST a pod with ``metadata.generateName``; if the server cannot generate names, make one
    with the same 5-character suffix it would have used."""
    pod["metadata"]["generateName"] = generate_name
    try:
        return kube.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    except Exception as err:
        if getattr(err, "status", None) not in (400, 422) or "name" not in str(getattr(err, "body", "")):
            raise
        log.warning("API server rejected generateName (%s); naming the pod locally", getattr(err, "body", ""))
        pod["metadata"]["name"] = generate_name[:58] + random_suffix()
        return kube.create(f"/api/v1/namespaces/{namespace}/pods", pod)
