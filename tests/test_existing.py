"""The existing-cluster provider against a fake API server over HTTP, and its debug-pod node channel."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakekube import FakeKube, serve

from clusters.capabilities import Capability
from clusters.errors import ClusterUnavailable, UsageProblem
from clusters.existing import debugpod
from clusters.existing.debugpod import DebugPodChannel
from clusters.existing.provider import NO_NODE_ACCESS, ExistingProvider
from clusters.handle import Cluster
from clusters.options import parse
from clusters.provider import ClusterRequest


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with serve() as fake:
        yield fake


def request_for(kubeconfig: Path, tmp_path: Path, **flags: object) -> ClusterRequest:
    values: dict[str, object] = {"cluster": "existing", "kubeconfig": str(kubeconfig),
                                 "state-dir": str(tmp_path / "state"), **flags}
    return parse(values, env={}, run_id="rtest0001").request


def acquire(kube: FakeKube, tmp_path: Path, **flags: object) -> Cluster:
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
    return ExistingProvider().acquire(request_for(kubeconfig, tmp_path, **flags))


def test_detects_the_cni_from_its_agent_daemonset(kube: FakeKube, tmp_path: Path) -> None:
    kube.add_daemonset("kube-system", "kindnet")
    cluster = acquire(kube, tmp_path)
    assert (cluster.provider, cluster.name, cluster.cni.name) == ("existing", "fake", "kindnet")
    assert cluster.capabilities == {Capability.NETWORK_POLICY, Capability.HOST_PORT}


def test_given_cni_skips_detection(kube: FakeKube, tmp_path: Path) -> None:
    cluster = acquire(kube, tmp_path, cni="calico")
    assert cluster.cni.name == "calico"
    assert not any("daemonsets" in path for _, path in kube.requests)


def test_no_known_agent_names_what_was_looked_for(kube: FakeKube, tmp_path: Path) -> None:
    with pytest.raises(UsageProblem, match=r"no known CNI agent DaemonSet .*kube-system/kindnet.*pass --cni"):
        acquire(kube, tmp_path)


def test_several_agents_are_ambiguous(kube: FakeKube, tmp_path: Path) -> None:
    kube.add_daemonset("kube-system", "kindnet")
    kube.add_daemonset("kube-system", "calico-node")
    expected = r"several CNIs: ds kube-system/calico-node \(calico\), ds kube-system/kindnet \(kindnet\);"
    with pytest.raises(UsageProblem, match=expected):
        acquire(kube, tmp_path)


def test_agent_of_a_lab_only_cni_is_named_as_unsupported(kube: FakeKube, tmp_path: Path) -> None:
    kube.add_daemonset("kube-system", "lab-cni")
    expected = r"runs ds kube-system/lab-cni \(lab\b.*\), which knetcheck does not"
    with pytest.raises(UsageProblem, match=expected):
        acquire(kube, tmp_path)


def test_unreadable_daemonsets_ask_for_cni(kube: FakeKube, tmp_path: Path) -> None:
    kube.forbidden.add("/apis/apps/v1/namespaces/kube-system/daemonsets/calico-node")
    expected = r"cannot read DaemonSet kube-system/calico-node .*403.*pass --cni"
    with pytest.raises(UsageProblem, match=expected):
        acquire(kube, tmp_path)


def test_api_that_does_not_answer_names_server_and_context(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fake = FakeKube(url=f"http://127.0.0.1:{port}")
    with pytest.raises(ClusterUnavailable) as err:
        acquire(fake, tmp_path, cni="kindnet")
    line = str(err.value)
    assert f"the API server http://127.0.0.1:{port} (context fake) does not answer" in line
    assert "\n" not in line


def test_kubeconfig_whose_context_points_nowhere_is_one_line(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "broken", "clusters": [], "users": [],
        "contexts": [{"name": "broken", "context": {"cluster": "gone", "user": "gone"}}],
    }))
    with pytest.raises(UsageProblem, match=r"kubeconfig .* \(context broken\) is unusable"):
        ExistingProvider().acquire(request_for(kubeconfig, tmp_path, cni="kindnet"))


def test_ingress_only_with_an_ingress_class(kube: FakeKube, tmp_path: Path) -> None:
    assert Capability.INGRESS not in acquire(kube, tmp_path, cni="kindnet").capabilities
    kube.ingressclasses.append({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                                "metadata": {"name": "nginx"}, "spec": {"controller": "nginx"}})
    assert Capability.INGRESS in acquire(kube, tmp_path, cni="kindnet").capabilities


def test_load_balancer_only_when_one_got_an_address(kube: FakeKube, tmp_path: Path) -> None:
    kube.add_service("default", "pending", "LoadBalancer")
    kube.add_service("default", "plain", "ClusterIP")
    assert Capability.LOAD_BALANCER not in acquire(kube, tmp_path, cni="kindnet").capabilities
    kube.add_service("web", "served", "LoadBalancer", lb_ip="203.0.113.7")
    assert Capability.LOAD_BALANCER in acquire(kube, tmp_path, cni="kindnet").capabilities


def test_unlistable_services_claim_no_load_balancer(kube: FakeKube, tmp_path: Path) -> None:
    kube.add_service("web", "served", "LoadBalancer", lb_ip="203.0.113.7")
    kube.forbidden.add("/api/v1/services")
    assert Capability.LOAD_BALANCER not in acquire(kube, tmp_path, cni="kindnet").capabilities


def test_no_node_access_without_allow_destructive(kube: FakeKube, tmp_path: Path) -> None:
    cluster = acquire(kube, tmp_path, cni="kindnet")
    assert not cluster.has(Capability.NODE_ACCESS)
    with pytest.raises(UsageProblem, match=NO_NODE_ACCESS):
        cluster.node_exec("node-1", ["true"])


def test_allow_destructive_gives_node_access_through_debug_pods(kube: FakeKube, tmp_path: Path) -> None:
    cluster = acquire(kube, tmp_path, cni="kindnet", **{"allow-destructive": True})
    assert cluster.has(Capability.NODE_ACCESS)
    assert isinstance(cluster.node_channel, DebugPodChannel)
    assert cluster.node_channel.namespace == "kc-rtest0001-nodes"


# ---- the debug-pod channel, against a fake kubectl that records its calls


@pytest.fixture
def fake_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "kubectl.log"
    script = bindir / "kubectl"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "data = sys.stdin.read() if {'-i', '-f'} & set(sys.argv) else ''\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps({'argv': sys.argv[1:], 'stdin': data}) + '\\n')\n"
        "if 'wait' in sys.argv and 'never-ready' in ' '.join(sys.argv):\n"
        "    sys.exit('error: timed out waiting for the condition')\n"
        "print('node-output')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def calls(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_debug_pod_manifest_is_privileged_pinned_and_labelled() -> None:
    pod = debugpod.pod_manifest("kind-worker", "rtest0001")
    spec = pod["spec"]
    assert spec["nodeName"] == "kind-worker" and spec["hostPID"] and spec["hostNetwork"]
    assert spec["containers"][0]["securityContext"] == {"privileged": True}
    image = spec["containers"][0]["image"]
    assert image == debugpod.DEBUG_IMAGE and ":" in image.rsplit("/", 1)[1] and not image.endswith(":latest")
    assert pod["metadata"]["labels"]["knetcheck.io/run-id"] == "rtest0001"
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "knetcheck"
    ns = debugpod.namespace_manifest("rtest0001")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_long_node_names_give_valid_pod_names() -> None:
    name = debugpod.pod_name("ip-10-0-12-34.eu-west-1.compute.internal.example-long-suffix")
    assert len(name) <= 63 and name.startswith("kc-node-")
    assert name != debugpod.pod_name("ip-10-0-12-34.eu-west-1.compute.internal.example-long-suffiy")


def test_debug_channel_creates_pod_once_execs_with_nsenter_and_cleans_up(
    fake_kubectl: Path, tmp_path: Path
) -> None:
    channel = DebugPodChannel(tmp_path / "kc", "prod", "rtest0001")
    first = channel.exec("node-a", ["iptables-save", "-t", "nat"], None, 10)
    channel.exec("node-a", ["cat", "/etc/cni/net.d/10-kindnet.conflist"], None, 10)
    channel.exec("node-a", ["tee", "/tmp/x"], "data", 10)
    channel.close()
    channel.close()
    assert first.ok and first.stdout.strip() == "node-output"
    argvs = [c["argv"] for c in calls(fake_kubectl)]
    common = [f"--kubeconfig={tmp_path / 'kc'}", "--context=prod"]
    assert all(a[:2] == common for a in argvs)
    verbs = [a[2] if a[2] != "-n" else a[4] for a in argvs]
    assert verbs == ["apply", "apply", "wait", "exec", "exec", "exec", "delete"]
    applied = [json.loads(str(c["stdin"])) for c in calls(fake_kubectl)[:2]]
    assert [m["kind"] for m in applied] == ["Namespace", "Pod"]
    assert argvs[3][2:] == ["-n", "kc-rtest0001-nodes", "exec", "kc-node-node-a", "--",
                            "nsenter", "-t", "1", "-m", "-u", "-n", "-i", "--", "iptables-save", "-t", "nat"]
    assert "-i" in argvs[5][5:7] and calls(fake_kubectl)[5]["stdin"] == "data"
    assert argvs[6][2:5] == ["delete", "namespace", "kc-rtest0001-nodes"]


def test_debug_pod_that_never_gets_ready_is_one_line(fake_kubectl: Path, tmp_path: Path) -> None:
    channel = DebugPodChannel(tmp_path / "kc", None, "rtest0001")
    with pytest.raises(ClusterUnavailable) as err:
        channel.exec("never-ready", ["true"], None, 10)
    expected = "debug pod kc-rtest0001-nodes/kc-node-never-ready on node never-ready did not become Ready"
    assert str(err.value).startswith(expected)
    assert not any("exec" in c["argv"] for c in calls(fake_kubectl))  # type: ignore[operator]


def test_release_closes_the_debug_channel(fake_kubectl: Path, kube: FakeKube, tmp_path: Path) -> None:
    cluster = acquire(kube, tmp_path, cni="kindnet", **{"allow-destructive": True})
    cluster.node_exec("node-a", ["true"])
    ExistingProvider().release(cluster, request_for(tmp_path / "kubeconfig", tmp_path, cni="kindnet"))
    assert [c["argv"][2:5] for c in calls(fake_kubectl)][-1] == ["delete", "namespace", "kc-rtest0001-nodes"]
