"""Starting, watching and stopping a pod's container processes, and the crash-restart back-off.

This is where a container spec becomes a lab process: image, environment, root directory and
log file are resolved, the runtime starts the process in the pod's sandbox, and the kubelet's
events follow (``Created``, ``Started``, ``Failed``, ``Killing``, ``BackOff``). An exit is found
by polling and recorded as the Terminated state the status shows; a restart waits out
CrashLoopBackOff exactly as the kubelet schedules it, since detection tests time it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clusters.lab.controllers.events import NORMAL, WARNING
from clusters.lab.kubelet import images, procs
from clusters.lab.kubelet.backoff import Backoff, go_duration
from clusters.lab.kubelet.containerstate import Container, Step
from clusters.lab.kubelet.env import ContainerConfigError, container_env, expand_command
from clusters.lab.kubelet.imagepull import ImagePuller
from clusters.lab.kubelet.podio import container_log_path, link_container_log
from clusters.lab.kubelet.podscope import PodScope
from clusters.lab.kubelet.probemanager import ProbeManager
from clusters.lab.kubelet.sandbox import PodSandbox
from clusters.lab.kubelet.status import Running, Terminated, Waiting
from clusters.lab.kubelet.volumes import VolumeError, build_rootfs
from clusters.lab.programs.container import ROOTFS_ENV
from clusters.lab.runtime import ProcessSpec

log = logging.getLogger(__name__)

JSON = dict[str, Any]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_GRACE = 2.0


def kill_grace(pod: JSON | None) -> float:
    """The kill grace period, never below the kubelet's 2 s minimum (kuberuntime_container.go)."""
    if pod is None:
        return 30.0
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    value = meta.get("deletionGracePeriodSeconds")
    if value is None:
        value = spec.get("terminationGracePeriodSeconds", 30)
    return max(MIN_GRACE, float(value))


