"""Contract tests for the kind provider: the exact commands it runs, against fake tools on PATH.

kind cannot run here (no Docker engine), so the provider is held to the command sequence a
real run needs (reference §1, §2): version check, create with the rendered config, pinned
installs, our own readiness polling, ``docker exec`` for node access, delete at release.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusters.capabilities import Capability
from clusters.errors import ClusterUnavailable, UsageProblem
from clusters.kind.driver import Timeouts
from clusters.kind.provider import KindProvider
from clusters.kind.versions import DEFAULT_NODE_IMAGE
from clusters.provider import ClusterKind, ClusterRequest
from clusters.recipes import load_recipe

FAKES = Path(__file__).parent / "fakes"
CNIS = ["kindnet", "calico", "flannel", "cilium", "weave"]
FAST = Timeouts(quick=30, create=30, delete=30, load=30, install=30, ready=20, poll_interval=0.05)

INSTALL: dict[str, list[list[str]]] = {
    "kindnet": [],
    "calico": [
        [
            "create",
            "-f",
            "https://raw.githubusercontent.com/projectcalico/calico/v3.32.1/manifests/calico.yaml",
        ]
    ],
    "flannel": [
        ["apply", "-f", "https://github.com/flannel-io/flannel/releases/download/v0.28.9/kube-flannel.yml"]
    ],
    "cilium": [],
    "weave": [
        [
            "apply",
            "-f",
            "https://github.com/rajch/weave/releases/download/v2.9.0/weave-daemonset-k8s-1.11.yaml",
        ]
    ],
}
ROLLOUTS = {
    "kindnet": [("kube-system", "daemonset/kindnet")],
    "calico": [
        ("kube-system", "daemonset/calico-node"),
        ("kube-system", "deployment/calico-kube-controllers"),
    ],
    "flannel": [("kube-flannel", "daemonset/kube-flannel-ds")],
    "cilium": [
        ("kube-system", "daemonset/cilium"),
        ("kube-system", "daemonset/cilium-envoy"),
        ("kube-system", "deployment/cilium-operator"),
    ],
    "weave": [("kube-system", "daemonset/weave-net")],
}


@dataclass(frozen=True)
class Call:
    tool: str
    argv: list[str]
    stdin: str | None

    def kubectl_args(self) -> list[str]:
        """kubectl argv without the --kubeconfig/--context prefix and the --timeout suffix."""
        return [a for a in self.argv if not a.startswith(("--kubeconfig=", "--context=", "--timeout="))]


@dataclass(frozen=True)
class Fakes:
    calls_file: Path
    state_file: Path
    state_dir: Path
    cni_bin: Path

    def calls(self) -> list[Call]:
        if not self.calls_file.exists():
            return []
        lines = self.calls_file.read_text().splitlines()
        return [Call(**json.loads(line)) for line in lines]

    def reset_calls(self) -> None:
        self.calls_file.unlink(missing_ok=True)

    def clusters(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        return state.get("clusters", {})

    def request(self, cni: str, **kw: Any) -> ClusterRequest:
        base = ClusterRequest(
            kind=ClusterKind.KIND, cni=load_recipe(cni), run_id="rtest", state_dir=self.state_dir
        )
        return replace(base, **kw)


def _path(*dirs: Path) -> str:
    # The fakes first; then the running interpreter's dir so `env python3` resolves; then the
    # system dirs (where a real kubectl may live: the fakes shadow it).
    return os.pathsep.join([*(str(d) for d in dirs), str(Path(sys.executable).parent), "/usr/bin", "/bin"])


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fakes:
    cni_bin = tmp_path / "cni-bin"
    cni_bin.mkdir()
    for plugin in ("bridge", "host-local", "loopback", "ptp", "portmap"):
        (cni_bin / plugin).write_text("#!/bin/sh\n")
        (cni_bin / plugin).chmod(0o755)
    f = Fakes(tmp_path / "calls.jsonl", tmp_path / "state.json", tmp_path / "state", cni_bin)
    monkeypatch.setenv("PATH", _path(FAKES))
    monkeypatch.setenv("FAKE_CALLS", str(f.calls_file))
    monkeypatch.setenv("FAKE_STATE", str(f.state_file))
    monkeypatch.setenv("KNETCHECK_CNI_BIN_DIR", str(cni_bin))
    for knob in ("FAKE_KIND_VERSION", "FAKE_DOCKER_DOWN", "FAKE_DOCKER_IMAGES", "FAKE_FAIL"):
        monkeypatch.delenv(knob, raising=False)
    return f


@pytest.fixture
def provider() -> Iterator[KindProvider]:
    p = KindProvider(timeouts=FAST, cloud_settle=0.3)
    yield p
    p.close()  # stops a cloud-provider-kind child a failed test left behind


def _index(calls: list[Call], tool: str, *prefix: str) -> int:
    for i, call in enumerate(calls):
        args = call.kubectl_args() if tool == "kubectl" else call.argv
        if call.tool == tool and args[: len(prefix)] == list(prefix):
            return i
    raise AssertionError(f"no {tool} {' '.join(prefix)} call in {[(c.tool, c.argv) for c in calls]}")


@pytest.mark.parametrize("cni", CNIS)
def test_full_lifecycle_command_sequence(cni: str, fakes: Fakes, provider: KindProvider) -> None:
    request = fakes.request(cni)
    name = f"knetcheck-{cni}"
    config_path = fakes.state_dir / f"kind-{name}.yaml"
    kubeconfig = fakes.state_dir / f"kubeconfig-{name}"

    cluster = provider.acquire(request)
    calls = fakes.calls()

    assert (cluster.name, cluster.provider, cluster.context) == (name, "kind", f"kind-{name}")
    assert cluster.kubeconfig == kubeconfig and kubeconfig.exists()
    assert (calls[0].tool, calls[0].argv) == ("kind", ["version"])
    assert (calls[1].tool, calls[1].argv[:1]) == ("docker", ["info"])
    create = _index(calls, "kind", "create", "cluster")
    assert calls[create].argv == [
        "create", "cluster", "--name", name, "--config", str(config_path),
        "--kubeconfig", str(kubeconfig), "--image", DEFAULT_NODE_IMAGE,
    ]  # fmt: skip
    assert not any("--wait" in a for c in calls for a in c.argv)

    # The config kind received is the rendered recipe.
    config = yaml.safe_load(config_path.read_text())
    assert fakes.clusters()[name]["config"] == config_path.read_text()
    recipe = load_recipe(cni)
    assert config["networking"] == {
        "disableDefaultCNI": cni != "kindnet",
        "podSubnet": recipe.kind.pod_subnet,
        "serviceSubnet": "10.96.0.0/16",
        "kubeProxyMode": "iptables",
    }
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker"]
    expected_mounts = [{"hostPath": str(fakes.cni_bin), "containerPath": "/opt/cni/bin"}]
    assert all((n.get("extraMounts") == expected_mounts) is (cni == "flannel") for n in config["nodes"])

    # Installs, pinned, against our kubeconfig and context, after create.
    kubectl_calls = [c for c in calls if c.tool == "kubectl"]
    assert all(c.argv[:2] == [f"--kubeconfig={kubeconfig}", f"--context=kind-{name}"] for c in kubectl_calls)
    installs = [c.kubectl_args() for c in kubectl_calls if c.kubectl_args()[:1] in (["create"], ["apply"])]
    installs = [a for a in installs if a != ["apply", "-f", "-"]]
    assert installs == INSTALL[cni]
    helm = [c.argv for c in calls if c.tool == "helm"]
    if cni == "cilium":
        assert helm == [[
            "install", "cilium", "cilium", "--repo", "https://helm.cilium.io/", "--version", "1.20.0",
            "--namespace", "kube-system", "--kubeconfig", str(kubeconfig), "--kube-context", f"kind-{name}",
            "--set", "image.pullPolicy=IfNotPresent", "--set", "ipam.mode=kubernetes",
            "--set", "operator.replicas=1",
        ]]  # fmt: skip
        install_at = next(i for i, c in enumerate(calls) if c.tool == "helm")
    else:
        assert helm == []
        install_at = _index(calls, "kubectl", *INSTALL[cni][0]) if INSTALL[cni] else create
    assert install_at >= create

    # Readiness: nodes, each recipe object, CoreDNS; every wait carries a timeout.
    nodes_at = _index(calls, "kubectl", "wait", "--for=condition=Ready", "nodes", "--all")
    rollout_at = [_index(calls, "kubectl", "-n", ns, "rollout", "status", obj) for ns, obj in ROLLOUTS[cni]]
    dns_at = _index(
        calls, "kubectl", "-n", "kube-system", "wait", "--for=condition=Available", "deployment/coredns"
    )
    assert (
        install_at < nodes_at < rollout_at[0] and rollout_at == sorted(rollout_at) and rollout_at[-1] < dns_at
    )
    for i in (nodes_at, *rollout_at, dns_at):
        assert any(a.startswith("--timeout=") and a.endswith("s") for a in calls[i].argv)

    # The config hash is recorded last, as a ConfigMap that only a finished setup has.
    record_at = _index(calls, "kubectl", "apply", "-f", "-")
    assert record_at > dns_at
    cm = json.loads(calls[record_at].stdin or "{}")
    assert cm["metadata"]["name"] == "knetcheck-kind-config" and cm["data"]["cni"] == cni
    assert len(cm["data"]["config-sha256"]) == 64

    # Capabilities: the recipe's plus node access; no cloud-provider-kind on PATH.
    assert cluster.capabilities == recipe.capabilities | {Capability.NODE_ACCESS}

    # Node channel: docker exec, -i only with stdin.
    fakes.reset_calls()
    out = cluster.node_exec(f"{name}-worker", ["ls", "/etc/cni/net.d"])
    assert out.ok and json.loads(out.stdout)["argv"] == ["ls", "/etc/cni/net.d"]
    out = cluster.node_exec(f"{name}-control-plane", ["sh", "-c", "cat > /tmp/x"], stdin="hello")
    assert json.loads(out.stdout)["stdin"] == "hello"
    assert [(c.tool, c.argv) for c in fakes.calls()] == [
        ("docker", ["exec", f"{name}-worker", "ls", "/etc/cni/net.d"]),
        ("docker", ["exec", "-i", f"{name}-control-plane", "sh", "-c", "cat > /tmp/x"]),
    ]

    # Release deletes the cluster, with our kubeconfig so ~/.kube/config is untouched.
    fakes.reset_calls()
    provider.release(cluster, request)
    assert [(c.tool, c.argv) for c in fakes.calls()] == [
        ("kind", ["delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig)])
    ]
    assert name not in fakes.clusters()


def test_keep_cluster_skips_delete_and_a_same_config_is_reused(fakes: Fakes, provider: KindProvider) -> None:
    request = fakes.request("calico", keep_cluster=True)
    cluster = provider.acquire(request)
    provider.release(cluster, request)
    assert not any(c.tool == "kind" and c.argv[:1] == ["delete"] for c in fakes.calls())
    assert "knetcheck-calico" in fakes.clusters()

    fakes.reset_calls()
    again = provider.acquire(fakes.request("calico"))
    calls = fakes.calls()
    assert again.name == "knetcheck-calico"
    assert not any(c.tool == "kind" and c.argv[:1] == ["create"] for c in calls)
    _index(calls, "kind", "get", "kubeconfig", "--name", "knetcheck-calico")
    _index(calls, "kubectl", "-n", "kube-system", "get", "configmap", "knetcheck-kind-config")
    # No reinstall on reuse (kubectl create would fail on existing objects), but readiness is polled.
    assert not any(c.kubectl_args()[:1] == ["create"] for c in calls if c.tool == "kubectl")
    _index(calls, "kubectl", "-n", "kube-system", "rollout", "status", "daemonset/calico-node")
    provider.release(again, fakes.request("calico"))
    assert "knetcheck-calico" not in fakes.clusters()


def test_same_name_with_a_different_config_hash_is_refused(fakes: Fakes, provider: KindProvider) -> None:
    provider.acquire(fakes.request("calico", keep_cluster=True))
    fakes.reset_calls()
    with pytest.raises(UsageProblem) as err:
        provider.acquire(fakes.request("calico", nodes=2))
    msg = str(err.value)
    assert "\n" not in msg
    assert "different config" in msg and "kind delete cluster --name knetcheck-calico" in msg
    assert not any(c.tool == "kind" and c.argv[:1] in (["create"], ["delete"]) for c in fakes.calls())
    assert "knetcheck-calico" in fakes.clusters()


def test_same_name_not_set_up_by_us_is_refused(fakes: Fakes, provider: KindProvider) -> None:
    fakes.state_file.write_text(json.dumps({"clusters": {"knetcheck-weave": {"configmaps": {}}}}))
    with pytest.raises(UsageProblem, match=r"no kube-system/knetcheck-kind-config.*kind delete cluster"):
        provider.acquire(fakes.request("weave"))


def test_flannel_without_bridge_is_one_line(fakes: Fakes, provider: KindProvider) -> None:
    (fakes.cni_bin / "bridge").unlink()
    with pytest.raises(UsageProblem) as err:
        provider.acquire(fakes.request("flannel"))
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{fakes.cni_bin} over the nodes' /opt/cni/bin but it lacks bridge;" in msg
    assert "KNETCHECK_CNI_BIN_DIR" in msg
    assert not any(c.argv[:1] == ["create"] for c in fakes.calls())


def test_other_cnis_do_not_need_the_plugin_dir(
    fakes: Fakes, provider: KindProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KNETCHECK_CNI_BIN_DIR", str(fakes.state_dir / "absent"))
    cluster = provider.acquire(fakes.request("calico"))
    provider.release(cluster, fakes.request("calico"))


def test_wrong_kind_version_is_one_line(
    fakes: Fakes, provider: KindProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_KIND_VERSION", "v0.31.0")
    with pytest.raises(UsageProblem) as err:
        provider.acquire(fakes.request("kindnet"))
    msg = str(err.value)
    assert "\n" not in msg and "is kind v0.31.0, knetcheck needs v0.32.0" in msg
    assert "https://github.com/kubernetes-sigs/kind/releases/tag/v0.32.0" in msg
    assert [c.argv for c in fakes.calls()] == [["version"]]


def test_missing_kind_is_one_line(tmp_path: Path, fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(UsageProblem, match=r"^kind not found on PATH; install kind v0\.32\.0 from https://"):
        KindProvider(timeouts=FAST).acquire(fakes.request("kindnet"))


def test_no_docker_engine(fakes: Fakes, provider: KindProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_DOCKER_DOWN", "1")
    with pytest.raises(ClusterUnavailable, match=r"no Docker engine answers .*Cannot connect.*--cluster lab"):
        provider.acquire(fakes.request("kindnet"))


def test_preloads_only_local_images(
    fakes: Fakes, provider: KindProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_IMAGES", "quay.io/calico/node:v3.32.1")
    cluster = provider.acquire(fakes.request("calico"))
    calls = fakes.calls()
    inspected = [c.argv[-1] for c in calls if c.tool == "docker" and c.argv[:2] == ["image", "inspect"]]
    assert inspected == list(load_recipe("calico").images)
    loads = [c.argv for c in calls if c.tool == "kind" and c.argv[:1] == ["load"]]
    assert loads == [["load", "docker-image", "quay.io/calico/node:v3.32.1", "--name", "knetcheck-calico"]]
    assert _index(calls, "kind", "load") < _index(calls, "kubectl", "create", "-f")
    provider.release(cluster, fakes.request("calico"))


def test_failed_readiness_deletes_the_new_cluster(
    fakes: Fakes, provider: KindProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "rollout")
    with pytest.raises(ClusterUnavailable) as err:
        provider.acquire(fakes.request("flannel"))
    msg = str(err.value)
    assert "DaemonSet kube-flannel/kube-flannel-ds not ready" in msg and "\n" not in msg
    assert "rollout status daemonset/kube-flannel-ds" in msg  # a command to paste
    assert fakes.calls()[-1].argv[:3] == ["delete", "cluster", "--name"]
    assert fakes.clusters() == {}


def test_failed_install_keeps_the_cluster_when_asked(
    fakes: Fakes, provider: KindProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "helm install")
    with pytest.raises(Exception, match="helm install cilium"):
        provider.acquire(fakes.request("cilium", keep_cluster=True))
    assert "knetcheck-cilium" in fakes.clusters()
    assert not any(c.argv[:1] == ["delete"] for c in fakes.calls())


def test_node_channel_refuses_other_containers(fakes: Fakes, provider: KindProvider) -> None:
    cluster = provider.acquire(fakes.request("kindnet"))
    fakes.reset_calls()
    with pytest.raises(UsageProblem, match="'registry' is not a node of kind cluster 'knetcheck-kindnet'"):
        cluster.node_exec("registry", ["id"])
    with pytest.raises(UsageProblem):
        cluster.node_exec("knetcheck-calico-worker", ["id"])
    assert fakes.calls() == []
    provider.release(cluster, fakes.request("kindnet"))


def test_cloud_provider_kind_is_started_and_stopped(
    fakes: Fakes, provider: KindProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", _path(FAKES, FAKES / "optional"))
    request = fakes.request("kindnet")
    cluster = provider.acquire(request)
    try:
        assert {Capability.LOAD_BALANCER, Capability.INGRESS} <= cluster.capabilities
        deadline = time.monotonic() + 10
        while not (started := [c for c in fakes.calls() if c.tool == "cloud-provider-kind"]):
            assert time.monotonic() < deadline, "fake cloud-provider-kind never ran"
            time.sleep(0.05)
        assert len(started) == 1
        pid = int(started[0].argv[-1].removeprefix("pid="))
        os.kill(pid, 0)  # running
    finally:
        provider.release(cluster, request)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert (fakes.state_dir / "cloud-provider-kind.log").exists()


def test_failed_create_is_cleaned_up(
    fakes: Fakes, provider: KindProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "create cluster")
    with pytest.raises(Exception, match=r"command 'kind create cluster --name knetcheck-weave.*exited 1"):
        provider.acquire(fakes.request("weave"))
    last = fakes.calls()[-1]
    assert (last.tool, last.argv[:4]) == ("kind", ["delete", "cluster", "--name", "knetcheck-weave"])
