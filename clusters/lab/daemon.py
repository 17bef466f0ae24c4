"""The lab daemon: one process that owns the whole embedded cluster while it runs.

Order matters and mirrors a kind node boot: underlay and node namespaces, node file trees, the
API server (on loopback for us, and on the control-plane node's IP:6443 for programs inside the
lab), bootstrap objects, controllers, then a runtime and kubelet per node. The CNI agent
DaemonSet then writes each node's conflist, and nodes go Ready as on a real cluster. Teardown
runs in reverse on SIGTERM/SIGINT and on any start failure, then sweeps by name prefix.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from clusters.lab import bootstrap, control, layout, preflight
from clusters.lab.netns import socket_in_netns
from clusters.recipes import load_recipe

if TYPE_CHECKING:
    from clusters.lab.controllers.client import Kube

log = logging.getLogger("clusters.lab.daemon")

READY_TIMEOUT = 90.0
UPSTREAM_DNS = "172.18.0.1"
UPSTREAM_ANSWER = "172.18.255.253"
"""Where the upstream's public names point: inside the lab's ranges, never a real address."""


class Lab:
    """The running pieces, torn down in reverse order of start."""

    def __init__(self, root: Path, nodes: int, cni: str, prefix: str) -> None:
        self.lab = layout.LabLayout(root)
        self.names = layout.node_names(nodes)
        self.cni = cni
        self.prefix = prefix
        self._teardown: list[tuple[str, Callable[[], Any]]] = []

    def _on_stop(self, what: str, fn: Callable[[], Any]) -> None:
        self._teardown.append((what, fn))

    def start(self) -> str:
        from clusters.kubeclient import api_client
        from clusters.lab.api.server import start_api_server, write_kubeconfig
        from clusters.lab.controllers.client import Kube
        from clusters.lab.controllers.manager import ControllerManager
        from clusters.lab.kubelet.kubelet import Kubelet
        from clusters.lab.kubelet.podio import LabPodIO
        from clusters.lab.node.nodefs import check_root, create_node_fs, node_path
        from clusters.lab.node.runtime import LabNodeRuntime
        from clusters.lab.node.underlay import Underlay

        check_root(self.lab.root)
        t0 = time.monotonic()
        underlay = Underlay(self.prefix)
        self._on_stop("underlay", underlay.destroy)
        underlay.create()
        for index, node in enumerate(self.names):
            underlay.add_node(node, index)
            create_node_fs(self.lab, node)
        cp_netns = layout.node_netns(self.names[0], self.prefix)
        upstream = _start_upstream(layout.underlay_netns(self.prefix), self.lab)
        self._on_stop("upstream dns", lambda: _stop(upstream))
        for node in self.names:
            resolv = node_path(self.lab, node, "/etc/resolv.conf")
            resolv.parent.mkdir(parents=True, exist_ok=True)
            resolv.write_text(f"nameserver {UPSTREAM_DNS}\n")

        api = start_api_server(state_dir=None, pod_io=LabPodIO(self.lab, cp_netns))
        self._on_stop("api server", api.stop)
        in_lab = _listen_in_netns(cp_netns, str(layout.node_ip(0)), bootstrap.API_PORT)
        api.add_listener(in_lab)
        in_lab_url = f"http://{layout.node_ip(0)}:{bootstrap.API_PORT}"
        write_kubeconfig(self.lab.kubeconfig, api.url)
        for node in self.names:
            write_kubeconfig(node_path(self.lab, node, bootstrap.NODE_KUBECONFIG), in_lab_url)

        client = api_client(self.lab.kubeconfig)
        kube = Kube(client)
        _create_all(kube, bootstrap.all_objects(load_recipe(self.cni)))

        manager = ControllerManager(client)
        self._on_stop("controllers", manager.stop)
        manager.start()

        for index, node in enumerate(self.names):
            runtime = LabNodeRuntime(self.lab, node, prefix=self.prefix)
            self._on_stop(f"runtime {node}", runtime.close)
            runtime.start()
            kubelet = Kubelet(
                node, client, runtime, self.lab, index=index, taint_control_plane=len(self.names) > 1
            )
            self._on_stop(f"kubelet {node}", kubelet.stop)
            kubelet.start()
        log.info("lab components started in %.2fs; waiting for nodes and the CNI", time.monotonic() - t0)
        _wait_ready(kube, self.names, READY_TIMEOUT)
        log.info("lab ready in %.2fs", time.monotonic() - t0)
        return api.url

    def stop(self) -> None:
        from clusters.lab.node.underlay import sweep

        while self._teardown:
            what, fn = self._teardown.pop()
            try:
                fn()
            except Exception:
                log.exception("stopping %s failed; continuing teardown", what)
        report = sweep(self.prefix)
        log.info("lab stopped; sweep: %s", report)


def _listen_in_netns(netns: str, ip: str, port: int) -> socket.socket:
    """A listening socket on ``ip:port`` inside ``netns``: the in-lab address of the API server."""
    sock = socket_in_netns(netns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((ip, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _collection(obj: dict[str, Any]) -> str:
    """The REST collection path for ``obj``, from the API server's own resource registry."""
    from clusters.lab.api.resources import by_kind

    rt = by_kind(obj["apiVersion"], obj["kind"])
    if rt is None:
        raise ValueError(f"the lab API does not serve {obj['apiVersion']} {obj['kind']}")
    version = obj["apiVersion"]
    base = f"/api/{version}" if "/" not in version else f"/apis/{version}"
    namespace = obj["metadata"].get("namespace")
    return f"{base}/namespaces/{namespace}/{rt.plural}" if rt.namespaced else f"{base}/{rt.plural}"