class ContainerRunner:
    def __init__(self, scope: PodScope, sandbox: PodSandbox, probes: ProbeManager, retry: Backoff) -> None:
        self.scope = scope
        self.sandbox = sandbox
        self.probes = probes
        self.images = ImagePuller(scope)
        self.retry = retry
        """The worker's error back-off, keyed by container name for config errors."""
        self.crash = Backoff(scope.ctx.config.crash_backoff)

    def start(self, c: Container, pod: JSON, volumes: Mapping[str, Path], now: float) -> None:
        scope, ctx = self.scope, self.scope.ctx
        if not self.images.pull(c, now):
            return
        facts = self.sandbox.facts()
        try:
            env = container_env(pod, c.spec, facts, ctx.objects)
            argv = images.resolve(
                str(c.spec["image"]),
                expand_command(c.spec.get("command") or [], env),
                expand_command(c.spec.get("args") or [], env),
            )
            rootfs = build_rootfs(pod, c.spec, volumes, ctx.layout, ctx.node, facts.pod_ip)
        except (ContainerConfigError, VolumeError, images.ImagePullError) as err:
            self._config_error(c, str(err), now)
            return
        self.retry.forget(c.name)
        env[ROOTFS_ENV] = str(rootfs)
        workdir = str(c.spec.get("workingDir") or "")
        cwd = rootfs / workdir.lstrip("/") if workdir else rootfs
        cwd.mkdir(parents=True, exist_ok=True)
        restart = c.restart_count + (1 if c.last_exit is not None else 0)
        log_path = container_log_path(
            ctx.layout, ctx.node, scope.namespace, scope.name, scope.uid, c.name, restart
        )
        log_path.parent.mkdir(parents=True, exist_ok=True)
        container_id = secrets.token_hex(32)
        scope.event(NORMAL, "Created", f"Created container: {c.name}", c)
        spec = ProcessSpec(argv=argv, env=env, cwd=cwd, log_path=log_path, host_network=scope.host_network)
        c.container_id = f"containerd://{container_id}"
        c.restart_count = restart
        if c.last_exit is not None:
            c.last_state = c.last_exit
        c.env, c.rootfs = env, rootfs
        try:
            pid = ctx.runtime.start_process(self.sandbox.process_sandbox, spec)
        except Exception as err:
            message = f"failed to create containerd task: failed to create shim task: {err}"
            scope.event(WARNING, "Failed", f"Error: {message}", c)
            self._exited(c, procs.Exit(128), reason="StartError", message=message, started=EPOCH)
            return
        link_container_log(ctx.layout, ctx.node, scope.namespace, scope.name, c.name, container_id, log_path)
        scope.event(NORMAL, "Started", f"Started container {c.name}", c)
        c.pid = pid
        c.step = Step.RUNNING
        c.started_wall = scope.wall()
        c.state = Running(c.started_wall)
        c.liveness_failed = False
        c.backoff_posted = False
        specs = self.probes.specs(c)
        with scope.lock:
            c.ready = not any(p.kind == "readiness" for p in specs) and not c.init
            c.started = not any(p.kind == "startup" for p in specs)
        self.probes.start(c, specs)

    def _config_error(self, c: Container, message: str, now: float) -> None:
        c.state = Waiting("CreateContainerConfigError", message)
        self.scope.event(WARNING, "Failed", f"Error: {message}", c)
        self.retry.next(c.name, now, now)
        c.retry_at = now + self.retry.get(c.name)

    def restart_or_wait(self, c: Container, pod: JSON, volumes: Mapping[str, Path], now: float) -> None:
        """Restart an exited container now, or wait in CrashLoopBackOff until its delay is over."""
        assert c.last_exit is not None
        scope = self.scope
        if self.crash.in_backoff(c.name, c.finished_mono, now):
            delay = self.crash.get(c.name)
            c.step = Step.CRASH_WAIT
            c.last_state = c.last_exit
            c.state = Waiting(
                "CrashLoopBackOff",
                f"back-off {go_duration(delay)} restarting failed container={c.name} pod={scope.ref}",
            )
            c.retry_at = now + self.crash.remaining(c.name, c.finished_mono, now)
            if not c.backoff_posted:
                scope.sync_error(
                    f'failed to "StartContainer" for "{c.name}" with CrashLoopBackOff: "{c.state.message}"'
                )
                scope.event(
                    WARNING,
                    "BackOff",
                    f"Back-off restarting failed container {c.name} in pod {scope.ref}",
                    c,
                )
                c.backoff_posted = True
            return
        self.crash.next(c.name, c.finished_mono, now)
        c.step = Step.NEW
        c.retry_at = 0.0
        self.start(c, pod, volumes, now)

    def poll(self, c: Container) -> None:
        if c.pid is None:
            return
        result = procs.poller_for(self.scope.ctx.runtime)(c.pid)
        if result is not None:
            self._exited(c, result)

    def _exited(
        self,
        c: Container,
        result: procs.Exit,
        *,
        reason: str = "",
        message: str = "",
        started: datetime | None = None,
    ) -> None:
        scope = self.scope
        self.probes.stop(c)
        term = Terminated(
            exit_code=result.code,
            reason=reason or ("Completed" if result.code == 0 else "Error"),
            finished_at=scope.wall(),
            started_at=started or c.started_wall,
            message=message,
            container_id=c.container_id,
        )
        with scope.lock:
            c.pid = None
            c.ready = False
            c.started = False
        c.state = term
        c.last_exit = term
        c.finished_mono = scope.monotonic()
        c.step = Step.EXITED
        log.info("pod %s container %s exited %d", scope.key, c.name, result.code)

    def kill_for_liveness(self, c: Container, pod: JSON) -> None:
        probe = "startup" if not c.started else "liveness"
        self.scope.event(NORMAL, "Killing", f"Container {c.name} failed {probe} probe, will be restarted", c)
        self.kill([c], kill_grace(pod))

    def kill(self, containers: list[Container], grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace``; each killed container is recorded as exited."""
        running = [c for c in containers if c.pid is not None]
        for c in running:
            self.probes.stop(c)
        pids = [c.pid for c in running if c.pid is not None]
        exits = procs.kill_group(pids, grace, procs.poller_for(self.scope.ctx.runtime)) if pids else {}
        for c in running:
            if c.pid is not None:
                self._exited(c, exits.get(c.pid, procs.Exit(137, 9)))
