"""The lab scheduler: filters, spread, unschedulable reporting, retry on node changes."""

from __future__ import annotations

from collections import Counter

from clusters.lab.controllers.client import JSON, MERGE_PATCH, meta
from clusters.lab.controllers.podaffinity import AFFINITY_REASON, EXISTING_ANTI_AFFINITY_REASON, Placed
from clusters.lab.controllers.scheduler import filter_node, pick_node, unschedulable_message

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


def anti(required: bool, app: str, weight: int = 100) -> JSON:
    term = {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}
    if required:
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": weight, "podAffinityTerm": term}]
        }
    }


def labelled(name: str, app: str, **spec: object) -> JSON:
    p = pod(name, **spec)
    p["metadata"]["labels"] = {"app": app}
    return p


def test_preferred_anti_affinity_spreads_replicas_like_kubeadms_coredns(lab: Lab) -> None:
    """Load alone would put the second pod on the emptier worker too; the preference must win."""
    for i in range(3):
        lab.kube.create(PODS, pod(f"filler{i}", nodeSelector={"kubernetes.io/hostname": W2}))
    eventually(lambda: all(node_of(lab, f"filler{i}") == W2 for i in range(3)), "fillers on worker2")
    lab.kube.create(PODS, labelled("dns-a", "dns", affinity=anti(False, "dns")))
    eventually(lambda: node_of(lab, "dns-a") == W1, "the first replica on the emptier worker")
    lab.kube.create(PODS, labelled("dns-b", "dns", affinity=anti(False, "dns")))
    eventually(lambda: node_of(lab, "dns-b") == W2, "the second replica away from the first")


def test_required_anti_affinity_leaves_a_third_replica_pending_with_the_real_message(lab: Lab) -> None:
    for name in ("one", "two", "three"):
        lab.kube.create(PODS, labelled(name, "solo", affinity=anti(True, "solo")))
        if name != "three":
            eventually(lambda name=name: node_of(lab, name), f"{name} bound")  # type: ignore[misc]
    assert {node_of(lab, "one"), node_of(lab, "two")} == {W1, W2}

    def message() -> str | None:
        conds = (lab.kube.get(f"{PODS}/three").get("status") or {}).get("conditions") or []
        pending = (c for c in conds if c["type"] == "PodScheduled" and c["status"] == "False")
        return next((c["message"] for c in pending), None)

    assert eventually(message, "three Unschedulable") == (
        "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
        "2 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are available: "
        "1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
    )
    lab.kube.delete(f"{PODS}/one")
    eventually(lambda: node_of(lab, "three"), "three bound once a node is free of the group")


def test_inter_pod_affinity_units() -> None:
    def node(name: str, zone: str | None = None) -> JSON:
        labels = {"kubernetes.io/hostname": name, **({"zone": zone} if zone else {})}
        ready = {"conditions": [{"type": "Ready", "status": "True"}]}
        return {"metadata": {"name": name, "labels": labels}, "spec": {}, "status": ready}

    a, b, c = node("a", "z1"), node("b", "z1"), node("c")
    web = labelled("web", "web")
    placed = [Placed(web, a)]
    near = {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}
    together = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [near]}}
    follower = labelled("f", "f", affinity=together)
    # same zone as web: a and b; c has no zone label, so it is in no domain
    assert [filter_node(follower, n, placed) for n in (a, b, c)] == [None, None, AFFINITY_REASON]
    # no pod matches anywhere and the pod is not in its own group: nowhere; in its own group: anywhere zoned
    assert filter_node(follower, a, []) == AFFINITY_REASON
    first = labelled("w2", "web", affinity=together)
    assert [filter_node(first, n, []) for n in (a, c)] == [None, AFFINITY_REASON]
    # an existing pod's required anti-affinity repels the incoming pod it selects
    loner = labelled("l", "loner", affinity=anti(True, "web"))
    assert filter_node(web, a, [Placed(loner, a)]) == EXISTING_ANTI_AFFINITY_REASON
    assert filter_node(web, b, [Placed(loner, a)]) is None
    # terms look in the pod's own namespace unless they name others
    other_ns = {**web, "metadata": {**web["metadata"], "namespace": "other"}}
    assert filter_node(labelled("x", "x", affinity=anti(True, "web")), a, [Placed(other_ns, a)]) is None
    # scoring: the preferred anti-affinity node loses even when it is emptier
    spread = labelled("s", "web", affinity=anti(False, "web"))
    assert pick_node(spread, [a, b], placed, Counter({"b": 5}), lambda _ns: None) == "b"
    assert pick_node(pod("plain"), [a, b], placed, Counter({"b": 5}), lambda _ns: None) == "a"
