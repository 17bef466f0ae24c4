"""One pod's life on a node: the worker thread that drives it towards its spec, and its end.

Each pod gets a thread (like the kubelet's pod workers) that syncs the pod towards its spec on
every wake-up: an informer event, a probe result, a process exit found by polling, or a timer
(back-off expiry). All container state is owned by that thread; probe threads only set flags and
wake it. Every step that fails the way it fails on a real node (sandbox, image, config, mount)
posts the kubelet's event and retries later, so a recovered network makes the pod start.

This module owns the order of a sync (volumes, sandbox, init containers one by one, then the
rest), the restart policy and termination; the steps themselves live in sandbox.py,
containers.py (with imagepull.py), probemanager.py and statusmanager.py.
"""

from __future__ import annotations

import logging
import shutil
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from clusters.lab.controllers.client import is_not_found
from clusters.lab.controllers.events import NORMAL, WARNING
from clusters.lab.kubelet.backoff import Backoff
from clusters.lab.kubelet.containers import ContainerRunner, kill_grace
from clusters.lab.kubelet.containerstate import Step, containers_of, of_kind, restart_wanted
from clusters.lab.kubelet.nodecontext import NodeContext
from clusters.lab.kubelet.podio import remove_pod_logs
from clusters.lab.kubelet.podscope import PodScope
from clusters.lab.kubelet.probemanager import ProbeManager
from clusters.lab.kubelet.sandbox import PodSandbox
from clusters.lab.kubelet.status import PodView
from clusters.lab.kubelet.statusmanager import StatusManager
from clusters.lab.kubelet.termination import GracefulStop
from clusters.lab.kubelet.volumes import VolumeError, materialise

log = logging.getLogger(__name__)
POD_RETRY_KEY = "<pod>"
"""The pod-level (volume/sandbox) retry entry in the back-off it shares with the containers,
keyed by container name: angle brackets cannot occur in a name (a DNS label), so no collision."""

JSON = dict[str, Any]


