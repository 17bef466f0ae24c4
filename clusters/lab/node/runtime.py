"""The containerd role on one lab node: :class:`clusters.lab.runtime.NodeRuntime` for real.

Sandboxes are network namespaces set up by CNI ADD with the config containerd would have loaded
(:mod:`.cni`), kept current by containerd's watcher rules (:mod:`.confwatch`). Errors carry the
exact kubelet/containerd wording (reference §3.1). Containers are processes started through
:mod:`.launch` in the sandbox's namespace.

Knowing differences from containerd: the loopback and pod networks are attached one after the
other (containerd may attach them concurrently); no pause container; container logs are raw
output, not the CRI log format; removing the conf dir restarts "containerd" in-process after 1 s
(like systemd's ``RestartSec=1`` on kind) without stopping running sandboxes.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clusters.errors import CommandFailed
from clusters.lab import layout
from clusters.lab.netns import list_netns, netns_path
from clusters.lab.node.cni import (
    NOT_INITIALIZED,
    PLUGIN_ENV_PATH,
    Attachment,
    ConfigLoadError,
    NetworkList,
    PluginError,
    PortMapping,
    load_conf_dir,
    loopback_network,
    result_ips,
)
from clusters.lab.node.cnirun import step
from clusters.lab.node.confwatch import ConfWatcher, Event
from clusters.lab.node.nodefs import CONF_DIR, node_path
from clusters.lab.node.shell import shell_argv
from clusters.lab.node.underlay import kill_netns_processes
from clusters.lab.runtime import NetworkStatus, ProcessSpec, Sandbox, SandboxError
from clusters.proc import run

log = logging.getLogger(__name__)

NOT_READY_MESSAGE = f"Network plugin returns error: {NOT_INITIALIZED}"
NETWORK_NOT_READY = (
    "network is not ready: container runtime network not ready: "
    f"NetworkReady=false reason:NetworkPluginNotReady message:{NOT_READY_MESSAGE}"
)
"""kubelet's NetworkNotReady event message (reference §3.1)."""
RESTART_DELAY = 1.0
"""kind's containerd.service ``RestartSec``."""
IP_TIMEOUT = 15.0


EXITED_KEPT = 4096
"""Exit codes remembered after a process is reaped (callers read each one soon after exit)."""


def _destroy_failed(sandbox_id: str, err: str) -> str:
    """containerd's StopPodSandbox error as kubelet's event shows it (wording [inferred])."""
    return f'rpc error: code = Unknown desc = failed to destroy network for sandbox "{sandbox_id}": {err}'


