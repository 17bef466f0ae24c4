"""Probe topologies: who goes where, manifests the real API schema accepts, readiness read right."""

from __future__ import annotations

from typing import Any

import pytest

from clusters.labels import MANAGED_BY_LABEL, RUN_ID_LABEL
from clusters.validate import validate_manifest
from suites import topology as topo
from suites.probe import PodRef, ProbeJob, ProbeKind
from suites.verdict import ProbeResult, Verdict

CP_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def node(
    name: str, ip: str, taints: list[dict[str, str]] | None = None, cordoned: bool = False
) -> dict[str, Any]:
    spec: dict[str, Any] = {"taints": taints} if taints else {}
    if cordoned:
        spec["unschedulable"] = True
    return {
        "metadata": {"name": name},
        "spec": spec,
        "status": {
            "addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]
        },
    }


KIND_NODES = [
    node("kind-worker2", "172.18.0.4"),
    node("kind-control-plane", "172.18.0.2", [CP_TAINT]),
    node("kind-worker", "172.18.0.3"),
]


def kind_plan() -> topo.Plan:
    return topo.plan("kc-r1-pod-network-abcd", "r1", topo.node_infos(KIND_NODES))


def test_node_infos_sort_by_name_and_shorten_labels() -> None:
    infos = topo.node_infos(KIND_NODES)
    assert [(n.name, n.label, n.ip) for n in infos] == [
        ("kind-control-plane", "control-plane", "172.18.0.2"),
        ("kind-worker", "worker", "172.18.0.3"),
        ("kind-worker2", "worker2", "172.18.0.4"),
    ]


@pytest.mark.parametrize(
    ("names", "short"),
    [
        (["kind-worker", "kind-worker2"], ["worker", "worker2"]),
        (["node-a", "node-b"], ["a", "b"]),
        (["solo"], ["solo"]),
        (["a", "b"], ["a", "b"]),
        (["x-1", "x-1x"], ["1", "1x"]),
        (["ip-10-0-1-5.ec2", "ip-10-0-1-6.ec2"], ["5.ec2", "6.ec2"]),
    ],
)
def test_short_names_drop_the_shared_dash_prefix(names: list[str], short: list[str]) -> None:
    assert topo.short_names(names) == short


def test_plan_puts_two_pods_on_each_schedulable_node_and_a_host_pod_on_every_node() -> None:
    plan = kind_plan()
    pods = [(p.name, p.node.name, p.host_network, p.key) for p in plan.pods]
    assert pods == [
        ("host-control-plane", "kind-control-plane", True, "control-plane/node"),
        ("pod-worker-a", "kind-worker", False, "worker/a"),
        ("pod-worker-b", "kind-worker", False, "worker/b"),
        ("host-worker", "kind-worker", True, "worker/node"),
        ("pod-worker2-a", "kind-worker2", False, "worker2/a"),
        ("pod-worker2-b", "kind-worker2", False, "worker2/b"),
        ("host-worker2", "kind-worker2", True, "worker2/node"),
    ]
    assert {(p.http_port, p.udp_port) for p in plan.pods if p.host_network} == {(18080, 18081)}
    assert {(p.http_port, p.udp_port) for p in plan.pods if not p.host_network} == {(8080, 8081)}


def test_plan_skips_cordoned_and_foreign_tainted_nodes() -> None:
    nodes = topo.node_infos([
        node("n-a", "10.0.0.1"),
        node("n-b", "10.0.0.2", cordoned=True),
        node("n-c", "10.0.0.3", [{"key": "gpu", "effect": "NoSchedule"}]),
        node("n-d", "10.0.0.4", [{"key": "soft", "effect": "PreferNoSchedule"}]),
    ])
    plan = topo.plan("ns", "r1", nodes, pods_per_node=1)
    assert [p.name for p in plan.pods] == ["pod-a-a", "host-a", "pod-d-a", "host-d"]


def test_every_manifest_is_valid_for_the_real_schema() -> None:
    for manifest in kind_plan().manifests():
        validate_manifest(manifest)