class PodWorker:
    def __init__(self, ctx: NodeContext, pod: JSON) -> None:
        self.scope = PodScope(ctx, pod)
        self.containers = containers_of(pod)
        self.sandbox = PodSandbox(self.scope)
        self.probes = ProbeManager(self.scope, self.sandbox)
        self.retry = Backoff(ctx.config.retry_backoff)
        """Sandbox and mount retries under key ``pod``; the runner keys config errors by container."""
        self.retry_at = 0.0
        self.runner = ContainerRunner(self.scope, self.sandbox, self.probes, self.retry)
        self.status = StatusManager(self.scope, pod)
        self.stopping = GracefulStop(self.scope, self.runner, self.probes)
        self.start_time: datetime | None = None
        self.volumes: dict[str, Path] | None = None
        self.volumes_at = 0.0
        self.finished = False
        phase = (pod.get("status") or {}).get("phase")
        self.adopted_terminal = phase in ("Succeeded", "Failed")
        """Completed before this kubelet saw it: leave its status alone, only clean up."""
        self._shutdown = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pod-{self.scope.name}", daemon=True)
        self.done = threading.Event()

    @property
    def uid(self) -> str:
        return self.scope.uid

    @property
    def key(self) -> str:
        return self.scope.key

    # ---- control from the kubelet ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self.scope.wake()

    def shutdown(self) -> None:
        self._shutdown.set()
        self.scope.wake()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        scope = self.scope
        try:
            while not self._shutdown.is_set():
                pod = scope.current()
                if pod is None:
                    self._terminate(None)
                    return
                scope.pod = pod
                if (pod.get("metadata") or {}).get("deletionTimestamp"):
                    if self._terminate(pod):
                        return
                elif not self.adopted_terminal:
                    self._sync(pod)
                    self._report()
                scope.woken.wait(self._next_wait())
                scope.woken.clear()
            self._teardown(scope.ctx.config.shutdown_grace)
        except Exception:
            log.exception("pod worker %s crashed; tearing the pod down", scope.key)
            self._teardown(scope.ctx.config.shutdown_grace)
        finally:
            self.done.set()

    def _next_wait(self) -> float:
        period = self.scope.ctx.config.sync_period
        now = self.scope.monotonic()
        timers = [
            t - now for t in [self.retry_at, *(c.retry_at for c in self.containers.values())] if t > now
        ]
        kill_in = self.stopping.next_wake(now)
        if kill_in is not None:
            timers.append(kill_in)
        return max(0.01, min([period, *timers]))

    def _retry_later(self, now: float) -> None:
        self.retry.next(POD_RETRY_KEY, now, now)
        self.retry_at = now + self.retry.get(POD_RETRY_KEY)

    # ---- sync -------------------------------------------------------------------------------

    def _sync(self, pod: JSON) -> None:
        if self.finished:
            if not self.sandbox.released:
                self.sandbox.release()
            return
        now = self.scope.monotonic()
        if self.start_time is None:
            self.start_time = self.scope.wall()
        if not self._ensure_volumes(pod, now) or not self._ensure_sandbox(pod, now):
            return
        volumes = self.volumes
        assert volumes is not None
        runner = self.runner
        spec = pod.get("spec") or {}
        policy = str(spec.get("restartPolicy", "Always"))
        for c in of_kind(self.containers, init=True):
            runner.poll(c)
            if c.step is Step.EXITED:
                assert c.last_exit is not None
                if c.last_exit.exit_code == 0:
                    c.step = Step.DONE
                elif policy == "Never":
                    c.step = Step.DONE
                    self._finish()
                    return
                else:
                    runner.restart_or_wait(c, pod, volumes, now)
                    return
            if c.step is Step.DONE:
                if c.last_exit is not None and c.last_exit.exit_code == 0:
                    continue
                return
            if c.step is Step.CRASH_WAIT:
                runner.restart_or_wait(c, pod, volumes, now)
            elif c.step is Step.NEW and c.retry_at <= now:
                runner.start(c, pod, volumes, now)
            return
        for c in of_kind(self.containers, init=False):
            runner.poll(c)
            if c.step is Step.RUNNING and c.liveness_failed:
                runner.kill_for_liveness(c, pod)
            if c.step is Step.RUNNING and c.started and c.pending_probes:
                self.probes.start(c, c.pending_probes)
            if c.step is Step.EXITED:
                if restart_wanted(c, policy):
                    runner.restart_or_wait(c, pod, volumes, now)
                else:
                    c.step = Step.DONE
            elif c.step is Step.CRASH_WAIT:
                runner.restart_or_wait(c, pod, volumes, now)
            elif c.step is Step.NEW and c.retry_at <= now:
                runner.start(c, pod, volumes, now)
        if all(c.step is Step.DONE for c in of_kind(self.containers, init=False)):
            self._finish()
        if self.volumes is not None and now - self.volumes_at >= self.scope.ctx.config.volume_refresh:
            self._refresh_volumes(pod, now)

    def _ensure_volumes(self, pod: JSON, now: float) -> bool:
        if self.volumes is not None:
            return True
        if now < self.retry_at:
            return False
        if not self._mount(pod):
            self._retry_later(now)
            return False
        self.volumes_at = now
        return True

    def _refresh_volumes(self, pod: JSON, now: float) -> None:
        self.volumes_at = now
        self._mount(pod)

    def _mount(self, pod: JSON) -> bool:
        """Set up or refresh every volume; a failure is the kubelet's ``FailedMount`` event."""
        ctx = self.scope.ctx
        try:
            self.volumes = materialise(pod, ctx.layout, ctx.node, self.sandbox.facts(), ctx.objects)
        except VolumeError as err:
            self.scope.event(WARNING, "FailedMount", str(err))
            return False
        return True

    def _ensure_sandbox(self, pod: JSON, now: float) -> bool:
        if self.sandbox.has_network():
            return True
        if now < self.retry_at:
            return False
        if not self.sandbox.run(pod):
            self._retry_later(now)
            return False
        self.retry.forget(POD_RETRY_KEY)
        self.retry_at = 0.0
        # The /etc/hosts entry and downward-API files need the pod IP: refresh now.
        self._refresh_volumes(pod, now)
        return True

    # ---- status -----------------------------------------------------------------------------

    def view(self, *, terminal: bool = False) -> PodView:
        spec = self.scope.pod.get("spec") or {}
        with self.scope.lock:
            inits = tuple(c.view() for c in of_kind(self.containers, init=True))
            mains = tuple(c.view() for c in of_kind(self.containers, init=False))
        return PodView(
            restart_policy=str(spec.get("restartPolicy", "Always")),
            init_containers=inits,
            containers=mains,
            container_names=tuple(c["name"] for c in spec.get("containers") or []),
            init_names=tuple(c["name"] for c in spec.get("initContainers") or []),
            sandbox_ready=bool(self.sandbox.pod_ips) and not self.finished,
            pod_ips=self.sandbox.pod_ips,
            host_ip=self.scope.ctx.host_ip,
            start_time=self.start_time,
            terminal=terminal,
        )

    def _report(self, *, terminal: bool = False) -> None:
        self.status.report(self.view(terminal=terminal))

    def _finish(self) -> None:
        """The pod reached a terminal phase: stop probes and give the network back (kubelet does)."""
        for c in self.containers.values():
            self.probes.stop(c)
        self.finished = True
        self.sandbox.release()

    # ---- termination ------------------------------------------------------------------------

    def _terminate(self, pod: JSON | None) -> bool:
        """Stop a deleted pod; True once the pod object is gone (the worker ends).

        A pod marked for deletion (``pod`` given) is stopped step by step within its grace
        period (termination.py), reporting status meanwhile; then its network is released (CNI
        DEL), its final status sent, and the pod deleted with grace 0, which removes it. A pod
        removed outright (force delete) is still given its grace period, or what is left of it
        when its graceful stop had begun.
        """
        scope = self.scope
        containers = list(self.containers.values())
        if pod is not None:
            if not self.stopping.step(containers, kill_grace(pod), scope.monotonic()):
                if not self.adopted_terminal and self.start_time is not None:
                    self._report()
                return False
        else:
            running = [c for c in containers if c.pid is not None]
            if self.stopping.started:
                grace = self.stopping.remaining(scope.monotonic())
            else:
                grace = kill_grace(scope.pod)
                for c in running:
                    scope.event(NORMAL, "Killing", f"Stopping container {c.name}", c)
            self.runner.kill(running, grace)
        for c in self.containers.values():
            if c.step is not Step.RUNNING:
                c.step = Step.DONE
        self.finished = True
        if not self.sandbox.released:
            self.sandbox.release()
            if not self.sandbox.released:
                now = scope.monotonic()
                self._retry_later(now)
                return False
        if pod is not None:
            if not self.adopted_terminal and self.start_time is not None:
                self._report(terminal=True)
            try:
                scope.ctx.kube.delete(
                    f"/api/v1/namespaces/{scope.namespace}/pods/{scope.name}",
                    {"gracePeriodSeconds": 0, "preconditions": {"uid": scope.uid}},
                )
            except Exception as err:
                if not is_not_found(err) and getattr(err, "status", 0) != 409:
                    log.warning("pod %s: final delete failed: %s", scope.key, str(err).splitlines()[0])
                    return False
        self._cleanup_files()
        return True

    def _teardown(self, grace: float) -> None:
        """The kubelet is stopping: kill everything quickly, release the sandbox, no API calls."""
        self.runner.kill([c for c in self.containers.values() if c.pid is not None], grace)
        self.sandbox.release(unclean=True)
        self._cleanup_files()

    def _cleanup_files(self) -> None:
        scope = self.scope
        shutil.rmtree(scope.ctx.layout.pod_dir(scope.uid), ignore_errors=True)
        remove_pod_logs(scope.ctx.layout, scope.ctx.node, scope.namespace, scope.name, scope.uid)
