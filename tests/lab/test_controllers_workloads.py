"""Deployments, ReplicaSets and DaemonSets driven by the lab controllers over the lab API."""

from __future__ import annotations

import re
from collections import Counter

from clusters.lab.controllers.client import JSON, MERGE_PATCH, controller_ref, meta

from .controllers_lab import (  # noqa: F401
    CP,
    CP_TAINT,
    DEPLOY,
    HASH_CHARS,
    RS,
    W1,
    W2,
    Lab,
    deployment,
    eventually,
    lab_fixture,
)

DS = "/apis/apps/v1/namespaces/default/daemonsets"
PODS = "/api/v1/namespaces/default/pods"


def daemonset(name: str, **spec: object) -> JSON:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.39"}],
                    **spec,
                },
            },
        },
    }


def running(lab: Lab, app: str) -> list[JSON]:
    return [p for p in lab.pods(selector=f"app={app}") if not meta(p).get("deletionTimestamp")]


def test_deployment_creates_hashed_replicaset_and_spread_pods(lab: Lab) -> None:
    d = lab.kube.create(DEPLOY, deployment("web", 3))

    def settled() -> list[JSON] | None:
        pods = running(lab, "web")
        return pods if len(pods) == 3 and all(p["spec"].get("nodeName") for p in pods) else None

    pods = eventually(settled, "3 bound web pods")
    sets = lab.list(RS)
    assert len(sets) == 1
    rs = sets[0]
    phash = rs["metadata"]["labels"]["pod-template-hash"]
    assert re.fullmatch(f"[{HASH_CHARS}]{{6,10}}", phash)
    assert rs["metadata"]["name"] == f"web-{phash}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": phash}
    assert rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == phash
    ref = controller_ref(rs)
    assert ref is not None and ref["uid"] == d["metadata"]["uid"] and ref["kind"] == "Deployment"
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    for p in pods:
        assert re.fullmatch(f"web-{phash}-[{HASH_CHARS}]{{5}}", p["metadata"]["name"])
        assert (controller_ref(p) or {}).get("uid") == rs["metadata"]["uid"]
    assert sorted(Counter(p["spec"]["nodeName"] for p in pods).values()) == [1, 2]
    assert CP not in {p["spec"]["nodeName"] for p in pods}

    def available() -> JSON | None:
        st = lab.kube.get(f"{DEPLOY}/web").get("status") or {}
        conds = {c["type"]: c for c in st.get("conditions") or []}
        ok = (
            st.get("readyReplicas") == 3
            and st.get("availableReplicas") == 3
            and st.get("updatedReplicas") == 3
            and conds.get("Available", {}).get("status") == "True"
            and conds.get("Progressing", {}).get("reason") == "NewReplicaSetAvailable"
        )
        return st if ok else None

    st = eventually(available, "deployment available")
    assert st["observedGeneration"] == lab.kube.get(f"{DEPLOY}/web")["metadata"]["generation"]
    reasons = {(e["reason"], e["source"]["component"]) for e in lab.events()}
    assert ("ScalingReplicaSet", "deployment-controller") in reasons
    assert ("SuccessfulCreate", "replicaset-controller") in reasons
    assert ("Scheduled", "default-scheduler") in reasons


def test_deployment_scales_up_and_down(lab: Lab) -> None:
    lab.kube.create(DEPLOY, deployment("web", 3))
    eventually(lambda: len(running(lab, "web")) == 3, "3 pods")
    lab.kube.patch(f"{DEPLOY}/web/scale", {"spec": {"replicas": 5}}, MERGE_PATCH)

    def five_spread() -> bool:
        pods = running(lab, "web")
        return len(pods) == 5 and sorted(Counter(p["spec"].get("nodeName") for p in pods).values()) == [2, 3]

    eventually(five_spread, "5 pods spread 3/2 over the workers")
    lab.kube.patch(f"{DEPLOY}/web", {"spec": {"replicas": 1}}, MERGE_PATCH)
    eventually(lambda: len(lab.pods(selector="app=web")) == 1, "1 pod left")
    eventually(
        lambda: (lab.kube.get(f"{DEPLOY}/web").get("status") or {}).get("replicas") == 1, "status.replicas 1"
    )
    assert len(lab.list(RS)) == 1