def test_manifests_pin_by_node_affinity_label_the_run_and_tolerate_only_for_host_pods() -> None:
    manifests = {m["metadata"]["name"]: m for m in kind_plan().manifests()}
    pod = manifests["pod-worker-a"]
    host = manifests["host-control-plane"]
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["kind-worker"]}]}
    ]
    assert "nodeName" not in pod["spec"], "pin through the scheduler so taints and cordons are honoured"
    assert pod["metadata"]["labels"][RUN_ID_LABEL] == "r1"
    assert pod["metadata"]["labels"][MANAGED_BY_LABEL] == "knetcheck"
    assert pod["metadata"]["namespace"] == "kc-r1-pod-network-abcd"
    assert "tolerations" not in pod["spec"] and not pod["spec"].get("hostNetwork")
    assert host["spec"]["hostNetwork"] is True
    assert {t["key"] for t in host["spec"]["tolerations"]} >= {CP_TAINT["key"]}
    assert host["spec"]["containers"][0]["args"] == ["netexec", "--http-port=18080", "--udp-port=18081"]
    assert host["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] == 18080


def test_long_node_names_give_valid_pod_names() -> None:
    nodes = topo.node_infos([node("x" * 60 + "-one", "10.0.0.1"), node("y" * 70, "10.0.0.2")])
    plan = topo.plan("ns", "r1", nodes)
    for manifest in plan.manifests():
        validate_manifest(manifest)
        assert len(manifest["metadata"]["name"]) <= 63


def running(ip: str = "10.244.1.2", ready: str = "True") -> dict[str, Any]:
    return {"status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}}


def test_pod_ready_ip_needs_running_ready_and_an_ip() -> None:
    assert topo.pod_ready_ip(running()) == "10.244.1.2"
    assert topo.pod_ready_ip(running(ready="False")) is None
    assert topo.pod_ready_ip({"status": {"phase": "Pending"}}) is None
    assert topo.pod_ready_ip(running(ip="")) is None


def test_not_ready_message_names_each_waiting_pod_and_why() -> None:
    plan = kind_plan()
    pending = {
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/3 nodes are available"}],
        }
    }
    crashing = {
        "status": {
            "phase": "Running",
            "containerStatuses": [{"name": "netexec", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
        }
    }
    ready = {p.name: "1.2.3.4" for p in plan.pods if p.name not in ("pod-worker-a", "host-worker")}
    msg = topo.not_ready_message(plan, {"pod-worker-a": pending, "host-worker": crashing}, ready, 60)
    assert msg.splitlines()[0] == "2 of 7 probe pods in namespace kc-r1-pod-network-abcd not Ready after 60s:"
    assert "pod-worker-a on kind-worker: Pending; PodScheduled: Unschedulable 0/3 nodes are available" in msg
    assert "host-worker on kind-worker: Running; netexec waiting: CrashLoopBackOff" in msg


class _Recording:
    def __init__(self, port: int) -> None:
        self.port = port
        self.jobs: list[ProbeJob] = []
        self.closed = False

    def run(self, job: ProbeJob) -> ProbeResult:
        self.jobs.append(job)
        return ProbeResult(Verdict.CONNECTED, "", f"port {self.port}", 0.0)

    def close(self) -> None:
        self.closed = True


def test_topology_channel_asks_each_source_on_its_own_control_port(monkeypatch: pytest.MonkeyPatch) -> None:
    made: dict[int, _Recording] = {}

    def fake_proxy(_cluster: object, *, control_port: int, pool_size: int) -> _Recording:
        made[control_port] = _Recording(control_port)
        return made[control_port]

    monkeypatch.setattr(topo, "ProxyChannel", fake_proxy)
    plan = kind_plan()
    deployed = topo.Topology(plan, tuple(topo.Placed(p, f"10.0.0.{i}", plan.namespace)
                                         for i, p in enumerate(plan.pods)))
    channel = topo.TopologyChannel(object(), deployed, pool_size=4)  # type: ignore[arg-type]
    pod, host = deployed.by_key("worker/a"), deployed.by_key("worker/node")
    assert channel.run(ProbeJob(pod.ref, host.ip, 18080)).command == "port 8080"
    assert channel.run(ProbeJob(host.ref, pod.ip, 8080, kind=ProbeKind.DIAL)).command == "port 18080"
    assert deployed.host_of(pod) == host
    with pytest.raises(KeyError, match="not a probe pod"):
        channel.run(ProbeJob(PodRef("other", "x", "c"), "1.1.1.1", 80))
    channel.close()
    assert all(c.closed for c in made.values()) and sorted(made) == [8080, 18080]
