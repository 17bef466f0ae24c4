"""Sending a pod's status to the API server, as the kubelet's status manager does.

status.py computes the body from a frozen view; this keeps what the computation needs from one
report to the next (the previous status, for condition transition times and startTime) and what
was last sent, so an unchanged pod causes no PATCH, and a pod already gone causes none either.
"""

from __future__ import annotations

import logging
from typing import Any

from clusters.lab.controllers.client import STRATEGIC_PATCH, is_not_found
from clusters.lab.kubelet.podscope import PodScope
from clusters.lab.kubelet.status import PodView, pod_status

log = logging.getLogger(__name__)

JSON = dict[str, Any]


class StatusManager:
    def __init__(self, scope: PodScope, pod: JSON) -> None:
        self.scope = scope
        self.previous: JSON = dict(pod.get("status") or {})
        self.last_sent: JSON | None = None

    def report(self, view: PodView) -> None:
        scope = self.scope
        status = pod_status(view, self.previous, scope.wall())
        if status == self.last_sent:
            return
        if scope.current() is None:
            return
        path = f"/api/v1/namespaces/{scope.namespace}/pods/{scope.name}/status"
        try:
            # Like the kubelet's two-way merge patch: keep the conditions in the kubelet's order.
            order = [{"type": c["type"]} for c in status["conditions"]]
            scope.ctx.kube.patch(
                path, {"status": {**status, "$setElementOrder/conditions": order}}, STRATEGIC_PATCH
            )
        except Exception as err:
            if not is_not_found(err):
                log.warning("pod %s: status update failed: %s", scope.key, str(err).splitlines()[0])
            return
        self.last_sent = status
        self.previous = status
