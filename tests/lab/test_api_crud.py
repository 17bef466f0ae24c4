"""CRUD semantics of the lab API through the official kubernetes client."""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from clusters.lab.api import RunningApiServer, start_api_server

Client = kubernetes.client.ApiClient


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53"}]},
    }


def deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]
                },
            },
        },
    }


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


def test_pod_create_applies_server_defaults(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    created = v1.create_namespaced_pod("default", pod("p", app="x"))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert created.spec.restart_policy == "Always"
    assert created.spec.dns_policy == "ClusterFirst"
    assert created.spec.termination_grace_period_seconds == 30
    assert created.spec.scheduler_name == "default-scheduler"
    assert created.spec.containers[0].image_pull_policy == "IfNotPresent"
    assert created.spec.containers[0].termination_message_path == "/dev/termination-log"
    assert created.status.phase == "Pending"
    latest = v1.create_namespaced_pod(
        "default", {**pod("q"), "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    )
    assert latest.spec.containers[0].image_pull_policy == "Always"


def test_crud_configmap_and_conflict_on_stale_update(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    cm = v1.create_namespaced_config_map("default", {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    stale_rv = cm.metadata.resource_version
    cm.data["a"] = "2"
    updated = v1.replace_namespaced_config_map("cm", "default", cm)
    assert updated.data == {"a": "2"}
    assert int(updated.metadata.resource_version) > int(stale_rv)
    cm.metadata.resource_version = stale_rv
    with pytest.raises(ApiException) as err:
        v1.replace_namespaced_config_map("cm", "default", cm)
    assert err.value.status == 409
    body = status_of(err.value)
    assert body["reason"] == "Conflict"
    assert body["message"] == (
        'Operation cannot be fulfilled on configmaps "cm": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    v1.delete_namespaced_config_map("cm", "default")
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_config_map("cm", "default")
    assert err.value.status == 404


def test_error_status_bodies(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    apps = kubernetes.client.AppsV1Api(lab_api_client)
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_pod("nope", "default")
    assert status_of(err.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "kind": "pods"},
        "code": 404,
    }
    with pytest.raises(ApiException) as err:
        apps.read_namespaced_deployment("nope", "default")
    assert status_of(err.value)["message"] == 'deployments.apps "nope" not found'
    assert status_of(err.value)["details"]["group"] == "apps"
    v1.create_namespaced_pod("default", pod("dup"))
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_pod("default", pod("dup"))
    assert err.value.status == 409
    assert status_of(err.value)["reason"] == "AlreadyExists"
    assert status_of(err.value)["message"] == 'pods "dup" already exists'
    bad = pod("bad")
    del bad["spec"]["containers"][0]["image"]
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_pod("default", bad)
    body = status_of(err.value)
    assert err.value.status == 422 and body["reason"] == "Invalid"
    assert body["message"] == 'Pod "bad" is invalid: spec.containers[0].image: Required value'
    assert body["details"]["causes"] == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.containers[0].image"}
    ]
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_pod("missing-ns", pod("p"))
    assert err.value.status == 404
    assert status_of(err.value)["message"] == 'namespaces "missing-ns" not found'


def test_invalid_name_and_unknown_field_strict(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_config_map("default", {"metadata": {"name": "Bad_Name"}})
    assert err.value.status == 422
    assert 'metadata.name: Invalid value: "Bad_Name"' in status_of(err.value)["message"]


def test_unknown_field_strict_is_400_and_warn_is_a_warning(lab_api: RunningApiServer) -> None:
    body = json.dumps({"metadata": {"name": "ok"}, "dta": {}}).encode()
    url = f"{lab_api.url}/api/v1/namespaces/default/configmaps"
    req = urllib.request.Request(
        url + "?fieldValidation=Strict",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400
    assert json.loads(err.value.read())["message"] == 'strict decoding error: unknown field "dta"'
    err.value.close()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201
        assert resp.headers["Warning"] == '299 - "unknown field \\"dta\\""'


def test_protobuf_is_refused_with_the_real_servers_415_and_406(lab_api: RunningApiServer) -> None:
    url = f"{lab_api.url}/api/v1/namespaces/default/configmaps"
    proto = "application/vnd.kubernetes.protobuf"
    req = urllib.request.Request(url, data=b"k8s\x00", method="POST", headers={"Content-Type": proto})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    body = json.loads(err.value.read())
    err.value.close()
    assert (err.value.code, body["reason"]) == (415, "UnsupportedMediaType")
    assert body["message"].startswith("the body of the request was in an unknown format")
    assert "application/json" in body["message"]

    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": proto}), timeout=10)
    body = json.loads(err.value.read())
    err.value.close()
    assert (err.value.code, body["reason"]) == (406, "NotAcceptable")

    # client-go's usual offer (protobuf first, JSON as fallback) is answered in JSON
    req = urllib.request.Request(url, headers={"Accept": f"{proto}, application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200 and json.loads(resp.read())["kind"] == "ConfigMapList"


def test_generate_name(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    created = v1.create_namespaced_pod("default", {**pod(""), "metadata": {"generateName": "web-"}})
    assert created.metadata.name.startswith("web-") and len(created.metadata.name) == len("web-") + 5


def test_patch_merge_strategic_and_json(lab_api_client: Client) -> None:
    apps = kubernetes.client.AppsV1Api(lab_api_client)
    apps.create_namespaced_deployment("default", deployment("web"))
    # A dict body is sent as a strategic merge patch: containers merge by name.
    patched = apps.patch_namespaced_deployment(
        "web",
        "default",
        {"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "busybox:1.36"}]}}}},
    )
    assert [c.name for c in patched.spec.template.spec.containers] == ["web", "side"]
    assert patched.metadata.generation == 2
    merged = apps.patch_namespaced_deployment(
        "web",
        "default",
        {"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "busybox:1.36"}]}}}},
        _content_type="application/merge-patch+json",
    )
    assert [c.name for c in merged.spec.template.spec.containers] == ["only"]
    jp = apps.patch_namespaced_deployment(
        "web", "default", [{"op": "replace", "path": "/spec/replicas", "value": 5}]
    )
    assert jp.spec.replicas == 5
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment(
            "web", "default", [{"op": "test", "path": "/spec/replicas", "value": 1}]
        )
    assert err.value.status == 422


def test_status_subresource_separates_spec_and_status(lab_api_client: Client) -> None:
    apps = kubernetes.client.AppsV1Api(lab_api_client)
    created = apps.create_namespaced_deployment("default", {**deployment("d"), "status": {"replicas": 9}})
    assert created.status is None or not created.status.replicas
    body = apps.read_namespaced_deployment("d", "default").to_dict()
    body = lab_api_client.sanitize_for_serialization(apps.read_namespaced_deployment("d", "default"))
    body["status"] = {"replicas": 3, "readyReplicas": 1}
    body["spec"]["replicas"] = 7
    after = apps.replace_namespaced_deployment_status("d", "default", body)
    assert after.status.replicas == 3 and after.spec.replicas == 2
    assert after.metadata.generation == 1
    body = lab_api_client.sanitize_for_serialization(after)
    body["spec"]["replicas"] = 4
    body["status"] = {"replicas": 100}
    after = apps.replace_namespaced_deployment("d", "default", body)
    assert after.spec.replicas == 4 and after.status.replicas == 3
    assert after.metadata.generation == 2


def test_scale_subresource(lab_api_client: Client) -> None:
    apps = kubernetes.client.AppsV1Api(lab_api_client)
    apps.create_namespaced_deployment("default", deployment("s", replicas=1))
    scale = apps.read_namespaced_deployment_scale("s", "default")
    assert scale.spec.replicas == 1 and scale.status.selector == "app=s"
    apps.patch_namespaced_deployment_scale("s", "default", {"spec": {"replicas": 4}})
    assert apps.read_namespaced_deployment("s", "default").spec.replicas == 4
    scale = apps.read_namespaced_deployment_scale("s", "default")
    scale.spec.replicas = 0
    assert apps.replace_namespaced_deployment_scale("s", "default", scale).spec.replicas == 0


def test_service_ip_and_node_port_allocation(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    ips, ports = set(), set()
    for i in range(20):
        svc = v1.create_namespaced_service(
            "default",
            {
                "metadata": {"name": f"s{i}"},
                "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80}]},
            },
        )
        assert ipaddress.ip_address(svc.spec.cluster_ip) in ipaddress.ip_network("10.96.0.0/16")
        assert svc.spec.cluster_ip not in ("10.96.0.0", "10.96.0.1", "10.96.0.10")
        assert svc.spec.cluster_ips == [svc.spec.cluster_ip]
        assert 30000 <= svc.spec.ports[0].node_port <= 32767
        assert svc.spec.ports[0].target_port == 80 and svc.spec.ports[0].protocol == "TCP"
        assert svc.spec.session_affinity == "None" and svc.spec.ip_families == ["IPv4"]
        ips.add(svc.spec.cluster_ip)
        ports.add(svc.spec.ports[0].node_port)
    assert len(ips) == 20 and len(ports) == 20
    dns = v1.create_namespaced_service(
        "default",
        {
            "metadata": {"name": "kube-dns"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 53, "protocol": "UDP"}]},
        },
    )
    assert dns.spec.cluster_ip == "10.96.0.10"
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_service(
            "default",
            {"metadata": {"name": "again"}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}},
        )
    assert err.value.status == 422
    assert "provided IP is already allocated" in status_of(err.value)["message"]
    taken = next(iter(ports))
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_service(
            "default",
            {
                "metadata": {"name": "np"},
                "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": taken}]},
            },
        )
    assert err.value.status == 422
    assert (
        f"spec.ports[0].nodePort: Invalid value: {taken}: provided port is already allocated"
        in status_of(err.value)["message"]
    )
    # An update that omits the allocated fields keeps them.
    svc = v1.read_namespaced_service("s0", "default")
    body = lab_api_client.sanitize_for_serialization(svc)
    del body["spec"]["clusterIP"], body["spec"]["clusterIPs"], body["spec"]["ports"][0]["nodePort"]
    kept = v1.replace_namespaced_service("s0", "default", body)
    assert (
        kept.spec.cluster_ip == svc.spec.cluster_ip
        and kept.spec.ports[0].node_port == svc.spec.ports[0].node_port
    )


def test_namespace_terminating_and_finalize(lab_api: RunningApiServer, lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    ns = v1.create_namespace({"metadata": {"name": "doomed"}})
    assert ns.spec.finalizers == ["kubernetes"] and ns.status.phase == "Active"
    assert v1.read_namespaced_service_account("default", "doomed").metadata.name == "default"
    v1.create_namespaced_config_map("doomed", {"metadata": {"name": "x"}})
    v1.delete_namespace("doomed")
    ns = v1.read_namespace("doomed")
    assert ns.status.phase == "Terminating" and ns.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_config_map("doomed", {"metadata": {"name": "y"}})
    assert err.value.status == 403
    assert (
        "unable to create new content in namespace doomed because it is being terminated"
        in status_of(err.value)["message"]
    )
    body = lab_api_client.sanitize_for_serialization(ns)
    body["spec"]["finalizers"] = []
    v1.replace_namespace_finalize("doomed", body)
    with pytest.raises(ApiException) as err:
        v1.read_namespace("doomed")
    assert err.value.status == 404
    assert lab_api.store.get("namespaces", "", "doomed") is None


def test_finalizers_hold_deletion_and_propagation_policy(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    apps = kubernetes.client.AppsV1Api(lab_api_client)
    v1.create_namespaced_config_map(
        "default", {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}
    )
    v1.delete_namespaced_config_map("held", "default")
    held = v1.read_namespaced_config_map("held", "default")
    assert held.metadata.deletion_timestamp is not None
    v1.patch_namespaced_config_map(
        "held", "default", {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json"
    )
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_config_map("held", "default")
    assert err.value.status == 404
    apps.create_namespaced_deployment("default", deployment("fg"))
    apps.delete_namespaced_deployment("fg", "default", propagation_policy="Foreground")
    fg = apps.read_namespaced_deployment("fg", "default")
    assert fg.metadata.finalizers == ["foregroundDeletion"] and fg.metadata.deletion_timestamp is not None


def test_delete_collection_with_label_selector(lab_api_client: Client) -> None:
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    for i in range(3):
        v1.create_namespaced_pod("default", pod(f"a{i}", tier="a"))
    v1.create_namespaced_pod("default", pod("b0", tier="b"))
    v1.delete_collection_namespaced_pod("default", label_selector="tier=a")
    assert [p.metadata.name for p in v1.list_namespaced_pod("default").items] == ["b0"]


def test_state_dir_persists_objects_across_restarts(tmp_path: Path) -> None:
    first = start_api_server(state_dir=tmp_path / "api")
    try:
        with kubernetes.client.ApiClient(kubernetes.client.Configuration(host=first.url)) as c:
            kubernetes.client.CoreV1Api(c).create_namespaced_config_map(
                "default", {"metadata": {"name": "kept"}}
            )
            rv = int(
                kubernetes.client.CoreV1Api(c).list_namespaced_config_map("default").metadata.resource_version
            )
    finally:
        first.stop()
    second = start_api_server(state_dir=tmp_path / "api")
    try:
        assert second.store.get("configmaps", "default", "kept") is not None
        assert second.store.resource_version >= rv
    finally:
        second.stop()


def test_secret_string_data_is_folded_into_data(lab_api_client: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(lab_api_client)
    core.create_namespaced_secret(
        "default",
        {"metadata": {"name": "sd"}, "data": {"a": "b2xk", "b": "YmI="}, "stringData": {"a": "new"}},
    )
    got = core.read_namespaced_secret("sd", "default")
    assert got.data == {"a": "bmV3", "b": "YmI="}
    assert got.string_data is None
