"""The lab scheduler: filters, spread, unschedulable reporting, retry on node changes."""

from __future__ import annotations

from clusters.lab.controllers.client import JSON, MERGE_PATCH, meta
from clusters.lab.controllers.scheduler import filter_node, unschedulable_message

from .controllers_lab import CP, W1, W2, Lab, eventually, lab_fixture, set_ready  # noqa: F401

PODS = "/api/v1/namespaces/default/pods"
EXPECTED = (
    "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
    "2 node(s) didn't match Pod's node affinity/selector. "
    "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
)


def pod(name: str, **spec: object) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"test": name}},
        "spec": {
            "containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.39"}],
            **spec,
        },
    }


def node_of(lab: Lab, name: str) -> str | None:
    return (lab.kube.get(f"{PODS}/{name}").get("spec") or {}).get("nodeName")


def test_unschedulable_pod_reports_like_the_real_scheduler_then_schedules(lab: Lab) -> None:
    lab.kube.create(PODS, pod("picky", nodeSelector={"disk": "ssd"}))

    def condition() -> JSON | None:
        conds = (lab.kube.get(f"{PODS}/picky").get("status") or {}).get("conditions") or []
        return next((c for c in conds if c["type"] == "PodScheduled" and c["status"] == "False"), None)

    cond = eventually(condition, "PodScheduled=False")
    assert cond["reason"] == "Unschedulable"
    assert cond["message"] == EXPECTED

    def failed_event() -> JSON | None:
        return next((e for e in lab.events() if e["reason"] == "FailedScheduling"), None)

    ev = eventually(failed_event, "a FailedScheduling event")
    assert ev["type"] == "Warning"
    assert ev["message"] == EXPECTED
    assert ev["source"]["component"] == "default-scheduler"
    assert ev["involvedObject"]["name"] == "picky" and ev["involvedObject"]["kind"] == "Pod"
    assert node_of(lab, "picky") is None
    lab.kube.patch(f"/api/v1/nodes/{W2}", {"metadata": {"labels": {"disk": "ssd"}}}, MERGE_PATCH)
    eventually(lambda: node_of(lab, "picky") == W2, "the pod scheduled once a node matches")
    conds = lab.kube.get(f"{PODS}/picky")["status"]["conditions"]
    assert {c["type"]: c["status"] for c in conds}["PodScheduled"] == "True"


def test_not_ready_node_is_skipped_unless_tolerated(lab: Lab) -> None:
    set_ready(lab.kube, W1, False)
    for i in range(3):
        lab.kube.create(PODS, pod(f"p{i}"))
    eventually(lambda: all(node_of(lab, f"p{i}") for i in range(3)), "3 pods bound")
    assert {node_of(lab, f"p{i}") for i in range(3)} == {W2}
    lab.kube.create(
        PODS, pod("hardy", tolerations=[{"operator": "Exists"}], nodeSelector={"kubernetes.io/hostname": W1})
    )
    eventually(lambda: node_of(lab, "hardy") == W1, "a tolerate-everything pod lands on the NotReady node")


def test_not_ready_everywhere_then_ready(lab: Lab) -> None:
    set_ready(lab.kube, W1, False)
    set_ready(lab.kube, W2, False)
    lab.kube.create(PODS, pod("waiting"))

    def message() -> str | None:
        conds = (lab.kube.get(f"{PODS}/waiting").get("status") or {}).get("conditions") or []
        return next(
            (c["message"] for c in conds if c["type"] == "PodScheduled" and c["status"] == "False"), None
        )

    assert eventually(message, "unschedulable") == (
        "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
        "2 node(s) had untolerated taint {node.kubernetes.io/not-ready: }. "
        "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    )
    set_ready(lab.kube, W1, True)
    eventually(lambda: node_of(lab, "waiting") == W1, "scheduled when a node becomes Ready")


def test_other_scheduler_and_preset_node_are_left_alone(lab: Lab) -> None:
    lab.kube.create(PODS, pod("mine", schedulerName="my-scheduler"))
    lab.kube.create(PODS, pod("pinned", nodeName=CP))
    lab.kube.create(PODS, pod("normal"))
    eventually(lambda: node_of(lab, "normal"), "the ordinary pod bound")
    assert node_of(lab, "mine") is None
    assert node_of(lab, "pinned") == CP
    assert not [e for e in lab.events() if e["involvedObject"]["name"] in ("mine", "pinned")]


def test_filter_and_message_units() -> None:
    cordoned = {
        "metadata": {"name": "n"},
        "spec": {"unschedulable": True},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert filter_node(pod("x"), cordoned) == "node(s) were unschedulable"
    tolerant = pod(
        "y",
        tolerations=[
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}
        ],
    )
    assert filter_node(tolerant, cordoned) is None
    pinned = pod(
        "z",
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["m"]}]}
                    ]
                }
            }
        },
    )
    ready = {
        "metadata": {"name": "n"},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert filter_node(pinned, ready) == "node(s) didn't match Pod's node affinity/selector"
    assert filter_node(pinned, {**ready, "metadata": {"name": "m"}}) is None
    assert unschedulable_message([]) == "no nodes available to schedule pods"
    assert meta(pinned)["name"] == "z"


def test_node_lifecycle_taints_follow_conditions(lab: Lab) -> None:
    def taints(node: str) -> list[str]:
        spec = lab.kube.get(f"/api/v1/nodes/{node}").get("spec") or {}
        return sorted(f"{t['key']}:{t['effect']}" for t in spec.get("taints") or [])

    assert taints(CP) == ["node-role.kubernetes.io/control-plane:NoSchedule"]
    set_ready(lab.kube, W1, False)
    eventually(lambda: taints(W1) == ["node.kubernetes.io/not-ready:NoSchedule"], "the not-ready taint")
    lab.kube.patch(f"/api/v1/nodes/{W1}", {"spec": {"unschedulable": True}}, MERGE_PATCH)
    eventually(
        lambda: (
            taints(W1)
            == ["node.kubernetes.io/not-ready:NoSchedule", "node.kubernetes.io/unschedulable:NoSchedule"]
        ),
        "the unschedulable taint added on cordon",
    )
    set_ready(lab.kube, W1, True)
    lab.kube.patch(f"/api/v1/nodes/{W1}", {"spec": {"unschedulable": None}}, MERGE_PATCH)
    eventually(lambda: taints(W1) == [], "taints removed once Ready and uncordoned")
    assert taints(CP) == ["node-role.kubernetes.io/control-plane:NoSchedule"]
