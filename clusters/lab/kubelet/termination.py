"""Stopping a deleted pod's containers within its grace period, one worker sync at a time.

When the API server marks a pod for deletion, the kubelet (``killPod``) sends every container
SIGTERM, keeps watching it (readiness probes go on, so the endpoint's ``serving`` condition stays
true while the program still serves; liveness and startup probes stop), and sends SIGKILL to what
is left when the grace period ends. A later DELETE may shorten the period; the kubelet then kills
sooner. This runs as steps of the pod worker's loop rather than one blocking wait, so the
worker keeps reporting status (a container that stopped is terminated and not ready) and sees a
shortened period as soon as the informer delivers it.
"""

from __future__ import annotations

from collections.abc import Sequence

from clusters.lab.controllers.events import NORMAL
from clusters.lab.kubelet import procs
from clusters.lab.kubelet.containers import ContainerRunner
from clusters.lab.kubelet.containerstate import Container
from clusters.lab.kubelet.podscope import PodScope
from clusters.lab.kubelet.probemanager import ProbeManager


class GracefulStop:
    """One pod's graceful stop: started by the first :meth:`step`, done when it returns True."""

    def __init__(self, scope: PodScope, runner: ContainerRunner, probes: ProbeManager) -> None:
        self.scope = scope
        self.runner = runner
        self.probes = probes
        self.deadline: float | None = None
        """Monotonic time of the SIGKILL; None until SIGTERM was sent."""
        self.grace = 0.0
        self._leaders: set[int] = set()

    @property
    def started(self) -> bool:
        return self.deadline is not None

    def remaining(self, now: float) -> float:
        return max(0.0, self.deadline - now) if self.deadline is not None else 0.0

    def step(self, containers: Sequence[Container], grace: float, now: float) -> bool:
        """Send SIGTERM (first call), record exits, SIGKILL at the deadline; True once all stopped."""
        if self.deadline is None:
            self._begin(containers, grace, now)
        elif grace < self.grace:
            # A second DELETE shortened the period: the kubelet restarts the kill with it.
            self.deadline = min(self.deadline, now + grace)
            self.grace = grace
        for c in containers:
            self.runner.poll(c)
        left = [c for c in containers if c.pid is not None]
        if left and self.deadline is not None and now >= self.deadline:
            self.runner.kill(left, 0.0)
            left = []
        if not left:
            procs.kill_leftovers(self._leaders)
        return not left

    def _begin(self, containers: Sequence[Container], grace: float, now: float) -> None:
        self.deadline, self.grace = now + grace, grace
        for c in containers:
            if c.pid is None:
                continue
            self.scope.event(NORMAL, "Killing", f"Stopping container {c.name}", c)
            self.probes.stop_liveness_and_startup(c)
            if procs.leads_group(c.pid):
                self._leaders.add(c.pid)
            procs.send(c.pid, procs.SIGTERM)

    def next_wake(self, now: float) -> float | None:
        """Seconds until the SIGKILL is due, for the worker's sleep."""
        return self.remaining(now) if self.deadline is not None else None
