"""List with selectors, and watch from a resourceVersion, through the official kubernetes client."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from clusters.lab.api import RunningApiServer, store

Client = kubernetes.client.ApiClient


def pod(name: str, node: str | None = None, **labels: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "nginx:1.27"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "labels": labels}, "spec": spec}


def test_list_with_label_and_field_selectors(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    v1.create_namespace({"metadata": {"name": "other"}})
    v1.create_namespaced_pod("default", pod("a", node="n1", app="web", tier="front"))
    v1.create_namespaced_pod("default", pod("b", node="n2", app="web", tier="back"))
    v1.create_namespaced_pod("default", pod("c", app="db"))
    v1.create_namespaced_pod("other", pod("d", node="n1", app="web"))

    def names(**kw: Any) -> list[str]:
        return sorted(p.metadata.name for p in v1.list_pod_for_all_namespaces(**kw).items)

    assert names(label_selector="app=web") == ["a", "b", "d"]
    assert names(label_selector="app=web,tier!=front") == ["b", "d"]
    assert names(label_selector="tier in (front,back)") == ["a", "b"]
    assert names(label_selector="tier notin (front),app") == ["b", "c", "d"]
    assert names(label_selector="!tier") == ["c", "d"]
    assert names(field_selector="spec.nodeName=n1") == ["a", "d"]
    assert names(field_selector="metadata.namespace=other") == ["d"]
    assert names(field_selector="spec.nodeName=n1,metadata.name!=a") == ["d"]
    assert names(field_selector="status.phase!=Running,spec.nodeName=") == ["c"]
    with pytest.raises(ApiException) as err:
        v1.list_pod_for_all_namespaces(field_selector="spec.bogus=x")
    assert err.value.status == 400
    assert json.loads(err.value.body)["message"] == "field label not supported: spec.bogus"


def test_list_limit_and_continue(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    for i in range(5):
        v1.create_namespaced_config_map("default", {"metadata": {"name": f"cm{i}"}})
    first = v1.list_namespaced_config_map("default", limit=2)
    assert len(first.items) == 2 and first.metadata._continue
    rest = v1.list_namespaced_config_map("default", limit=10, _continue=first.metadata._continue)
    seen = [c.metadata.name for c in first.items + rest.items]
    assert sorted(seen) == sorted(["kube-root-ca.crt", *(f"cm{i}" for i in range(5))])


def test_watch_from_resource_version_sees_later_events(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    v1.create_namespaced_pod("default", pod("before", app="w"))
    rv = v1.list_namespaced_pod("default").metadata.resource_version
    v1.create_namespaced_pod("default", pod("after", app="w"))
    v1.patch_namespaced_pod("after", "default", {"metadata": {"labels": {"x": "1"}}})
    v1.delete_namespaced_pod("after", "default")
    w = kubernetes.watch.Watch()
    events = []
    for ev in w.stream(v1.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=2):
        events.append((ev["type"], ev["object"].metadata.name))
        if len(events) == 3:
            w.stop()
    assert events == [("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "after")]


def test_watch_with_selector_turns_unmatching_into_deleted(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    rv = v1.list_namespaced_pod("default").metadata.resource_version
    v1.create_namespaced_pod("default", pod("p", app="w"))
    v1.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"app": "other"}}})
    v1.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"app": "w"}}})
    w = kubernetes.watch.Watch()
    events = []
    for ev in w.stream(
        v1.list_namespaced_pod, "default", label_selector="app=w", resource_version=rv, timeout_seconds=2
    ):
        events.append(ev["type"])
        if len(events) == 3:
            w.stop()
    assert events == ["ADDED", "DELETED", "ADDED"]


def test_watch_live_events_arrive(lab_api: RunningApiServer, lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    rv = v1.list_namespaced_config_map("default").metadata.resource_version
    url = (
        f"{lab_api.url}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=5"
    )
    with urllib.request.urlopen(url, timeout=10) as resp:
        v1.create_namespaced_config_map("default", {"metadata": {"name": "live"}})
        line = json.loads(resp.readline())
    assert line["type"] == "ADDED" and line["object"]["metadata"]["name"] == "live"


def test_watch_too_old_resource_version_is_410(lab_api: RunningApiServer, lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    for i in range(store.HISTORY + 5):
        lab_api.store.update("configmaps", {"metadata": {"name": "churn", "namespace": "default", "n": i}})
    w = kubernetes.watch.Watch()
    with pytest.raises(ApiException) as err:
        for _ in w.stream(v1.list_namespaced_config_map, "default", resource_version="2", timeout_seconds=2):
            pass
    assert err.value.status == 410
    assert "too old resource version: 2" in str(err.value.reason)
