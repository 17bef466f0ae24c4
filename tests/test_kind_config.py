"""Rendered kind configs match kind v1alpha4's fields; manifests match the Kubernetes schemas."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusters.kind.config import (
    cluster_name,
    config_hash,
    config_yaml,
    controller_manager_arg_patch,
    render_kind_config,
)
from clusters.kind.versions import DEFAULT_NODE_IMAGE
from clusters.recipes import load_recipe
from clusters.validate import ManifestInvalid, validate_kind_config, validate_manifest

CNIS = ["kindnet", "calico", "flannel", "cilium", "weave"]
BIN = Path("/opt/cni/bin-full")


def _render(cni: str, nodes: int = 3, **kw: Any) -> dict[str, Any]:
    return render_kind_config(load_recipe(cni), name=cluster_name(cni), nodes=nodes, cni_bin_dir=BIN, **kw)


@pytest.mark.parametrize("cni", CNIS)
def test_rendered_configs_validate(cni: str) -> None:
    doc = _render(cni)
    validate_kind_config(doc)
    # What is written to disk is the same document.
    assert yaml.safe_load(config_yaml(doc)) == doc
    assert doc["name"] == f"knetcheck-{cni}"
    assert [n["role"] for n in doc["nodes"]] == ["control-plane", "worker", "worker"]
    net = doc["networking"]
    assert net["disableDefaultCNI"] is (cni != "kindnet")
    assert net["serviceSubnet"] == "10.96.0.0/16"
    assert net["kubeProxyMode"] == "iptables"
    assert net["podSubnet"] == ("10.32.0.0/12" if cni == "weave" else "10.244.0.0/16")


def test_flannel_mounts_the_full_plugin_set_on_every_node() -> None:
    doc = _render("flannel", nodes=4)
    mounts = [n.get("extraMounts") for n in doc["nodes"]]
    assert mounts == [[{"hostPath": str(BIN), "containerPath": "/opt/cni/bin"}]] * 4
    assert "&" not in config_yaml(doc) and "*" not in config_yaml(doc)  # no YAML anchors/aliases
    assert all("extraMounts" not in n for n in _render("calico")["nodes"])


def test_single_node_and_zero_nodes() -> None:
    assert [n["role"] for n in _render("calico", nodes=1)["nodes"]] == ["control-plane"]
    with pytest.raises(Exception, match="at least 1 node"):
        _render("calico", nodes=0)


def test_kubeadm_patch_uses_v1beta4_list_append() -> None:
    doc = _render("kindnet", controller_manager_args=[("node-cidr-mask-size-ipv4", "28")])
    validate_kind_config(doc)
    patch = doc["kubeadmConfigPatchesJSON6902"][0]
    assert patch == controller_manager_arg_patch("node-cidr-mask-size-ipv4", "28")
    ops = yaml.safe_load(patch["patch"])
    assert ops == [
        {
            "op": "add",
            "path": "/controllerManager/extraArgs/-",
            "value": {"name": "node-cidr-mask-size-ipv4", "value": "28"},
        }
    ]
    assert patch["version"] == "v1beta4"


@pytest.mark.parametrize(
    ("where", "key"),
    [((), "podSubnet"), (("networking",), "podsubnet"), (("nodes", 0), "extraMount")],
)
def test_unknown_key_is_rejected(where: tuple[Any, ...], key: str) -> None:
    doc = copy.deepcopy(_render("calico"))
    target: Any = doc
    for part in where:
        target = target[part]
    target[key] = "x"
    with pytest.raises(ManifestInvalid, match=rf"Additional properties are not allowed \('{key}'") as err:
        validate_kind_config(doc)
    assert "\n" not in str(err.value)
    assert "knetcheck-calico" in str(err.value)


def test_bad_values_are_rejected() -> None:
    doc = _render("calico")
    doc["networking"]["kubeProxyMode"] = "userspace"
    with pytest.raises(ManifestInvalid, match=r"networking\.kubeProxyMode"):
        validate_kind_config(doc)
    doc = _render("calico")
    doc["nodes"][1]["role"] = "master"
    with pytest.raises(ManifestInvalid, match=r"nodes\.1\.role"):
        validate_kind_config(doc)


def test_hash_changes_with_what_shapes_the_cluster() -> None:
    calico = load_recipe("calico")
    doc = _render("calico")
    base = config_hash(doc, DEFAULT_NODE_IMAGE, calico)
    assert base == config_hash(copy.deepcopy(doc), DEFAULT_NODE_IMAGE, calico)
    assert base != config_hash(_render("calico", nodes=2), DEFAULT_NODE_IMAGE, calico)
    assert base != config_hash(doc, "kindest/node:v1.35.0", calico)
    assert base != config_hash(doc, DEFAULT_NODE_IMAGE, load_recipe("flannel"))


POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "probe", "namespace": "default", "labels": {"app": "probe"}},
    "spec": {
        "containers": [
            {
                "name": "agnhost",
                "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
                "args": ["netexec", "--http-port=8080"],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            }
        ]
    },
}


def test_validate_manifest_accepts_valid_objects() -> None:
    validate_manifest(POD)
    validate_manifest({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "knetcheck-x"}})
    validate_manifest(POD, k8s_version="1.35")


def test_validate_manifest_rejects_a_bad_pod_in_one_line() -> None:
    bad = copy.deepcopy(POD)
    bad["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    with pytest.raises(ManifestInvalid) as err:
        validate_manifest(bad)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("manifest Pod/probe invalid for Kubernetes 1.36 at spec.containers.0.ports.0")
    assert "'eighty'" in msg


def test_validate_manifest_rejects_unknown_fields_and_kinds() -> None:
    typo = copy.deepcopy(POD)
    typo["spec"]["containers"][0]["imagePullPolcy"] = "Never"
    with pytest.raises(ManifestInvalid, match=r"Pod/probe .*imagePullPolcy"):
        validate_manifest(typo)
    with pytest.raises(ManifestInvalid, match=r"Gizmo/g: .*Couldn't find schema"):
        validate_manifest({"apiVersion": "v1", "kind": "Gizmo", "metadata": {"name": "g"}})
    with pytest.raises(ManifestInvalid, match="apiVersion and kind are required"):
        validate_manifest({"metadata": {"name": "x"}})


def test_validate_manifest_with_an_unknown_kubernetes_version() -> None:
    with pytest.raises(ManifestInvalid, match=r"^manifest Pod/probe: no schemas for Kubernetes 9\.99"):
        validate_manifest(POD, k8s_version="9.99")


def test_k8s_version_picks_the_pinned_node_image() -> None:
    from clusters.errors import UsageProblem
    from clusters.kind.versions import DEFAULT_NODE_IMAGE, node_image_for

    assert node_image_for(None, None) == DEFAULT_NODE_IMAGE
    assert node_image_for(None, "1.35") == "kindest/node:v1.35.0"
    assert node_image_for(None, "v1.36") == DEFAULT_NODE_IMAGE
    assert node_image_for("kindest/node:v1.34.0", "1.35") == "kindest/node:v1.34.0"
    with pytest.raises(UsageProblem, match=r"no pinned kind node image for Kubernetes 1\.20"):
        node_image_for(None, "1.20")
