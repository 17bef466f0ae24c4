"""The patch formats, unit-tested without a server."""

from __future__ import annotations

import pytest

from clusters.lab.api.patch import PatchError, json_patch, merge_patch, strategic_merge

POD = {
    "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
    "spec": {
        "containers": [
            {
                "name": "app",
                "image": "a:1",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
            },
            {"name": "side", "image": "s:1"},
        ],
        "tolerations": [{"key": "k", "operator": "Exists"}],
    },
}


def test_merge_patch_rfc7386() -> None:
    out = merge_patch(POD, {"metadata": {"labels": {"a": None, "c": "3"}}, "spec": {"containers": []}})
    assert out["metadata"]["labels"] == {"b": "2", "c": "3"}
    assert out["spec"]["containers"] == []
    assert POD["metadata"]["labels"] == {"a": "1", "b": "2"}  # input untouched


def test_strategic_merges_named_lists_by_key() -> None:
    out = strategic_merge(
        POD,
        {
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "a:2",
                        "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}],
                    },
                ]
            }
        },
    )
    app, side = out["spec"]["containers"]
    assert app["image"] == "a:2" and side["name"] == "side"
    assert app["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "two"},
        {"name": "C", "value": "3"},
    ]
    assert app["ports"] == [{"containerPort": 80, "protocol": "TCP"}]


def test_strategic_directives() -> None:
    out = strategic_merge(POD, {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["app"]
    out = strategic_merge(
        POD,
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "side"}, {"name": "app"}],
                "containers": [{"name": "app", "image": "a:3"}],
            }
        },
    )
    assert [c["name"] for c in out["spec"]["containers"]] == ["side", "app"]
    out = strategic_merge(POD, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}})
    assert out["metadata"]["finalizers"] == []
    out = strategic_merge(POD, {"metadata": {"finalizers": ["y"]}})
    assert out["metadata"]["finalizers"] == ["x", "y"]
    out = strategic_merge(POD, {"spec": {"tolerations": [{"key": "other", "operator": "Exists"}]}})
    assert out["spec"]["tolerations"] == [{"key": "other", "operator": "Exists"}]  # no merge key: replaced
    out = strategic_merge(POD, {"metadata": {"labels": {"$patch": "replace", "z": "9"}}})
    assert out["metadata"]["labels"] == {"z": "9"}


def test_service_ports_merge_on_port() -> None:
    svc = {"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}]}}
    out = strategic_merge(svc, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}})
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 9090}, {"port": 443, "targetPort": 8443}]


def test_json_patch_rfc6902() -> None:
    out = json_patch(
        POD,
        [
            {"op": "add", "path": "/metadata/labels/c", "value": "3"},
            {"op": "remove", "path": "/metadata/labels/a"},
            {"op": "replace", "path": "/spec/containers/0/image", "value": "a:9"},
            {"op": "add", "path": "/spec/containers/-", "value": {"name": "x", "image": "x"}},
            {"op": "copy", "from": "/metadata/name", "path": "/metadata/labels/name"},
            {"op": "move", "from": "/metadata/labels/b", "path": "/metadata/labels/bb"},
            {"op": "test", "path": "/metadata/labels/bb", "value": "2"},
        ],
    )
    assert out["metadata"]["labels"] == {"c": "3", "name": "p", "bb": "2"}
    assert out["spec"]["containers"][0]["image"] == "a:9"
    assert [c["name"] for c in out["spec"]["containers"]] == ["app", "side", "x"]
    with pytest.raises(PatchError):
        json_patch(POD, [{"op": "test", "path": "/metadata/name", "value": "q"}])
    with pytest.raises(PatchError):
        json_patch(POD, [{"op": "remove", "path": "/metadata/nope"}])