def test_rollout_restart_replaces_replicaset_and_pods(lab: Lab) -> None:
    lab.kube.create(DEPLOY, deployment("web", 3))
    eventually(
        lambda: (lab.kube.get(f"{DEPLOY}/web").get("status") or {}).get("availableReplicas") == 3, "ready"
    )
    old_rs = lab.list(RS)[0]["metadata"]["name"]
    old_pods = {p["metadata"]["name"] for p in running(lab, "web")}
    patch = {
        "spec": {
            "template": {
                "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}
            }
        }
    }
    lab.kube.patch(f"{DEPLOY}/web", patch, MERGE_PATCH)

    def rolled() -> JSON | None:
        sets = {rs["metadata"]["name"]: rs for rs in lab.list(RS)}
        new = [rs for name, rs in sets.items() if name != old_rs]
        pods = lab.pods(selector="app=web")
        if len(new) != 1 or len(pods) != 3 or sets[old_rs]["spec"]["replicas"] != 0:
            return None
        if {p["metadata"]["name"] for p in pods} & old_pods:
            return None
        st = lab.kube.get(f"{DEPLOY}/web").get("status") or {}
        return new[0] if st.get("updatedReplicas") == 3 and st.get("availableReplicas") == 3 else None

    new_rs = eventually(rolled, "new replica set with 3 pods, old one at 0")
    assert new_rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert new_rs["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
    for p in lab.pods(selector="app=web"):
        assert (
            p["metadata"]["labels"]["pod-template-hash"] == new_rs["metadata"]["labels"]["pod-template-hash"]
        )
    d = lab.kube.get(f"{DEPLOY}/web")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"


def test_replicaset_replaces_deleted_pod(lab: Lab) -> None:
    lab.kube.create(DEPLOY, deployment("web", 2))
    pods = eventually(lambda: running(lab, "web") if len(running(lab, "web")) == 2 else None, "2 pods")
    victim = pods[0]["metadata"]["name"]
    lab.kube.delete(f"/api/v1/namespaces/default/pods/{victim}")

    def replaced() -> bool:
        names = {p["metadata"]["name"] for p in running(lab, "web")}
        return len(names) == 2 and victim not in names

    eventually(replaced, "a replacement pod")


def test_daemonset_one_pod_per_worker_pinned_by_affinity(lab: Lab) -> None:
    lab.kube.create(DS, daemonset("agent"))

    def placed() -> list[JSON] | None:
        pods = running(lab, "agent")
        return pods if len(pods) == 2 and all(p["spec"].get("nodeName") for p in pods) else None

    pods = placed_pods = eventually(placed, "2 daemon pods bound")
    assert sorted(p["spec"]["nodeName"] for p in placed_pods) == [W1, W2]
    for p in pods:
        assert re.fullmatch(f"agent-[{HASH_CHARS}]{{5}}", p["metadata"]["name"])
        terms = p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        assert terms == [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [p["spec"]["nodeName"]]}]}
        ]
        keys = {(t.get("key"), t.get("effect")) for t in p["spec"]["tolerations"]}
        assert ("node.kubernetes.io/not-ready", "NoExecute") in keys
        assert ("node.kubernetes.io/unschedulable", "NoSchedule") in keys
        assert ("node.kubernetes.io/network-unavailable", "NoSchedule") not in keys
        assert "controller-revision-hash" in p["metadata"]["labels"]

    def status_ok() -> bool:
        st = lab.kube.get(f"{DS}/agent").get("status") or {}
        return (
            st.get("desiredNumberScheduled"),
            st.get("currentNumberScheduled"),
            st.get("numberReady"),
            st.get("numberAvailable"),
            st.get("updatedNumberScheduled"),
        ) == (2, 2, 2, 2, 2)

    eventually(status_ok, "daemonset status 2/2")


def test_daemonset_reaches_control_plane_only_when_tolerated(lab: Lab) -> None:
    lab.kube.create(DS, daemonset("proxy", hostNetwork=True, tolerations=[{"operator": "Exists"}]))

    def on_all() -> bool:
        return sorted(p["spec"].get("nodeName") or "" for p in running(lab, "proxy")) == sorted([CP, W1, W2])

    eventually(on_all, "a daemon pod on every node, control plane included")
    p = running(lab, "proxy")[0]
    keys = {(t.get("key"), t.get("effect")) for t in p["spec"]["tolerations"]}
    assert ("node.kubernetes.io/network-unavailable", "NoSchedule") in keys
    lab.kube.create(
        DS,
        daemonset(
            "cp-only",
            tolerations=[dict(CP_TAINT, operator="Exists")],
            nodeSelector={"node-role.kubernetes.io/control-plane": ""},
        ),
    )
    eventually(
        lambda: [p["spec"].get("nodeName") for p in running(lab, "cp-only")] == [CP], "pod on the CP only"
    )