def _create_all(kube: Kube, objects: Sequence[dict[str, Any]]) -> None:
    """Create the bootstrap objects; ones that already exist (a persisted API) are kept."""
    from clusters.lab.controllers.client import status_of

    for obj in objects:
        try:
            kube.create(_collection(obj), obj)
        except Exception as exc:
            if status_of(exc) != 409:
                raise


def _workload_ready(kube: Kube, kind: str, name: str, namespace: str = "kube-system") -> str | None:
    """None when the workload is fully available, else why not."""
    path = f"/apis/apps/v1/namespaces/{namespace}/{kind}/{name}"
    status = kube.get(path).get("status") or {}
    if kind == "daemonsets":
        want, have = status.get("desiredNumberScheduled") or 0, status.get("numberReady") or 0
    else:
        want, have = status.get("replicas") or 0, status.get("availableReplicas") or 0
    return None if want and have == want else f"{name} {have}/{want}"


def _wait_ready(kube: Kube, names: Sequence[str], timeout: float) -> None:
    """Nodes Ready, the CNI and kube-proxy on every node, CoreDNS available: what a usable kind
    cluster has, and what kind's `--wait` does not check."""
    deadline = time.monotonic() + timeout
    why = "nothing checked yet"
    while time.monotonic() < deadline:
        nodes = {n["metadata"]["name"]: n for n in kube.get("/api/v1/nodes").get("items", [])}
        not_ready = [
            name
            for name in names
            if not any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (nodes.get(name, {}).get("status") or {}).get("conditions") or []
            )
        ]
        waiting = [
            w
            for w in (
                _workload_ready(kube, "daemonsets", "lab-cni"),
                _workload_ready(kube, "daemonsets", "kube-proxy"),
                _workload_ready(kube, "deployments", "coredns"),
                _workload_ready(kube, "deployments", "ingress-nginx-controller", "ingress-nginx"),
            )
            if w
        ]
        if not not_ready and not waiting:
            return
        why = (f"nodes not Ready: {', '.join(not_ready) or 'none'}; "
               f"not available: {', '.join(waiting) or 'none'}")
        time.sleep(0.2)
    raise TimeoutError(f"the lab was not ready within {timeout:.0f}s: {why}")


def _start_upstream(netns: str, lab: layout.LabLayout) -> subprocess.Popen[bytes]:
    """The lab's upstream DNS server on the "Docker gateway" 172.18.0.1:53, inside the underlay:
    what node resolv.conf points at, so forwarding works with no internet (it never forwards)."""
    lab.log_dir().mkdir(parents=True, exist_ok=True)
    log_file = (lab.log_dir() / "upstream-dns.log").open("ab")
    argv = [
        "ip",
        "netns",
        "exec",
        netns,
        sys.executable,
        "-m",
        "clusters.lab.programs.upstream",
        "--listen",
        f"{UPSTREAM_DNS}:53",
        # The lab's "internet": the public name the DNS suite checks forwarding with by default.
        "--record",
        f"kubernetes.io={UPSTREAM_ANSWER}",
    ]
    with log_file:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clusters.lab.daemon")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--cni", default="lab")
    parser.add_argument("--prefix", default=layout.PREFIX)
    parser.add_argument(
        "--detach",
        action="store_true",
        help="fork and let the parent exit, so the caller reaps it and the lab is re-parented",
    )
    ns = parser.parse_args(argv)
    if ns.detach:
        if os.fork() > 0:
            os._exit(0)
        os.setsid()  # its own process group, so `lab down` can kill the lab and its children at once
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root: Path = ns.root
    lay = layout.LabLayout(root)
    root.mkdir(parents=True, exist_ok=True)
    lay.pid_file.write_text(f"{os.getpid()}\n")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping the lab", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    lab = Lab(root, ns.nodes, ns.cni, ns.prefix)
    rc = 0
    try:
        preflight.require()
        url = lab.start()
        ready = {
            "pid": os.getpid(),
            "api_url": url,
            "kubeconfig": str(lay.kubeconfig),
            "nodes": lab.names,
            "cni": ns.cni,
            "prefix": ns.prefix,
        }
        (root / control.READY_FILE).write_text(json.dumps(ready))
        stop.wait()
    except Exception as exc:
        log.exception("the lab failed")
        (root / control.FAILED_FILE).write_text(f"{type(exc).__name__}: {exc}".splitlines()[0] + "\n")
        rc = 1
    finally:
        (root / control.READY_FILE).unlink(missing_ok=True)
        lab.stop()
        with contextlib.suppress(OSError):
            lay.pid_file.unlink()
    return rc


if __name__ == "__main__":
    sys.exit(main())
