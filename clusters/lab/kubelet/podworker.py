"""One pod's life on a node: volumes, sandbox, containers, probes, restarts, termination.

Each pod gets a thread (like the kubelet's pod workers) that syncs the pod towards its spec on
every wake-up: an informer event, a probe result, a process exit found by polling, or a timer
(back-off expiry). All container state is owned by that thread; probe threads only set flags and
wake it. Every step that fails the way it fails on a real node (sandbox, image, config, mount)
posts the kubelet's event and retries later, so a recovered network makes the pod start.
"""

from __future__ import annotations

import enum
import functools
import inspect
import logging
import secrets
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from clusters.lab.controllers.client import STRATEGIC_PATCH, Kube, is_not_found
from clusters.lab.controllers.events import NORMAL, WARNING, EventRecorder
from clusters.lab.kubelet import images, procs
from clusters.lab.kubelet.backoff import Backoff, BackoffPolicy, go_duration
from clusters.lab.kubelet.env import (
    ContainerConfigError,
    ObjectSource,
    PodFacts,
    container_env,
    expand_command,
)
from clusters.lab.kubelet.klog import KlogFile
from clusters.lab.kubelet.podio import container_log_path, link_container_log, remove_pod_logs
from clusters.lab.kubelet.probes import Connector, ProbeResult, ProbeSpec, ProbeWorker, parse_probe
from clusters.lab.kubelet.status import (
    ContainerView,
    PodView,
    Running,
    State,
    Terminated,
    Waiting,
    pod_status,
)
from clusters.lab.kubelet.volumes import VolumeError, build_rootfs, materialise
from clusters.lab.layout import LabLayout
from clusters.lab.runtime import NodeRuntime, ProcessSpec, Sandbox, SandboxError

log = logging.getLogger(__name__)

JSON = dict[str, Any]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_GRACE = 2.0
ROOTFS_ENV = "KNETCHECK_ROOTFS"
"""Where a lab program finds the container's files (volumes.py explains the path map)."""


@runtime_checkable
class ReapingRuntime(Protocol):
    """A runtime that reaps its own children (LabNodeRuntime keeps their Popen objects)."""

    def process_returncode(self, pid: int) -> int | None: ...


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...


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
class _Container:
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


