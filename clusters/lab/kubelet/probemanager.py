"""A running container's probes: which workers run, and what their results do to the container.

probes.py runs one probe; this is the kubelet's prober manager for one pod. With a startup probe
the other probes wait until it succeeds; a result flips ``ready``/``started``/``liveness_failed``
under the pod lock and wakes the worker, which owns every restart; each failure is an
``Unhealthy`` event and a ``prober.go`` klog line. Exec probes run in the container's network
and environment, from its root directory.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Sequence

from clusters.lab.controllers.events import WARNING
from clusters.lab.kubelet import images, procs
from clusters.lab.kubelet.containerstate import Container
from clusters.lab.kubelet.podscope import PodScope
from clusters.lab.kubelet.probes import Executor, ProbeResult, ProbeSpec, ProbeWorker, parse_probe
from clusters.lab.kubelet.sandbox import PodSandbox
from clusters.lab.runtime import ProcessSpec

log = logging.getLogger(__name__)


class ProbeManager:
    def __init__(self, scope: PodScope, sandbox: PodSandbox) -> None:
        self.scope = scope
        self.sandbox = sandbox

    def specs(self, c: Container) -> list[ProbeSpec]:
        """The container's probes (init containers have none); a bad one is logged and skipped."""
        specs = []
        for kind in ("startup", "readiness", "liveness"):
            raw = c.spec.get(f"{kind}Probe")
            if not raw or c.init:
                continue
            try:
                specs.append(parse_probe(kind, raw, c.spec))
            except ValueError as err:
                log.warning("pod %s container %s: bad %s probe: %s", self.scope.key, c.name, kind, err)
        return specs

    def start(self, c: Container, specs: list[ProbeSpec]) -> None:
        """Start probe workers; with a startup probe, the others wait until it succeeds."""
        pod_ips = self.sandbox.pod_ips
        ip = pod_ips[0] if pod_ips else ""
        startup = [s for s in specs if s.kind == "startup"]
        now_specs = startup or specs
        c.pending_probes = [s for s in specs if s not in now_specs]
        for spec in now_specs:
            worker = ProbeWorker(
                spec,
                ip,
                self.scope.ctx.connect,
                self._exec_for(c),
                functools.partial(self._on_result, c),
                functools.partial(self._on_failure, c),
                f"{self.scope.name}-{c.name}-{spec.kind}",
            )
            c.probes.append(worker)
            worker.start()

    def stop(self, c: Container) -> None:
        for worker in c.probes:
            worker.stop()
        c.probes = []
        c.pending_probes = []

    def stop_liveness_and_startup(self, c: Container) -> None:
        """A terminating container keeps only its readiness probe (the endpoint's ``serving``)."""
        keep = [w for w in c.probes if w.spec.kind == "readiness"]
        for worker in c.probes:
            if worker not in keep:
                worker.stop()
        c.probes = keep
        c.pending_probes = []
        with self.scope.lock:
            c.liveness_failed = False

    def _on_result(self, c: Container, spec: ProbeSpec, ok: bool) -> None:
        with self.scope.lock:
            if spec.kind == "readiness":
                c.ready = ok and c.pid is not None
            elif spec.kind == "startup":
                c.started = ok and c.pid is not None
                c.liveness_failed = not ok
            elif spec.kind == "liveness" and not ok:
                c.liveness_failed = True
        self.scope.wake()

    def _on_failure(self, c: Container, spec: ProbeSpec, result: ProbeResult) -> None:
        scope = self.scope
        scope.ctx.klog.info(
            "prober.go:107",
            "Probe failed",
            probeType=spec.kind.capitalize(),
            pod=scope.key,
            podUID=scope.uid,
            containerName=c.name,
            probeResult="failure",
            output=result.message,
        )
        scope.event(WARNING, "Unhealthy", f"{spec.kind.capitalize()} probe failed: {result.message}", c)

    def _exec_for(self, c: Container) -> Executor:
        ctx = self.scope.ctx

        def execute(command: Sequence[str], timeout: float) -> tuple[int | None, str]:
            out = ctx.layout.pod_dir(self.scope.uid) / "exec" / f"{c.name}-{secrets.token_hex(4)}.out"
            out.parent.mkdir(parents=True, exist_ok=True)
            spec = ProcessSpec(
                argv=images.command_argv(list(command)),
                env=dict(c.env),
                cwd=c.rootfs or out.parent,
                log_path=out,
                host_network=self.scope.host_network,
            )
            poller = procs.poller_for(ctx.runtime)
            try:
                pid = ctx.runtime.start_process(self.sandbox.process_sandbox, spec)
                result = procs.wait(pid, timeout, poller=poller)
                if result is None:
                    procs.kill_group([pid], 0.0, poller)
                    return None, ""
                return result.code, out.read_text(errors="replace") if out.exists() else ""
            finally:
                out.unlink(missing_ok=True)

        return execute
