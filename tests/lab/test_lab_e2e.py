"""The embedded lab end to end, as a user meets it: `lab up`, pods through the real client,
traffic across nodes through the pod proxy, the real kubectl, and a broken CNI config on one node.

One lab (3 nodes, own root under /run and own name prefix) serves the whole module; teardown
asserts that nothing with that prefix is left on the machine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client as k

from clusters.kubeclient import api_client
from clusters.lab import control, layout
from clusters.lab.netns import list_netns
from clusters.lab.node.nodefs import node_path
from clusters.lab.node.underlay import root_links
from clusters.lab.provider import LabNodeChannel
from clusters.proc import CommandResult, run

pytestmark = pytest.mark.lab
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
NS = "e2e"
T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = fn()
        except Exception as exc:  # keep polling; report the last error on timeout
            last, value = exc, None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last})" if last else "")
    )


class Lab:
    def __init__(self, root: Path, prefix: str, status: control.LabStatus) -> None:
        self.root, self.prefix, self.status = root, prefix, status
        self.client = api_client(status.kubeconfig)
        self.core = k.CoreV1Api(self.client)
        self.channel = LabNodeChannel(root, prefix)
        self.status_layout = layout.LabLayout(root)
        self.home = root / "kubectl-home"
        self.home.mkdir(exist_ok=True)

    @property
    def workers(self) -> list[str]:
        return [n for n in self.status.nodes if "control-plane" not in n]

    def kubectl(self, *args: str, check: bool = True) -> CommandResult:
        env = {"PATH": os.environ["PATH"], "HOME": str(self.home), "KUBECONFIG": str(self.status.kubeconfig)}
        return run(["kubectl", *args], timeout=30, env=env, check=check)

    def node_sh(self, node: str, *argv: str, stdin: str | None = None) -> CommandResult:
        return self.channel.exec(node, argv, stdin, timeout=20)

    def pod(self, name: str, node: str | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "containers": [
                {
                    "name": "netexec",
                    "image": AGNHOST,
                    "args": ["netexec", "--http-port=8080", "--udp-port=8081"],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                }
            ]
        }
        if node:
            spec["nodeName"] = node
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "e2e"}},
            "spec": spec,
        }

    def create_pod(self, name: str, node: str | None = None) -> None:
        self.core.create_namespaced_pod(NS, self.pod(name, node))

    def running(self, name: str) -> k.V1Pod | None:
        """The pod once it is Running and Ready (its server listens), else None."""
        pod = self.core.read_namespaced_pod(name, NS)
        status = pod.status
        if not status or status.phase != "Running" or not status.pod_ip:
            return None
        ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
        return pod if ready else None

    def dial(self, src: str, ip: str, request: str = "hostname") -> dict[str, Any]:
        path = (
            f"/api/v1/namespaces/{NS}/pods/{src}:8080/proxy/dial"
            f"?host={ip}&port=8080&request={request}&protocol=http&tries=1"
        )
        return json.loads(self.kubectl("get", "--raw", path).stdout)

    def events(self, pod: str) -> list[k.CoreV1Event]:
        return list(self.core.list_namespaced_event(NS, field_selector=f"involvedObject.name={pod}").items)

    def node_ready(self, node: str) -> k.V1NodeCondition:
        conds = self.core.read_node(node).status.conditions or []
        return next(c for c in conds if c.type == "Ready")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    root = Path(tempfile.mkdtemp(prefix="knetcheck-e2e-", dir="/run"))
    prefix = f"kncl-t-{secrets.token_hex(3)}-"
    try:
        status = control.up(control.LabConfig(root=root, nodes=3, cni="lab", prefix=prefix))
        the_lab = Lab(root, prefix, status)
        the_lab.core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        yield the_lab
    finally:
        control.down(root, prefix=prefix)
        shutil.rmtree(root, ignore_errors=True)
    assert [n for n in list_netns() if n.startswith(prefix)] == []
    assert root_links(prefix) == []


def test_pods_spread_over_workers_with_ips_from_their_node_pod_cidr(lab: Lab) -> None:
    names = [f"spread-{i}" for i in range(6)]
    for name in names:
        lab.create_pod(name)
    pods = [wait_for(f"pod {n} Running", lambda n=n: lab.running(n)) for n in names]
    cidrs = {n.metadata.name: ipaddress.ip_network(n.spec.pod_cidr) for n in lab.core.list_node().items}
    used = {p.spec.node_name for p in pods}
    assert used == set(lab.workers), (
        f"pods should spread over both workers, not the tainted control plane: {used}"
    )
    for p in pods:
        cidr = cidrs[p.spec.node_name]
        assert ipaddress.ip_address(p.status.pod_ip) in cidr, (
            f"{p.metadata.name} on {p.spec.node_name} got {p.status.pod_ip}, outside {cidr}"
        )
        assert p.status.host_ip == str(layout.node_ip(lab.status.nodes.index(p.spec.node_name)))


def test_dial_through_the_pod_proxy_reaches_a_pod_on_another_node(lab: Lab) -> None:
    w1, w2 = lab.workers
    lab.create_pod("client", w1)
    lab.create_pod("server", w2)
    wait_for("client Running", lambda: lab.running("client"))
    server = wait_for("server Running", lambda: lab.running("server"))
    answer = lab.dial("client", server.status.pod_ip)
    assert answer.get("responses") == ["server"], answer
    client_ip = lab.running("client").status.pod_ip
    seen = lab.dial("client", server.status.pod_ip, request="clientip")["responses"][0]
    assert seen.rsplit(":", 1)[0] == client_ip, f"server saw {seen}, not the client pod IP {client_ip} (NAT?)"


def test_real_kubectl_lists_describes_and_reads_logs(lab: Lab) -> None:
    lab.create_pod("kubectl-view", lab.workers[0])
    pod = wait_for("pod Running", lambda: lab.running("kubectl-view"))
    listing = lab.kubectl("get", "pods", "-n", NS, "-o", "wide").stdout
    assert "kubectl-view" in listing and pod.status.pod_ip in listing and "Running" in listing
    described = lab.kubectl("describe", "pod", "-n", NS, "kubectl-view").stdout
    assert "Started container netexec" in described and f"Node:             {lab.workers[0]}" in described
    logs = wait_for("netexec log line", lambda: lab.kubectl("logs", "-n", NS, "kubectl-view").stdout)
    assert "Started HTTP server on port 8080" in logs
    assert "Ready" in lab.kubectl("get", "nodes").stdout


def test_malformed_conflist_makes_the_node_not_ready_and_new_pods_wait(lab: Lab) -> None:
    node = lab.workers[1]
    lab.create_pod("keeps-running", node)
    keeper = wait_for("pod Running", lambda: lab.running("keeps-running"))
    lab.create_pod("peer", lab.workers[0])
    wait_for("peer Running", lambda: lab.running("peer"))
    bad = "/etc/cni/net.d/00-bad.conflist"
    lab.node_sh(node, "tee", bad, stdin="{bad")  # create + write: containerd reloads
    try:
        ready = wait_for("node NotReady", lambda: (c := lab.node_ready(node)).status == "False" and c)
        assert ready.reason == "KubeletNotReady"
        assert ready.message == (
            "container runtime network not ready: NetworkReady=false "
            "reason:NetworkPluginNotReady message:Network plugin returns error: "
            "cni plugin not initialized"
        )
        lab.create_pod("waits", node)
        event = wait_for(
            "NetworkNotReady event", lambda: [e for e in lab.events("waits") if e.reason == "NetworkNotReady"]
        )
        assert event[0].message.startswith("network is not ready: container runtime network not ready")
        assert lab.running("waits") is None
        assert lab.dial("peer", keeper.status.pod_ip).get("responses") == ["keeps-running"], (
            "a running pod must keep its network while the node's CNI config is broken"
        )
    finally:
        lab.node_sh(node, "rm", "-f", bad)
    wait_for("node Ready again", lambda: lab.node_ready(node).status == "True")
    wait_for("waiting pod Running after recovery", lambda: lab.running("waits"), timeout=60)


def test_conflist_with_a_missing_plugin_fails_sandboxes_with_the_containerd_message(lab: Lab) -> None:
    node = lab.workers[0]
    broken = {"cniVersion": "1.0.0", "name": "broken", "plugins": [{"type": "no-such-plugin"}]}
    path = "/etc/cni/net.d/00-broken.conflist"
    lab.node_sh(node, "tee", path, stdin=json.dumps(broken))
    try:
        lab.create_pod("sandbox-fails", node)
        events = wait_for(
            "FailedCreatePodSandBox",
            lambda: [e for e in lab.events("sandbox-fails") if e.reason == "FailedCreatePodSandBox"],
        )
        msg = events[0].message
        assert msg.startswith(
            "Failed to create pod sandbox: rpc error: code = Unknown desc = "
            'failed to setup network for sandbox "'
        ), msg
        assert (
            'plugin type="no-such-plugin" failed (add): failed to find plugin "no-such-plugin" '
            "in path [/opt/cni/bin]" in msg
        )
    finally:
        lab.node_sh(node, "rm", "-f", path)
    wait_for("pod Running once the conflist is gone", lambda: lab.running("sandbox-fails"), timeout=60)


def test_moving_a_broken_conflist_into_the_dir_is_not_seen_until_a_write(lab: Lab) -> None:
    """containerd ignores Create events, and fsnotify reports a rename into the dir as Create.

    The rename must stay on one filesystem and mount: `mv` across mounts (the node's /tmp or
    /var/lib/cni to /etc/cni/net.d) is a copy, i.e. Create + Write, which does reload. So the
    move is done on the node's backing tree, where both paths share one mount.
    """
    node = lab.workers[0]
    staged = node_path(lab.status_layout, node, "/var/lib/cni/00-moved.conflist")
    moved = node_path(lab.status_layout, node, "/etc/cni/net.d/00-moved.conflist")
    staged.write_text("{bad")
    os.rename(staged, moved)
    try:
        lab.create_pod("after-move", node)
        wait_for("pod Running despite the moved-in broken file", lambda: lab.running("after-move"))
        assert lab.node_ready(node).status == "True"
        lab.node_sh(node, "tee", "-a", "/etc/cni/net.d/00-moved.conflist", stdin=" ")  # a Write: reload
        wait_for("node NotReady after the write", lambda: lab.node_ready(node).status == "False")
    finally:
        lab.node_sh(node, "rm", "-f", "/etc/cni/net.d/00-moved.conflist")
    wait_for("node Ready again", lambda: lab.node_ready(node).status == "True")
