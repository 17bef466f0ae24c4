"""The lab kubelet with the real node runtime: pods in network namespaces wired by real CNI plugins.

One module fixture builds an underlay with one worker node under a unique ``kncl-t-<hex>-``
prefix, writes the node's CNI config with the lab CNI agent, and runs the API server (with the
kubelet's PodIO), the node runtime and the kubelet. Teardown removes everything and asserts
that nothing of ours is left.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from clusters.lab import layout
from clusters.lab.api import RunningApiServer, start_api_server
from clusters.lab.controllers.client import Kube
from clusters.lab.kubelet.backoff import BackoffPolicy
from clusters.lab.kubelet.kubelet import Kubelet
from clusters.lab.kubelet.nodecontext import KubeletConfig
from clusters.lab.kubelet.podio import LabPodIO
from clusters.lab.netns import list_netns
from clusters.lab.node.nodefs import create_node_fs, node_path
from clusters.lab.node.runtime import LabNodeRuntime
from clusters.lab.node.shell import shell_argv
from clusters.lab.node.underlay import Underlay, processes_in_netns, sweep
from clusters.proc import run

pytestmark = pytest.mark.lab

NODE = "knetcheck-lab-worker"
INDEX = 1
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.55"
JSON = dict[str, Any]


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not Path("/usr/lib/cni/bridge").exists():
        return "needs Debian's containernetworking-plugins in /usr/lib/cni"
    return None


def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@dataclass
class Lab:
    lab: layout.LabLayout
    prefix: str
    api: RunningApiServer
    kube: Kube
    runtime: LabNodeRuntime
    kubelet: Kubelet

    def create_pod(self, name: str, containers: list[JSON]) -> JSON:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": NODE, "containers": containers, "terminationGracePeriodSeconds": 5},
        }
        return self.kube.create("/api/v1/namespaces/default/pods", body)

    def get(self, name: str) -> JSON | None:
        try:
            return self.kube.get(f"/api/v1/namespaces/default/pods/{name}")
        except Exception as err:
            if getattr(err, "status", 0) == 404:
                return None
            raise

    def status(self, name: str) -> JSON:
        return (self.get(name) or {}).get("status") or {}

    def ready(self, name: str) -> bool:
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in self.status(name).get("conditions") or []
        )

    def event(self, name: str, reason: str) -> JSON | None:
        self.kubelet.recorder.flush(5)
        items = self.kube.get("/api/v1/namespaces/default/events").get("items") or []
        return next(
            (e for e in items if e["involvedObject"].get("name") == name and e["reason"] == reason), None
        )

    def node_ready(self) -> JSON:
        node = self.kube.get(f"/api/v1/nodes/{NODE}")
        return next(c for c in node["status"]["conditions"] if c["type"] == "Ready")

    def delete(self, name: str) -> None:
        self.kube.delete(f"/api/v1/namespaces/default/pods/{name}", {"gracePeriodSeconds": 5})
        eventually(lambda: self.get(name) is None, f"pod {name} removed")


@pytest.fixture(scope="module")
def kl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    prefix = f"kncl-t-{secrets.token_hex(3)}-"
    root = tmp_path_factory.mktemp("kubeletlab")
    lab = layout.LabLayout(root)
    underlay = Underlay(prefix)
    node_netns = layout.node_netns(NODE, prefix)
    runtime: LabNodeRuntime | None = None
    kubelet: Kubelet | None = None
    api: RunningApiServer | None = None
    client: kubernetes.client.ApiClient | None = None
    try:
        underlay.create()
        net = underlay.add_node(NODE, INDEX)
        create_node_fs(lab, NODE)
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "NODE_NAME": NODE,
            "POD_CIDR": str(layout.node_pod_cidr(INDEX)),
            "PEERS": f"{net.ip}={layout.node_pod_cidr(INDEX)}",
            "MODE": "host-gw",
        }
        argv = [sys.executable, "-m", "clusters.lab.programs.cniagent", "--once"]
        run(shell_argv(root, NODE, argv, prefix), timeout=60, env=env)
        runtime = LabNodeRuntime(lab, NODE, prefix=prefix)
        runtime.start()
        api = start_api_server(port=0, pod_io=LabPodIO(lab, node_netns))
        client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=api.url))
        config = KubeletConfig(
            crash_backoff=BackoffPolicy(base=0.5, cap=2.0),
            retry_backoff=BackoffPolicy(base=0.3, cap=1.0),
            sync_period=0.1,
            node_status_period=0.5,
        )
        kubelet = Kubelet(NODE, client, runtime, lab, index=INDEX, config=config)
        kubelet.start()
        yield Lab(lab, prefix, api, Kube(client), runtime, kubelet)
    finally:
        if kubelet is not None:
            kubelet.stop()
        if runtime is not None:
            runtime.close()
        leftovers = [p for ns in list_netns() if ns.startswith(prefix) for p in processes_in_netns(ns)]
        if client is not None:
            client.close()
        if api is not None:
            api.stop()
        underlay.destroy()
        sweep(prefix)
        assert [n for n in list_netns() if n.startswith(prefix)] == []
        assert leftovers == [], f"processes left in lab namespaces after kubelet.stop(): {leftovers}"


def test_pod_gets_a_cni_address_passes_its_probe_and_answers_through_the_proxy(kl: Lab) -> None:
    kl.create_pod(
        "web",
        [
            {
                "name": "netexec",
                "image": AGNHOST,
                "args": ["netexec", "--http-port=8080", "--udp-port=-1"],
                "ports": [{"containerPort": 8080, "name": "http"}],
                "readinessProbe": {"httpGet": {"path": "/hostname", "port": "http"}, "periodSeconds": 1},
                "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            }
        ],
    )
    eventually(lambda: kl.ready("web"), "web Ready", timeout=60)
    st = kl.status("web")
    assert ipaddress.IPv4Address(st["podIP"]) in layout.node_pod_cidr(INDEX)
    assert st["hostIP"] == str(layout.node_ip(INDEX))
    assert layout.pod_netns(kl.get("web")["metadata"]["uid"], kl.prefix) in list_netns()
    url = f"{kl.api.url}/api/v1/namespaces/default/pods/web:8080/proxy/hostname"
    with urllib.request.urlopen(url, timeout=20) as resp:  # the API server on loopback
        assert resp.read().decode() == "web"
    kl.delete("web")
    eventually(lambda: not [n for n in list_netns() if n.startswith(f"{kl.prefix}p-")], "pod netns removed")


def test_broken_cni_config_makes_the_node_not_ready_and_new_pods_wait(kl: Lab) -> None:
    conf_dir = node_path(kl.lab, NODE, "/etc/cni/net.d")
    kl.create_pod("before", [{"name": "c", "image": AGNHOST}])
    eventually(lambda: kl.status("before").get("phase") == "Running", "pod running before the fault")
    bad = conf_dir / "00-bad.conflist"
    bad.write_text("{bad")
    try:
        cond = eventually(lambda: (c := kl.node_ready())["status"] == "False" and c, "node NotReady")
        assert cond["message"] == (
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
            "message:Network plugin returns error: cni plugin not initialized"
        )
        kl.create_pod("during", [{"name": "c", "image": AGNHOST}])
        event = eventually(lambda: kl.event("during", "NetworkNotReady"), "NetworkNotReady event")
        assert event["message"].startswith("network is not ready: container runtime network not ready")
        assert kl.status("during")["phase"] == "Pending"
        assert kl.status("before")["phase"] == "Running"  # running pods keep their network
    finally:
        bad.unlink()
    eventually(lambda: kl.node_ready()["status"] == "True", "node Ready again")
    eventually(lambda: kl.status("during").get("phase") == "Running", "the waiting pod starts", timeout=60)
    kl.delete("during")
    kl.delete("before")


def test_logs_of_the_current_and_previous_instance_through_the_api(kl: Lab) -> None:
    kl.create_pod(
        "crash", [{"name": "c", "image": AGNHOST, "args": ["connect", "127.0.0.1:1", "--timeout=1s"]}]
    )

    def restarts() -> int:
        statuses = kl.status("crash").get("containerStatuses") or [{}]
        return int(statuses[0].get("restartCount", 0))

    eventually(lambda: restarts() >= 1, "a restart", timeout=60)
    url = f"{kl.api.url}/api/v1/namespaces/default/pods/crash/log?previous=true"
    with urllib.request.urlopen(url, timeout=20) as resp:  # the API server on loopback
        assert resp.read().decode().startswith("REFUSED")
    kl.delete("crash")
    logs = kl.lab.node_fs(NODE)
    eventually(lambda: not list(logs.glob("var/log/pods/default_crash_*")), "the pod's logs removed")
