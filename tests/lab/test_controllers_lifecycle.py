"""Garbage collection, namespace deletion, event aggregation and the manager's lifecycle."""

from __future__ import annotations

import threading

import pytest

from clusters.errors import UsageProblem
from clusters.lab.controllers import ControllerManager, EventRecorder
from clusters.lab.controllers.client import JSON, meta

from .controllers_lab import DEPLOY, RS, Lab, deployment, eventually, lab_fixture  # noqa: F401


def deployed(lab: Lab, name: str = "web", ns: str = "default", replicas: int = 2) -> JSON:
    body = deployment(name, replicas)
    body["metadata"]["namespace"] = ns
    d = lab.kube.create(f"/apis/apps/v1/namespaces/{ns}/deployments", body)
    eventually(lambda: len(lab.pods(ns, f"app={name}")) == replicas, f"{replicas} pods of {name}")
    return d


def test_background_deletion_removes_replicaset_and_pods(lab: Lab) -> None:
    deployed(lab)
    lab.kube.delete(f"{DEPLOY}/web", {"propagationPolicy": "Background"})
    eventually(lambda: not lab.list(RS) and not lab.pods(selector="app=web"), "RS and pods collected")


def test_foreground_deletion_waits_for_dependents(lab: Lab) -> None:
    deployed(lab)
    out = lab.kube.delete(f"{DEPLOY}/web", {"propagationPolicy": "Foreground"})
    assert "foregroundDeletion" in (meta(out).get("finalizers") or [])

    def gone() -> bool:
        try:
            lab.kube.get(f"{DEPLOY}/web")
        except Exception as err:
            return getattr(err, "status", None) == 404
        return False

    eventually(gone, "the deployment removed after its dependents")
    assert not lab.list(RS)
    assert not lab.pods(selector="app=web")


def test_orphan_deletion_keeps_dependents_without_owner(lab: Lab) -> None:
    deployed(lab)
    lab.kube.delete(f"{DEPLOY}/web", {"propagationPolicy": "Orphan"})

    def orphaned() -> bool:
        sets = lab.list(RS)
        return len(sets) == 1 and not meta(sets[0]).get("ownerReferences") and not lab.list(DEPLOY)

    eventually(orphaned, "the RS kept with its owner reference removed")
    assert len(lab.pods(selector="app=web")) == 2


def test_dependent_with_missing_owner_is_collected(lab: Lab) -> None:
    ghost = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "ghost",
        "uid": "00000000-0000-0000-0000-000000000000",
        "controller": True,
    }
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "stray", "namespace": "default", "ownerReferences": [ghost]},
    }
    lab.kube.create("/api/v1/namespaces/default/configmaps", cm)
    eventually(
        lambda: (
            not [c for c in lab.list("/api/v1/namespaces/default/configmaps") if meta(c)["name"] == "stray"]
        ),
        "the configmap whose owner never existed deleted",
    )


def test_namespace_deletion_empties_and_removes_it(lab: Lab) -> None:
    lab.kube.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}}
    )
    deployed(lab, ns="doomed")
    lab.kube.create(
        "/api/v1/namespaces/doomed/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "b"}},
    )
    lab.kube.delete("/api/v1/namespaces/doomed")

    def gone() -> bool:
        return "doomed" not in {meta(n)["name"] for n in lab.list("/api/v1/namespaces")}

    eventually(gone, "namespace doomed removed")
    assert not lab.list("/api/v1/pods") or all(
        meta(p)["namespace"] != "doomed" for p in lab.list("/api/v1/pods")
    )


def test_event_recorder_aggregates_repeats(lab: Lab) -> None:
    target = lab.kube.create(
        "/api/v1/namespaces/default/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "subject"}},
    )
    target.setdefault("kind", "ConfigMap")
    rec = EventRecorder(lab.kube, "kubelet", host="knetcheck-lab-worker")
    try:
        for _ in range(3):
            rec.event(target, "Warning", "BackOff", "Back-off restarting failed container")
        rec.event(target, "Normal", "Pulled", "Container image already present on machine")
        assert rec.flush(5)
    finally:
        rec.stop()
    mine = [e for e in lab.events() if e["involvedObject"].get("name") == "subject"]
    by_reason = {e["reason"]: e for e in mine}
    assert len(mine) == 2
    backoff = by_reason["BackOff"]
    assert backoff["count"] == 3
    assert backoff["firstTimestamp"] <= backoff["lastTimestamp"]
    assert backoff["source"] == {"component": "kubelet", "host": "knetcheck-lab-worker"}
    assert backoff["involvedObject"]["uid"] == meta(target)["uid"]
    assert by_reason["Pulled"]["count"] == 1
    assert rec.thread is not None and not rec.thread.is_alive()


def test_manager_start_stop_idempotent(lab: Lab) -> None:
    m = ControllerManager(lab.kube.api_client, controllers=["replicaset"])
    assert m.stop() == []
    m = ControllerManager(lab.kube.api_client, controllers=["replicaset"])
    m.start()
    m.start()
    threads = m.threads()
    assert threads and all(isinstance(t, threading.Thread) for t in threads)
    assert m.stop(timeout=5) == []
    assert m.stop() == []
    assert not [t for t in threads if t.is_alive()]


def test_unknown_controller_is_a_usage_problem(lab: Lab) -> None:
    with pytest.raises(UsageProblem, match="unknown lab controller"):
        ControllerManager(lab.kube.api_client, controllers=["cronjob"])


def test_dangling_reference_is_stripped_when_another_owner_lives(lab: Lab) -> None:
    owner = lab.kube.create(
        "/api/v1/namespaces/default/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}},
    )
    live = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": meta(owner)["uid"]}
    ghost = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "ghost",
        "uid": "11111111-1111-1111-1111-111111111111",
    }
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "shared", "namespace": "default", "ownerReferences": [live, ghost]},
    }
    lab.kube.create("/api/v1/namespaces/default/configmaps", cm)

    def stripped() -> bool:
        refs = meta(lab.kube.get("/api/v1/namespaces/default/configmaps/shared")).get("ownerReferences") or []
        return [r["name"] for r in refs] == ["owner"]

    eventually(stripped, "the dangling reference removed, the live one kept")