class LabNodeRuntime:
    """One node's container runtime. Call :meth:`start` (load + watch) and :meth:`close`."""

    def __init__(
        self,
        lab: layout.LabLayout,
        node: str,
        *,
        prefix: str = layout.PREFIX,
        plugin_timeout: float = 30.0,
    ):
        self.node = node
        self.lab = lab
        self.prefix = prefix
        self.netns = layout.node_netns(node, prefix)
        self.conf_dir = node_path(lab, node, CONF_DIR)
        self.state_dir = node_path(lab, node, "/var/lib/containerd/lab-sandboxes")
        self.plugin_timeout = plugin_timeout
        self._loopback = loopback_network()
        self._lock = threading.Lock()
        self._network: NetworkList | None = None
        self._last_load_error = ""
        self._watcher: ConfWatcher | None = None
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._exited: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._closed = False

    # ---- config loading (containerd's CNI conf syncer) ----------------------------------------

    def start(self) -> None:
        """containerd start: load once, then watch the conf dir."""
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._load(startup=True)
        self._watcher = ConfWatcher(self.conf_dir, self._on_event, self._on_dir_gone)
        self._watcher.start()

    def close(self) -> None:
        """Stop watching and kill + reap every process this runtime started (lab down)."""
        self._closed = True
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        for pid, proc in list(self._procs.items()):
            if proc.poll() is None:
                self.kill_process(pid, signal.SIGKILL)
            proc.wait(timeout=10)
        self._procs.clear()

    @property
    def watcher(self) -> ConfWatcher | None:
        return self._watcher

    @property
    def loaded_network(self) -> NetworkList | None:
        with self._lock:
            return self._network

    @property
    def last_load_error(self) -> str:
        """``crictl info``'s ``lastCNILoadStatus`` ("" when the last load succeeded)."""
        with self._lock:
            return self._last_load_error

    def _load(self, *, startup: bool = False, event: Event | None = None) -> None:
        try:
            net = load_conf_dir(self.conf_dir)
        except ConfigLoadError as exc:
            with self._lock:
                self._network, self._last_load_error = None, str(exc)  # go-cni Load() resets first
            if startup:
                log.warning(
                    "node %s: failed to load cni during init, please check CRI plugin status "
                    "before setting up network for pods: %s",
                    self.node,
                    exc,
                )
            else:
                log.error(
                    "node %s: failed to reload cni configuration after receiving fs change event(%s): %s",
                    self.node,
                    event,
                    exc,
                )
            return
        with self._lock:
            self._network, self._last_load_error = net, ""
        log.info("node %s: loaded CNI network %r from %s", self.node, net.name, net.source)

    def _on_event(self, event: Event) -> None:
        self._load(event=event)

    def _on_dir_gone(self) -> None:
        """containerd ≥ 2.1 exits when the conf dir goes; systemd restarts it, which re-creates it."""
        log.critical("node %s: Failed to run CRI service: cni conf dir is removed, stop watching", self.node)
        with self._lock:
            self._network, self._last_load_error = None, "cni conf dir is removed, stop watching"

        def restart() -> None:
            if self._closed:
                return
            self._watcher = None
            self.start()

        timer = threading.Timer(RESTART_DELAY, restart)
        timer.daemon = True
        timer.start()

    def reload(self) -> None:
        """What a containerd restart does to the config: load now, whatever the events were."""
        self._load(startup=True)

    def network_status(self) -> NetworkStatus:
        with self._lock:
            ready = self._network is not None
        return NetworkStatus(ready=ready, message="" if ready else NOT_READY_MESSAGE)

    # ---- sandboxes -----------------------------------------------------------------------------

    def _state_path(self, pod_uid: str) -> Path:
        return self.state_dir / f"{pod_uid}.json"

    def _cni_args(
        self, pod_uid: str, namespace: str, name: str, sandbox_id: str
    ) -> tuple[tuple[str, str], ...]:
        return (
            ("K8S_POD_NAMESPACE", namespace),
            ("K8S_POD_NAME", name),
            ("K8S_POD_INFRA_CONTAINER_ID", sandbox_id),
            ("K8S_POD_UID", pod_uid),
            ("IgnoreUnknown", "1"),
        )

    def run_pod_sandbox(
        self,
        pod_uid: str,
        namespace: str,
        name: str,
        *,
        port_mappings: Sequence[PortMapping] = (),
    ) -> Sandbox:
        """Create the pod netns and run CNI ADD (loopback on ``lo``, then the loaded network)."""
        net = self.loaded_network
        if net is None:
            raise SandboxError("NetworkNotReady", NETWORK_NOT_READY)
        if self._state_path(pod_uid).exists():
            self.stop_pod_sandbox(pod_uid)
        sandbox_id = secrets.token_hex(32)
        netns = layout.pod_netns(pod_uid, self.prefix)
        if netns in list_netns():  # a leftover without state: containerd would never reuse it
            run(["ip", "netns", "del", netns], timeout=IP_TIMEOUT, check=False)
        try:
            run(["ip", "netns", "add", netns], timeout=IP_TIMEOUT)
        except CommandFailed as exc:
            raise SandboxError(
                "FailedCreatePodSandBox",
                "Failed to create pod sandbox: rpc error: code = Unknown desc = "
                f'failed to create network namespace for sandbox "{sandbox_id}": {exc}',
            ) from None
        args = self._cni_args(pod_uid, namespace, name, sandbox_id)
        path = str(netns_path(netns))
        lo = Attachment(sandbox_id, path, "lo", args, {})
        eth0 = Attachment(
            sandbox_id, path, "eth0", args, {"portMappings": [p.as_cni() for p in port_mappings]}
        )
        state = {
            "sandbox_id": sandbox_id,
            "netns": netns,
            "namespace": namespace,
            "name": name,
            "port_mappings": [p.as_cni() for p in port_mappings],
        }
        try:
            answers = self._cni_batch(
                [step("add", self._loopback, lo), step("add", net, eth0)], stop_on_error=True
            )
            failed = [a["error"] for a in answers if not a["ok"]]
            if failed:
                raise PluginError(failed[0])
            result = answers[-1]["result"]
        except PluginError as exc:
            self._cleanup_failed(net, lo, eth0, netns)
            raise SandboxError(
                "FailedCreatePodSandBox",
                "Failed to create pod sandbox: rpc error: code = Unknown desc = "
                f'failed to setup network for sandbox "{sandbox_id}": {exc}',
            ) from None
        ips = result_ips(result)
        state["ips"] = list(ips)
        self._state_path(pod_uid).write_text(json.dumps(state))
        log.info(
            "node %s: sandbox %s for %s/%s in %s with %s",
            self.node,
            sandbox_id[:13],
            namespace,
            name,
            netns,
            ips,
        )
        return Sandbox(pod_uid=pod_uid, netns=netns, ips=ips, sandbox_id=sandbox_id)

    def _cleanup_failed(self, net: NetworkList, lo: Attachment, eth0: Attachment, netns: str) -> None:
        """containerd's deferred cleanup after a failed setup: DEL (best effort), drop the netns."""
        try:
            answers = self._cni_batch(
                [step("del", net, eth0), step("del", self._loopback, lo)], stop_on_error=False
            )
            log.debug("cleanup DEL after failed ADD: %s", [a.get("error") for a in answers])
        except PluginError as exc:
            log.debug("cleanup DEL after failed ADD: %s", exc)
        run(["ip", "netns", "del", netns], timeout=IP_TIMEOUT, check=False)

    def _cni_batch(self, steps: list[dict[str, Any]], *, stop_on_error: bool) -> list[dict[str, Any]]:
        """Run CNI steps in the node context in one process (:mod:`.cnirun`)."""
        argv = [sys.executable, "-m", "clusters.lab.node.cnirun", "--root", str(self.lab.root)]
        argv += ["--prefix", self.prefix, self.node]
        request = {"timeout": self.plugin_timeout, "stop_on_error": stop_on_error, "steps": steps}
        try:
            res = run(
                argv, timeout=self.plugin_timeout * len(steps) + 10, stdin=json.dumps(request), check=False
            )
        except CommandFailed as exc:
            raise PluginError(f"netplugin failed: {exc}") from None
        if not res.ok:
            raise PluginError(f"netplugin failed: {json.dumps(res.stderr.strip()[-500:])}")
        answers: list[dict[str, Any]] = json.loads(res.stdout)["steps"]
        return answers

    def stop_pod_sandbox(self, pod_uid: str) -> None:
        """CNI DEL with the loaded config, then delete the netns. Idempotent.

        As in containerd, DEL needs a loaded config: while the conf dir is broken this raises
        (``failed to destroy network for sandbox …: cni plugin not initialized``) and keeps the
        netns, so a retry after recovery releases the IP. :meth:`remove_sandbox_unclean` is the
        teardown path that never fails.
        """
        state_file = self._state_path(pod_uid)
        if not state_file.exists():
            netns = layout.pod_netns(pod_uid, self.prefix)
            if netns in list_netns():
                self._stop_containers(netns)
                run(["ip", "netns", "del", netns], timeout=IP_TIMEOUT, check=False)
            return
        state = json.loads(state_file.read_text())
        sandbox_id, netns = str(state["sandbox_id"]), str(state["netns"])
        self._stop_containers(netns)
        net = self.loaded_network
        if net is None:
            raise SandboxError("FailedKillPod", _destroy_failed(sandbox_id, NOT_INITIALIZED))
        path = str(netns_path(netns)) if netns in list_netns() else ""
        args = self._cni_args(
            pod_uid, str(state.get("namespace", "")), str(state.get("name", "")), sandbox_id
        )
        mappings = state.get("port_mappings") or []
        steps = [
            step("del", self._loopback, Attachment(sandbox_id, path, "lo", args, {})),
            step("del", net, Attachment(sandbox_id, path, "eth0", args, {"portMappings": mappings})),
        ]
        try:
            answers = self._cni_batch(steps, stop_on_error=False)
        except PluginError as exc:
            raise SandboxError("FailedKillPod", _destroy_failed(sandbox_id, str(exc))) from None
        for answer in answers:
            err = "" if answer["ok"] else str(answer["error"])
            if not err or "not found" in err or (not path and "no such file or directory" in err):
                continue  # go-cni Remove() tolerates these
            raise SandboxError("FailedKillPod", _destroy_failed(sandbox_id, err))
        if path:
            run(["ip", "netns", "del", netns], timeout=IP_TIMEOUT, check=False)
        state_file.unlink(missing_ok=True)

    def remove_sandbox_unclean(self, pod_uid: str) -> None:
        """Teardown that cannot fail: try DEL, then drop the netns and state regardless."""
        try:
            self.stop_pod_sandbox(pod_uid)
        except SandboxError as exc:
            log.warning("node %s: %s; removing the sandbox anyway", self.node, exc)
        netns = layout.pod_netns(pod_uid, self.prefix)
        if netns in list_netns():
            self._stop_containers(netns)
            run(["ip", "netns", "del", netns], timeout=IP_TIMEOUT, check=False)
        self._state_path(pod_uid).unlink(missing_ok=True)

    def _stop_containers(self, netns: str) -> None:
        """containerd's StopPodSandbox stops the sandbox's containers before touching the network."""
        for pid in kill_netns_processes(netns):
            self.process_returncode(pid)  # reap it

    def sandboxes(self) -> list[str]:
        """Pod uids with a sandbox on this node (survives a restart of the lab process)."""
        if not self.state_dir.is_dir():
            return []
        return sorted(p.stem for p in self.state_dir.glob("*.json"))

    # ---- processes -----------------------------------------------------------------------------

    def launch_argv(self, sandbox: Sandbox | None, spec: ProcessSpec) -> list[str]:
        argv = [sys.executable, "-m", "clusters.lab.node.launch"]
        if sandbox is None or spec.host_network:
            argv += ["--netns", self.netns, "--root", str(self.lab.root), "--node", self.node]
        else:
            argv += ["--netns", sandbox.netns]
        return [*argv, "--", *spec.argv]

    def start_process(self, sandbox: Sandbox | None, spec: ProcessSpec) -> int:
        """Start a container process; stdout+stderr go to ``spec.log_path``.

        The Popen object is kept so the child is reaped by :meth:`process_returncode` (or by the
        caller's own ``os.waitpid``) and never by a stray garbage-collected Popen.
        """
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(spec.env)
        env.setdefault("PATH", PLUGIN_ENV_PATH)
        with open(spec.log_path, "ab") as logf:
            proc = subprocess.Popen(
                self.launch_argv(sandbox, spec),
                env=env,
                cwd=spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._procs[proc.pid] = proc
        return proc.pid

    def process_returncode(self, pid: int) -> int | None:
        """Exit code of a process from :meth:`start_process` (None while it runs).

        A finished process leaves ``_procs`` for a bounded table of exit codes, so exec probes
        (one short process per period per pod) do not grow the runtime for the whole run.
        """
        if pid in self._exited:
            return self._exited[pid]
        proc = self._procs.get(pid)
        if proc is None:
            return None
        code = proc.poll()
        if code is not None:
            del self._procs[pid]
            self._exited[pid] = code
            while len(self._exited) > EXITED_KEPT:
                self._exited.popitem(last=False)
        return code

    def kill_process(self, pid: int, sig: signal.Signals = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)

    def wait_process(self, pid: int, timeout: float) -> int | None:
        proc = self._procs.get(pid)
        if proc is None:
            return self._exited.get(pid)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.process_returncode(pid)

    def node_exec_argv(self, argv: Sequence[str]) -> list[str]:
        return shell_argv(self.lab.root, self.node, argv, self.prefix)
