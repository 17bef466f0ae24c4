"""The pod's sandbox: its network namespace and IPs, made and removed by the runtime's CNI ADD/DEL.

A broken CNI setup shows first here, so failures post exactly what the kubelet posts
(``FailedCreatePodSandBox``/``NetworkNotReady`` events, the ``RunPodSandbox`` and "Error syncing
pod" klog lines, ``KillPodSandbox`` errors) and leave the retry timing to the worker. A
hostNetwork pod gets no sandbox: it runs in the node's namespace with the node's IP.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from clusters.lab.controllers.events import WARNING
from clusters.lab.kubelet.env import PodFacts
from clusters.lab.kubelet.podscope import PodScope
from clusters.lab.runtime import Sandbox, SandboxError

log = logging.getLogger(__name__)

JSON = dict[str, Any]


class PodSandbox:
    def __init__(self, scope: PodScope) -> None:
        self.scope = scope
        self.current: Sandbox | None = None
        self.pod_ips: tuple[str, ...] = ()
        self.released = True
        """No sandbox is left to stop (none made yet, or StopPodSandbox succeeded)."""

    @property
    def process_sandbox(self) -> Sandbox | None:
        """Where a container process starts; None is the node's namespace (hostNetwork)."""
        return None if self.scope.host_network else self.current

    def facts(self) -> PodFacts:
        ctx = self.scope.ctx
        return PodFacts(
            pod_ip=self.pod_ips[0] if self.pod_ips else "",
            pod_ips=self.pod_ips,
            host_ip=ctx.host_ip,
            node_name=ctx.node,
        )

    def has_network(self) -> bool:
        """True once the pod has its IPs; a hostNetwork pod takes the node's on first ask."""
        if self.current is not None or (self.scope.host_network and self.pod_ips):
            return True
        if self.scope.host_network:
            self.pod_ips = (self.scope.ctx.host_ip,)
            return True
        return False

    def run(self, pod: JSON) -> bool:
        """RunPodSandbox; on failure post the kubelet's event and log lines and return False."""
        scope = self.scope
        try:
            sandbox = self._run_pod_sandbox(pod)
        except SandboxError as err:
            log.info("pod %s: %s: %s", scope.key, err.reason, err)
            scope.event(WARNING, err.reason, str(err))
            if err.reason == "FailedCreatePodSandBox":
                detail = str(err).removeprefix("Failed to create pod sandbox: ")
                scope.ctx.klog.error("log.go:32", "RunPodSandbox from runtime service failed", err=detail)
                scope.sync_error(
                    f'failed to "CreatePodSandbox" for "{scope.ref}" with CreatePodSandboxError: '
                    f'"Failed to create sandbox for pod \\"{scope.ref}\\": {detail}"'
                )
            else:
                scope.sync_error(str(err))
            return False
        except Exception as err:
            log.warning("pod %s: sandbox creation failed: %s", scope.key, err)
            scope.event(WARNING, "FailedCreatePodSandBox", f"Failed to create pod sandbox: {err}")
            return False
        self.current = sandbox
        self.released = False
        self.pod_ips = tuple(sandbox.ips)
        return True

    def _run_pod_sandbox(self, pod: JSON) -> Sandbox:
        """RunPodSandbox, with the pod's hostPorts when the runtime takes them (portmap plugin)."""
        scope = self.scope
        runtime = scope.ctx.runtime
        ports = host_ports(pod)
        if ports and "port_mappings" in inspect.signature(runtime.run_pod_sandbox).parameters:
            from clusters.lab.node.cni import PortMapping

            mappings = [PortMapping(h, c, proto, ip) for h, c, proto, ip in ports]
            sandbox: Sandbox = getattr(runtime, "run_pod_sandbox")(  # noqa: B009 - not in the protocol
                scope.uid, scope.namespace, scope.name, port_mappings=mappings
            )
            return sandbox
        return runtime.run_pod_sandbox(scope.uid, scope.namespace, scope.name)

    def release(self, *, unclean: bool = False) -> None:
        """StopPodSandbox (CNI DEL). ``unclean``: the kubelet is stopping, drop it whatever fails."""
        if self.current is None:
            self.released = True
            return
        scope = self.scope
        runtime: Any = scope.ctx.runtime
        try:
            if unclean and hasattr(runtime, "remove_sandbox_unclean"):
                runtime.remove_sandbox_unclean(scope.uid)
            else:
                runtime.stop_pod_sandbox(scope.uid)
            self.released = True
        except SandboxError as err:
            scope.event(
                WARNING,
                err.reason,
                f'error killing pod: failed to "KillPodSandbox" for "{scope.uid}" '
                f'with KillPodSandboxError: "{err}"',
            )
            if unclean:
                self.released = True
        except Exception as err:
            log.warning("pod %s: stopping the sandbox failed: %s", scope.key, err)
            self.released = unclean


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
