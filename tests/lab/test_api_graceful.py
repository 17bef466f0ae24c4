"""Graceful pod deletion at the API: DELETE marks a bound, running pod; grace 0 removes it.

What clients see on a real cluster: the pod stays (Terminating) with deletionTimestamp and
deletionGracePeriodSeconds, a later DELETE may only shorten the period, and the kubelet's final
DELETE with grace 0 removes it. No kubelet runs here: the tests send that final DELETE.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from clusters.lab.api.graceful import parse_time
from tests.lab.conftest import Kubectl

Client = kubernetes.client.ApiClient
NODE = "knetcheck-lab-worker"


def pod(name: str, node: str | None = NODE, grace: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "nginx:1.27"}]}
    if node:
        spec["nodeName"] = node
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"metadata": {"name": name}, "spec": spec}


def raw_pod(v1: kubernetes.client.CoreV1Api, name: str) -> dict[str, Any]:
    """The pod as the server sent it (timestamps as written, not parsed by the client)."""
    resp = v1.read_namespaced_pod(name, "default", _preload_content=False)
    got: dict[str, Any] = json.loads(resp.data)
    return got


def gone(v1: kubernetes.client.CoreV1Api, name: str) -> bool:
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_pod(name, "default")
    return err.value.status == 404


def test_delete_of_a_bound_pod_marks_it_terminating(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    before = v1.create_namespaced_pod("default", pod("web"))
    asked = datetime.now(UTC)
    answer = v1.delete_namespaced_pod("web", "default")
    assert answer.kind == "Pod" and answer.metadata.name == "web"  # 200 with the pod, not a Status
    meta = raw_pod(v1, "web")["metadata"]
    assert meta["deletionGracePeriodSeconds"] == 30  # spec.terminationGracePeriodSeconds (defaulted)
    deadline = parse_time(meta["deletionTimestamp"])
    assert timedelta(seconds=28) <= deadline - asked <= timedelta(seconds=32)
    assert int(meta["resourceVersion"]) > int(before.metadata.resource_version)
    assert meta["generation"] == before.metadata.generation + 1


def test_grace_comes_from_delete_options_then_the_pod(lab_api_client: Client, kubectl: Kubectl) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    v1.create_namespaced_pod("default", pod("own", grace=12))
    v1.create_namespaced_pod("default", pod("asked", grace=12))
    v1.create_namespaced_pod("default", pod("cli"))
    v1.delete_namespaced_pod("own", "default")
    v1.delete_namespaced_pod("asked", "default", grace_period_seconds=7)  # query parameter
    kubectl("delete", "pod", "cli", "--grace-period=9", "--wait=false")  # DeleteOptions body
    assert raw_pod(v1, "own")["metadata"]["deletionGracePeriodSeconds"] == 12
    assert raw_pod(v1, "asked")["metadata"]["deletionGracePeriodSeconds"] == 7
    assert raw_pod(v1, "cli")["metadata"]["deletionGracePeriodSeconds"] == 9
    row = kubectl("get", "pod", "cli", "--no-headers").stdout.split()
    assert row[:3] == ["cli", "0/1", "Terminating"]


def test_a_second_delete_may_only_shorten_the_grace_period(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    v1.create_namespaced_pod("default", pod("web"))
    v1.delete_namespaced_pod("web", "default", grace_period_seconds=30)
    first = raw_pod(v1, "web")["metadata"]
    v1.delete_namespaced_pod("web", "default", grace_period_seconds=60)
    v1.delete_namespaced_pod("web", "default")
    assert raw_pod(v1, "web")["metadata"] == first  # longer or default: nothing changes
    v1.delete_namespaced_pod("web", "default", grace_period_seconds=10)
    shorter = raw_pod(v1, "web")["metadata"]
    assert shorter["deletionGracePeriodSeconds"] == 10
    # The new deadline keeps the time of the first request: old deadline - 30 s + 10 s.
    moved = parse_time(first["deletionTimestamp"]) - parse_time(shorter["deletionTimestamp"])
    assert moved == timedelta(seconds=20)
    assert int(shorter["resourceVersion"]) > int(first["resourceVersion"])


def test_grace_zero_unbound_and_terminal_pods_go_at_once(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    v1.create_namespaced_pod("default", pod("forced"))
    v1.create_namespaced_pod("default", pod("unbound", node=None))
    v1.create_namespaced_pod("default", pod("done"))
    v1.patch_namespaced_pod_status("done", "default", {"status": {"phase": "Succeeded"}})
    v1.delete_namespaced_pod("forced", "default", grace_period_seconds=0)
    v1.delete_namespaced_pod("unbound", "default")
    v1.delete_namespaced_pod("done", "default")
    assert gone(v1, "forced") and gone(v1, "unbound") and gone(v1, "done")


def test_the_kubelets_final_delete_removes_a_terminating_pod(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    v1.create_namespaced_pod("default", pod("web"))
    v1.delete_namespaced_pod("web", "default")
    # The kubelet reports status while it stops the containers: that must not remove the pod.
    v1.patch_namespaced_pod_status("web", "default", {"status": {"phase": "Running"}})
    assert raw_pod(v1, "web")["metadata"]["deletionTimestamp"]
    uid = raw_pod(v1, "web")["metadata"]["uid"]
    with pytest.raises(ApiException) as err:
        v1.delete_namespaced_pod(
            "web", "default", body={"gracePeriodSeconds": 0, "preconditions": {"uid": "someone-else"}}
        )
    assert err.value.status == 409
    v1.delete_namespaced_pod("web", "default", body={"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
    assert gone(v1, "web")


def test_a_finalizer_holds_the_pod_after_the_final_delete(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    body = pod("held")
    body["metadata"]["finalizers"] = ["knetcheck.test/hold"]
    v1.create_namespaced_pod("default", body)
    v1.delete_namespaced_pod("held", "default")
    v1.patch_namespaced_pod("held", "default", {"metadata": {"labels": {"still": "here"}}})
    assert raw_pod(v1, "held")["metadata"]["deletionGracePeriodSeconds"] == 30
    v1.delete_namespaced_pod("held", "default", grace_period_seconds=0)
    meta = raw_pod(v1, "held")["metadata"]
    assert meta["deletionGracePeriodSeconds"] == 0 and meta["finalizers"] == ["knetcheck.test/hold"]
    v1.patch_namespaced_pod("held", "default", {"metadata": {"finalizers": None}})
    assert gone(v1, "held")


def test_dry_run_delete_marks_nothing(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    v1.create_namespaced_pod("default", pod("web"))
    answer = v1.delete_namespaced_pod("web", "default", dry_run="All")
    assert answer.metadata.deletion_timestamp is not None
    assert "deletionTimestamp" not in raw_pod(v1, "web")["metadata"]


def test_watch_sees_modified_then_deleted(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    v1.create_namespaced_pod("default", pod("web"))
    rv = v1.list_namespaced_pod("default").metadata.resource_version
    v1.delete_namespaced_pod("web", "default", grace_period_seconds=5)
    v1.delete_namespaced_pod("web", "default", grace_period_seconds=0)
    w = kubernetes.watch.Watch()
    events = []
    for ev in w.stream(v1.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=2):
        events.append((ev["type"], ev["object"].metadata.deletion_grace_period_seconds))
        if len(events) == 2:
            w.stop()
    assert events == [("MODIFIED", 5), ("DELETED", 5)]