def test_daemonset_node_selector_and_rollout_restart(lab: Lab) -> None:
    lab.kube.patch(f"/api/v1/nodes/{W2}", {"metadata": {"labels": {"lab/role": "edge"}}}, MERGE_PATCH)
    lab.kube.create(DS, daemonset("edge", nodeSelector={"lab/role": "edge"}))
    first = eventually(
        lambda: (
            running(lab, "edge")
            if [p["spec"].get("nodeName") for p in running(lab, "edge")] == [W2]
            else None
        ),
        "one pod on the labelled worker",
    )
    lab.kube.patch(f"/api/v1/nodes/{W1}", {"metadata": {"labels": {"lab/role": "edge"}}}, MERGE_PATCH)
    eventually(
        lambda: sorted(p["spec"].get("nodeName") or "" for p in running(lab, "edge")) == [W1, W2],
        "a pod follows the label to the second worker",
    )
    patch = {
        "spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}}
    }
    lab.kube.patch(f"{DS}/edge", patch, MERGE_PATCH)

    def restarted() -> bool:
        pods = lab.pods(selector="app=edge")
        st = lab.kube.get(f"{DS}/edge").get("status") or {}
        return (
            len(pods) == 2
            and first[0]["metadata"]["name"] not in {p["metadata"]["name"] for p in pods}
            and st.get("updatedNumberScheduled") == 2
            and st.get("numberAvailable") == 2
            and st.get("observedGeneration") == 2
        )

    eventually(restarted, "both daemon pods replaced")
    lab.kube.patch(f"/api/v1/nodes/{W1}", {"metadata": {"labels": {"lab/role": None}}}, MERGE_PATCH)
    eventually(
        lambda: [p["spec"].get("nodeName") for p in lab.pods(selector="app=edge")] == [W2],
        "the pod leaves the node that lost the label",
    )


def test_recreate_strategy_removes_old_pods_before_new(lab: Lab) -> None:
    body = deployment("batch", 2)
    body["spec"]["strategy"] = {"type": "Recreate"}
    lab.kube.create(DEPLOY, body)
    eventually(
        lambda: (lab.kube.get(f"{DEPLOY}/batch").get("status") or {}).get("availableReplicas") == 2, "ready"
    )
    old = {p["metadata"]["name"] for p in lab.pods(selector="app=batch")}
    patch = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "x"}}}}}
    lab.kube.patch(f"{DEPLOY}/batch", patch, MERGE_PATCH)

    def replaced() -> bool:
        names = {p["metadata"]["name"] for p in lab.pods(selector="app=batch")}
        st = lab.kube.get(f"{DEPLOY}/batch").get("status") or {}
        return len(names) == 2 and not (names & old) and st.get("updatedReplicas") == 2

    eventually(replaced, "all pods recreated from the new template")
    scaled = [e["message"] for e in lab.events() if e["reason"] == "ScalingReplicaSet"]
    down = next(i for i, m in enumerate(scaled) if "Scaled down" in m)
    up_new = [i for i, m in enumerate(scaled) if "Scaled up" in m and "from 0 to 2" in m]
    assert len(up_new) == 2 and up_new[1] > down  # the new set grew only after the old one went to 0


def test_daemonset_waits_for_a_terminating_pod_before_replacing_it(lab: Lab) -> None:
    """No surge: while the old daemon pod on a node is still terminating (held here by a finalizer,
    on a cluster by its grace period), the node gets no second one; it does once the old is gone."""
    lab.kube.create(DS, daemonset("solo", nodeSelector={"kubernetes.io/hostname": W1}))
    (old,) = eventually(lambda: running(lab, "solo") or None, "the daemon pod on worker")
    name = meta(old)["name"]
    lab.kube.patch(f"{PODS}/{name}", {"metadata": {"finalizers": ["lab.test/hold"]}}, MERGE_PATCH)
    patch = {"spec": {"template": {"metadata": {"annotations": {"restartedAt": "now"}}}}}
    lab.kube.patch(f"{DS}/solo", patch, MERGE_PATCH)
    eventually(
        lambda: meta(lab.kube.get(f"{PODS}/{name}")).get("deletionTimestamp"), "the old pod terminating"
    )

    def synced_after_the_mark() -> bool:
        # A sync that saw the terminating pod writes status after creating what it creates: once
        # it reports the node unavailable (or, wrongly, updated) at the new generation, any
        # replacement would exist.
        st = lab.kube.get(f"{DS}/solo").get("status") or {}
        after = st.get("numberUnavailable") == 1 or st.get("updatedNumberScheduled") == 1
        return st.get("observedGeneration") == 2 and after

    eventually(synced_after_the_mark, "a DaemonSet sync after the old pod was marked")
    assert running(lab, "solo") == [], "a new daemon pod started beside the terminating one"
    lab.kube.patch(f"{PODS}/{name}", {"metadata": {"finalizers": None}}, MERGE_PATCH)
    (new,) = eventually(lambda: running(lab, "solo") or None, "the replacement once the old pod is gone")
    assert meta(new)["name"] != name and new["spec"].get("nodeName") == W1