class PodWorker:
    def __init__(self, ctx: NodeContext, pod: JSON) -> None:
        self.ctx = ctx
        meta = pod["metadata"]
        self.uid = str(meta["uid"])
        self.namespace = str(meta.get("namespace", "default"))
        self.name = str(meta["name"])
        self.key = f"{self.namespace}/{self.name}"
        self.pod = pod
        spec = pod.get("spec") or {}
        self.host_network = bool(spec.get("hostNetwork"))
        has_init = bool(spec.get("initContainers"))
        waiting = Waiting("PodInitializing" if has_init else "ContainerCreating")
        self.containers: dict[str, _Container] = {}
        for c in spec.get("initContainers") or []:
            self.containers[c["name"]] = _Container(spec=c, init=True, state=waiting)
        for c in spec.get("containers") or []:
            self.containers[c["name"]] = _Container(spec=c, init=False, state=waiting)
        self.sandbox: Sandbox | None = None
        self.pod_ips: tuple[str, ...] = ()
        self.start_time: datetime | None = None
        self.volumes: dict[str, Path] | None = None
        self.volumes_at = 0.0
        self.retry = Backoff(ctx.config.retry_backoff)
        self.retry_at = 0.0
        self.crash = Backoff(ctx.config.crash_backoff)
        self.pulls = Backoff(ctx.config.image_backoff)
        self.finished = False
        self.sandbox_released = True
        phase = (pod.get("status") or {}).get("phase")
        self.adopted_terminal = phase in ("Succeeded", "Failed")
        """Completed before this kubelet saw it: leave its status alone, only clean up."""
        self.previous_status: JSON = dict(pod.get("status") or {})
        self.last_sent: JSON | None = None
        self._wake = threading.Event()
        self._shutdown = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"pod-{self.name}", daemon=True)
        self.done = threading.Event()

    # ---- control from the kubelet ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def shutdown(self) -> None:
        self._shutdown.set()
        self._wake.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---- the loop ---------------------------------------------------------------------------

    def _now(self) -> float:
        return self.ctx.clock.monotonic()

    def _wall(self) -> datetime:
        return self.ctx.clock.now()

    def _current(self) -> JSON | None:
        pod = self.ctx.get_pod(self.key)
        if pod is None or str((pod.get("metadata") or {}).get("uid")) != self.uid:
            return None
        return pod

    def _run(self) -> None:
        try:
            while not self._shutdown.is_set():
                pod = self._current()
                if pod is None:
                    self._terminate(None)
                    return
                self.pod = pod
                if (pod.get("metadata") or {}).get("deletionTimestamp"):
                    if self._terminate(pod):
                        return
                elif not self.adopted_terminal:
                    self._sync(pod)
                    self._report(pod)
                self._wake.wait(self._next_wait())
                self._wake.clear()
            self._teardown(self.ctx.config.shutdown_grace)
        except Exception:
            log.exception("pod worker %s crashed; tearing the pod down", self.key)
            self._teardown(self.ctx.config.shutdown_grace)
        finally:
            self.done.set()

    def _next_wait(self) -> float:
        period = self.ctx.config.sync_period
        now = self._now()
        timers = [
            t - now for t in [self.retry_at, *(c.retry_at for c in self.containers.values())] if t > now
        ]
        return max(0.01, min([period, *timers]))

    def _event(self, etype: str, reason: str, message: str, container: _Container | None = None) -> None:
        ref = dict(self.pod)
        ref.setdefault("kind", "Pod")
        ref.setdefault("apiVersion", "v1")
        self.ctx.recorder.event(
            ref, etype, reason, message, field_path=container.field_path if container else ""
        )

    def _sync_error(self, err: str) -> None:
        self.ctx.klog.error(
            "pod_workers.go:1301", "Error syncing pod, skipping", err=err, pod=self.key, podUID=self.uid
        )

    @property
    def _pod_ref(self) -> str:
        return f"{self.name}_{self.namespace}({self.uid})"

    # ---- sync -------------------------------------------------------------------------------

    def _sync(self, pod: JSON) -> None:
        if self.finished:
            if not self.sandbox_released:
                self._release_sandbox()
            return
        now = self._now()
        if self.start_time is None:
            self.start_time = self._wall()
        if not self._ensure_volumes(pod, now) or not self._ensure_sandbox(pod, now):
            return
        spec = pod.get("spec") or {}
        policy = str(spec.get("restartPolicy", "Always"))
        for c in self._of_kind(init=True):
            self._poll(c)
            if c.step is Step.EXITED:
                assert c.last_exit is not None
                if c.last_exit.exit_code == 0:
                    c.step = Step.DONE
                elif policy == "Never":
                    c.step = Step.DONE
                    self._finish()
                    return
                else:
                    self._restart_or_wait(c, pod, now)
                    return
            if c.step is Step.DONE:
                if c.last_exit is not None and c.last_exit.exit_code == 0:
                    continue
                return
            if c.step is Step.CRASH_WAIT:
                self._restart_or_wait(c, pod, now)
            elif c.step is Step.NEW and c.retry_at <= now:
                self._start(c, pod, now)
            return
        for c in self._of_kind(init=False):
            self._poll(c)
            if c.step is Step.RUNNING and c.liveness_failed:
                self._kill_for_liveness(c, pod)
            if c.step is Step.RUNNING and c.started and c.pending_probes:
                self._start_probes(c, c.pending_probes)
            if c.step is Step.EXITED:
                if self._should_restart(c, policy):
                    self._restart_or_wait(c, pod, now)
                else:
                    c.step = Step.DONE
            elif c.step is Step.CRASH_WAIT:
                self._restart_or_wait(c, pod, now)
            elif c.step is Step.NEW and c.retry_at <= now:
                self._start(c, pod, now)
        if all(c.step is Step.DONE for c in self._of_kind(init=False)):
            self._finish()
        if self.volumes is not None and now - self.volumes_at >= self.ctx.config.volume_refresh:
            self._refresh_volumes(pod, now)

    def _of_kind(self, *, init: bool) -> list[_Container]:
        return [c for c in self.containers.values() if c.init == init]

    @staticmethod
    def _should_restart(c: _Container, policy: str) -> bool:
        code = c.last_exit.exit_code if c.last_exit else 0
        if policy == "Always":
            return True
        return policy == "OnFailure" and code != 0

    def _facts(self) -> PodFacts:
        return PodFacts(
            pod_ip=self.pod_ips[0] if self.pod_ips else "",
            pod_ips=self.pod_ips,
            host_ip=self.ctx.host_ip,
            node_name=self.ctx.node,
        )

    def _retry_later(self, now: float) -> None:
        self.retry.next("pod", now, now)
        self.retry_at = now + self.retry.get("pod")

    # ---- volumes and sandbox ----------------------------------------------------------------

    def _ensure_volumes(self, pod: JSON, now: float) -> bool:
        if self.volumes is not None:
            return True
        if now < self.retry_at:
            return False
        try:
            self.volumes = materialise(pod, self.ctx.layout, self.ctx.node, self._facts(), self.ctx.objects)
        except VolumeError as err:
            self._event(WARNING, "FailedMount", str(err))
            self._retry_later(now)
            return False
        self.volumes_at = now
        return True

    def _refresh_volumes(self, pod: JSON, now: float) -> None:
        self.volumes_at = now
        try:
            self.volumes = materialise(pod, self.ctx.layout, self.ctx.node, self._facts(), self.ctx.objects)
        except VolumeError as err:
            self._event(WARNING, "FailedMount", str(err))

    def _ensure_sandbox(self, pod: JSON, now: float) -> bool:
        if self.sandbox is not None or (self.host_network and self.pod_ips):
            return True
        if self.host_network:
            self.pod_ips = (self.ctx.host_ip,)
            return True
        if now < self.retry_at:
            return False
        try:
            self.sandbox = self._run_sandbox(pod)
        except SandboxError as err:
            log.info("pod %s: %s: %s", self.key, err.reason, err)
            self._event(WARNING, err.reason, str(err))
            if err.reason == "FailedCreatePodSandBox":
                detail = str(err).removeprefix("Failed to create pod sandbox: ")
                self.ctx.klog.error("log.go:32", "RunPodSandbox from runtime service failed", err=detail)
                self._sync_error(
                    f'failed to "CreatePodSandbox" for "{self._pod_ref}" with CreatePodSandboxError: '
                    f'"Failed to create sandbox for pod \\"{self._pod_ref}\\": {detail}"'
                )
            else:
                self._sync_error(str(err))
            self._retry_later(now)
            return False
        except Exception as err:
            log.warning("pod %s: sandbox creation failed: %s", self.key, err)
            self._event(WARNING, "FailedCreatePodSandBox", f"Failed to create pod sandbox: {err}")
            self._retry_later(now)
            return False
        self.sandbox_released = False
        self.retry.forget("pod")
        self.retry_at = 0.0
        self.pod_ips = tuple(self.sandbox.ips)
        # The /etc/hosts entry and downward-API files need the pod IP: refresh now.
        self._refresh_volumes(pod, now)
        return True

    def _run_sandbox(self, pod: JSON) -> Sandbox:
        """RunPodSandbox, with the pod's hostPorts when the runtime takes them (portmap plugin)."""
        runtime = self.ctx.runtime
        ports = host_ports(pod)
        if ports and "port_mappings" in inspect.signature(runtime.run_pod_sandbox).parameters:
            from clusters.lab.node.cni import PortMapping

            mappings = [PortMapping(h, c, proto, ip) for h, c, proto, ip in ports]
            sandbox: Sandbox = getattr(runtime, "run_pod_sandbox")(  # noqa: B009 - not in the protocol
                self.uid, self.namespace, self.name, port_mappings=mappings
            )
            return sandbox
        return runtime.run_pod_sandbox(self.uid, self.namespace, self.name)

    def _release_sandbox(self, *, unclean: bool = False) -> None:
        if self.sandbox is None:
            self.sandbox_released = True
            return
        runtime: Any = self.ctx.runtime
        try:
            if unclean and hasattr(runtime, "remove_sandbox_unclean"):
                runtime.remove_sandbox_unclean(self.uid)
            else:
                runtime.stop_pod_sandbox(self.uid)
            self.sandbox_released = True
        except SandboxError as err:
            self._event(
                WARNING,
                err.reason,
                f'error killing pod: failed to "KillPodSandbox" for "{self.uid}" '
                f'with KillPodSandboxError: "{err}"',
            )
            if unclean:
                self.sandbox_released = True
        except Exception as err:
            log.warning("pod %s: stopping the sandbox failed: %s", self.key, err)
            self.sandbox_released = unclean

    # ---- containers -------------------------------------------------------------------------

    def _pull(self, c: _Container, now: float) -> bool:
        """Image handling with the kubelet's events; False while the image cannot be had."""
        image = str(c.spec.get("image", ""))
        ref = images.parse_image(image)
        policy = str(c.spec.get("imagePullPolicy") or ("Always" if ref.tag == "latest" else "IfNotPresent"))
        if images.is_known(image):
            if policy == "Always":
                self._event(NORMAL, "Pulling", f'Pulling image "{image}"', c)
                self._event(
                    NORMAL,
                    "Pulled",
                    f'Successfully pulled image "{image}" in 0s (0s including waiting). Image size: 0 bytes.',
                    c,
                )
            else:
                self._event(NORMAL, "Pulled", f'Container image "{image}" already present on machine', c)
            c.image_id = ref.image_id
            self.pulls.forget(c.name)
            return True
        if policy == "Never":
            msg = f'Container image "{image}" is not present with pull policy of Never'
            c.state = Waiting("ErrImageNeverPull", msg)
            self._event(WARNING, "ErrImageNeverPull", msg, c)
            c.retry_at = now + self.ctx.config.image_backoff.base
            return False
        if self.pulls.in_backoff_since_update(c.name, now):
            msg = f'Back-off pulling image "{image}"'
            c.state = Waiting("ImagePullBackOff", f"{msg}: ErrImagePull: {c.pull_error}")
            self._event(NORMAL, "BackOff", msg, c)
            self._event(WARNING, "Failed", "Error: ImagePullBackOff", c)
            c.retry_at = now + self.pulls.remaining_since_update(c.name, now)
            return False
        self._event(NORMAL, "Pulling", f'Pulling image "{image}"', c)
        try:
            images.resolve(image, (), ())
        except images.ImagePullError as err:
            c.pull_error = str(err)
        self._event(WARNING, "Failed", f'Failed to pull image "{image}": {c.pull_error}', c)
        self._event(WARNING, "Failed", "Error: ErrImagePull", c)
        c.state = Waiting("ErrImagePull", c.pull_error)
        self.pulls.next(c.name, now, now)
        c.retry_at = now + min(self.pulls.get(c.name), self.ctx.config.sync_period * 4)
        return False

    def _config_error(self, c: _Container, message: str, now: float) -> None:
        c.state = Waiting("CreateContainerConfigError", message)
        self._event(WARNING, "Failed", f"Error: {message}", c)
        self.retry.next(c.name, now, now)
        c.retry_at = now + self.retry.get(c.name)

    def _start(self, c: _Container, pod: JSON, now: float) -> None:
        if not self._pull(c, now):
            return
        facts = self._facts()
        try:
            env = container_env(pod, c.spec, facts, self.ctx.objects)
            argv = images.resolve(
                str(c.spec["image"]),
                expand_command(c.spec.get("command") or [], env),
                expand_command(c.spec.get("args") or [], env),
            )
            assert self.volumes is not None
            rootfs = build_rootfs(pod, c.spec, self.volumes, self.ctx.layout, self.ctx.node, facts.pod_ip)
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
            self.ctx.layout, self.ctx.node, self.namespace, self.name, self.uid, c.name, restart
        )
        log_path.parent.mkdir(parents=True, exist_ok=True)
        container_id = secrets.token_hex(32)
        self._event(NORMAL, "Created", f"Created container: {c.name}", c)
        spec = ProcessSpec(argv=argv, env=env, cwd=cwd, log_path=log_path, host_network=self.host_network)
        c.container_id = f"containerd://{container_id}"
        c.restart_count = restart
        if c.last_exit is not None:
            c.last_state = c.last_exit
        c.env, c.rootfs = env, rootfs
        try:
            pid = self.ctx.runtime.start_process(None if self.host_network else self.sandbox, spec)
        except Exception as err:
            message = f"failed to create containerd task: failed to create shim task: {err}"
            self._event(WARNING, "Failed", f"Error: {message}", c)
            self._exited(c, procs.Exit(128), reason="StartError", message=message, started=EPOCH)
            return
        link_container_log(
            self.ctx.layout, self.ctx.node, self.namespace, self.name, c.name, container_id, log_path
        )
        self._event(NORMAL, "Started", f"Started container {c.name}", c)
        c.pid = pid
        c.step = Step.RUNNING
        c.started_wall = self._wall()
        c.state = Running(c.started_wall)
        c.liveness_failed = False
        c.backoff_posted = False
        specs = self._probe_specs(c)
        with self._lock:
            c.ready = not any(p.kind == "readiness" for p in specs) and not c.init
            c.started = not any(p.kind == "startup" for p in specs)
        self._start_probes(c, specs)

    def _restart_or_wait(self, c: _Container, pod: JSON, now: float) -> None:
        assert c.last_exit is not None
        if self.crash.in_backoff(c.name, c.finished_mono, now):
            delay = self.crash.get(c.name)
            c.step = Step.CRASH_WAIT
            c.last_state = c.last_exit
            c.state = Waiting(
                "CrashLoopBackOff",
                f"back-off {go_duration(delay)} restarting failed container={c.name} pod={self._pod_ref}",
            )
            c.retry_at = now + self.crash.remaining(c.name, c.finished_mono, now)
            if not c.backoff_posted:
                self._sync_error(
                    f'failed to "StartContainer" for "{c.name}" with CrashLoopBackOff: "{c.state.message}"'
                )
                self._event(
                    WARNING,
                    "BackOff",
                    f"Back-off restarting failed container {c.name} in pod {self._pod_ref}",
                    c,
                )
                c.backoff_posted = True
            return
        self.crash.next(c.name, c.finished_mono, now)
        c.step = Step.NEW
        c.retry_at = 0.0
        self._start(c, pod, now)

    def _poller(self) -> procs.Poller:
        runtime = self.ctx.runtime
        if isinstance(runtime, ReapingRuntime):
            return lambda pid: procs.from_returncode(runtime.process_returncode(pid))
        return procs.poll

    def _poll(self, c: _Container) -> None:
        if c.pid is None:
            return
        result = self._poller()(c.pid)
        if result is not None:
            self._exited(c, result)

    def _exited(
        self,
        c: _Container,
        result: procs.Exit,
        *,
        reason: str = "",
        message: str = "",
        started: datetime | None = None,
    ) -> None:
        self._stop_probes(c)
        term = Terminated(
            exit_code=result.code,
            reason=reason or ("Completed" if result.code == 0 else "Error"),
            finished_at=self._wall(),
            started_at=started or c.started_wall,
            message=message,
            container_id=c.container_id,
        )
        with self._lock:
            c.pid = None
            c.ready = False
            c.started = False
        c.state = term
        c.last_exit = term
        c.finished_mono = self._now()
        c.step = Step.EXITED
        log.info("pod %s container %s exited %d", self.key, c.name, result.code)

    def _kill_for_liveness(self, c: _Container, pod: JSON) -> None:
        probe = "startup" if not c.started else "liveness"
        self._event(NORMAL, "Killing", f"Container {c.name} failed {probe} probe, will be restarted", c)
        self._kill([c], self._grace(pod))

    def _kill(self, containers: list[_Container], grace: float) -> None:
        running = [c for c in containers if c.pid is not None]
        for c in running:
            self._stop_probes(c)
        pids = [c.pid for c in running if c.pid is not None]
        exits = procs.kill_group(pids, grace, self._poller()) if pids else {}
        for c in running:
            if c.pid is not None:
                self._exited(c, exits.get(c.pid, procs.Exit(137, 9)))

    @staticmethod
    def _grace(pod: JSON | None) -> float:
        """The kill grace period, never below the kubelet's 2 s minimum (kuberuntime_container.go)."""
        if pod is None:
            return 30.0
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        value = meta.get("deletionGracePeriodSeconds")
        if value is None:
            value = spec.get("terminationGracePeriodSeconds", 30)
        return max(MIN_GRACE, float(value))

    # ---- probes -----------------------------------------------------------------------------

    def _probe_specs(self, c: _Container) -> list[ProbeSpec]:
        specs = []
        for kind in ("startup", "readiness", "liveness"):
            raw = c.spec.get(f"{kind}Probe")
            if not raw or c.init:
                continue
            try:
                specs.append(parse_probe(kind, raw, c.spec))
            except ValueError as err:
                log.warning("pod %s container %s: bad %s probe: %s", self.key, c.name, kind, err)
        return specs

    def _start_probes(self, c: _Container, specs: list[ProbeSpec]) -> None:
        """Start probe workers; with a startup probe, the others wait until it succeeds."""
        ip = self.pod_ips[0] if self.pod_ips else ""
        startup = [s for s in specs if s.kind == "startup"]
        now_specs = startup or specs
        c.pending_probes = [s for s in specs if s not in now_specs]
        for spec in now_specs:
            worker = ProbeWorker(
                spec,
                ip,
                self.ctx.connect,
                self._exec_for(c),
                functools.partial(self._on_probe, c),
                functools.partial(self._on_probe_failure, c),
                f"{self.name}-{c.name}-{spec.kind}",
            )
            c.probes.append(worker)
            worker.start()

    def _stop_probes(self, c: _Container) -> None:
        for worker in c.probes:
            worker.stop()
        c.probes = []
        c.pending_probes = []

    def _on_probe(self, c: _Container, spec: ProbeSpec, ok: bool) -> None:
        with self._lock:
            if spec.kind == "readiness":
                c.ready = ok and c.pid is not None
            elif spec.kind == "startup":
                c.started = ok and c.pid is not None
                c.liveness_failed = not ok
            elif spec.kind == "liveness" and not ok:
                c.liveness_failed = True
        self.wake()

    def _on_probe_failure(self, c: _Container, spec: ProbeSpec, result: ProbeResult) -> None:
        self.ctx.klog.info(
            "prober.go:107",
            "Probe failed",
            probeType=spec.kind.capitalize(),
            pod=self.key,
            podUID=self.uid,
            containerName=c.name,
            probeResult="failure",
            output=result.message,
        )
        self._event(WARNING, "Unhealthy", f"{spec.kind.capitalize()} probe failed: {result.message}", c)

    def _exec_for(self, c: _Container) -> Callable[[Any, float], tuple[int | None, str]]:
        def execute(command: Any, timeout: float) -> tuple[int | None, str]:
            out = self.ctx.layout.pod_dir(self.uid) / "exec" / f"{c.name}-{secrets.token_hex(4)}.out"
            out.parent.mkdir(parents=True, exist_ok=True)
            spec = ProcessSpec(
                argv=images.command_argv(list(command)),
                env=dict(c.env),
                cwd=c.rootfs or out.parent,
                log_path=out,
                host_network=self.host_network,
            )
            poller = self._poller()
            try:
                pid = self.ctx.runtime.start_process(None if self.host_network else self.sandbox, spec)
                result = procs.wait(pid, timeout, poller=poller)
                if result is None:
                    procs.kill_group([pid], 0.0, poller)
                    return None, ""
                return result.code, out.read_text(errors="replace") if out.exists() else ""
            finally:
                out.unlink(missing_ok=True)

        return execute

    # ---- status -----------------------------------------------------------------------------

    def view(self, *, terminal: bool = False) -> PodView:
        spec = self.pod.get("spec") or {}
        with self._lock:
            inits = tuple(c.view() for c in self._of_kind(init=True))
            mains = tuple(c.view() for c in self._of_kind(init=False))
        return PodView(
            restart_policy=str(spec.get("restartPolicy", "Always")),
            init_containers=inits,
            containers=mains,
            container_names=tuple(c["name"] for c in spec.get("containers") or []),
            init_names=tuple(c["name"] for c in spec.get("initContainers") or []),
            sandbox_ready=bool(self.pod_ips) and not self.finished,
            pod_ips=self.pod_ips,
            host_ip=self.ctx.host_ip,
            start_time=self.start_time,
            terminal=terminal,
        )

    def _report(self, pod: JSON, *, terminal: bool = False) -> None:
        status = pod_status(self.view(terminal=terminal), self.previous_status, self._wall())
        if status == self.last_sent:
            return
        if self._current() is None:
            return
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
        try:
            # Like the kubelet's two-way merge patch: keep the conditions in the kubelet's order.
            order = [{"type": c["type"]} for c in status["conditions"]]
            self.ctx.kube.patch(
                path, {"status": {**status, "$setElementOrder/conditions": order}}, STRATEGIC_PATCH
            )
        except Exception as err:
            if not is_not_found(err):
                log.warning("pod %s: status update failed: %s", self.key, str(err).splitlines()[0])
            return
        self.last_sent = status
        self.previous_status = status

    def _finish(self) -> None:
        """The pod reached a terminal phase: stop probes and give the network back (kubelet does)."""
        for c in self.containers.values():
            self._stop_probes(c)
        self.finished = True
        self._release_sandbox()

    # ---- termination ------------------------------------------------------------------------

    def _terminate(self, pod: JSON | None) -> bool:
        """Graceful stop for a deleted pod; True once the pod object is gone (the worker ends)."""
        running = [c for c in self.containers.values() if c.pid is not None]
        for c in running:
            self._event(NORMAL, "Killing", f"Stopping container {c.name}", c)
        # A pod removed outright (no graceful deletion) still gets its own grace period.
        self._kill(running, self._grace(pod or self.pod))
        for c in self.containers.values():
            if c.step is not Step.RUNNING:
                c.step = Step.DONE
        self.finished = True
        if not self.sandbox_released:
            self._release_sandbox()
            if not self.sandbox_released:
                now = self._now()
                self._retry_later(now)
                return False
        if pod is not None:
            if not self.adopted_terminal and self.start_time is not None:
                self._report(pod, terminal=True)
            try:
                self.ctx.kube.delete(
                    f"/api/v1/namespaces/{self.namespace}/pods/{self.name}",
                    {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
                )
            except Exception as err:
                if not is_not_found(err) and getattr(err, "status", 0) != 409:
                    log.warning("pod %s: final delete failed: %s", self.key, str(err).splitlines()[0])
                    return False
        self._cleanup_files()
        return True

    def _teardown(self, grace: float) -> None:
        """The kubelet is stopping: kill everything quickly, release the sandbox, no API calls."""
        self._kill([c for c in self.containers.values() if c.pid is not None], grace)
        self._release_sandbox(unclean=True)
        self._cleanup_files()

    def _cleanup_files(self) -> None:
        shutil.rmtree(self.ctx.layout.pod_dir(self.uid), ignore_errors=True)
        remove_pod_logs(self.ctx.layout, self.ctx.node, self.namespace, self.name, self.uid)


def host_ports(pod: JSON) -> list[tuple[int, int, str, str]]:
    """(hostPort, containerPort, protocol, hostIP) of every container port that asks for one."""
    out = []
    for c in (pod.get("spec") or {}).get("containers") or []:
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(
                    (
                        int(port["hostPort"]),
                        int(port["containerPort"]),
                        str(port.get("protocol", "TCP")).lower(),
                        str(port.get("hostIP", "")),
                    )
                )
    return out
