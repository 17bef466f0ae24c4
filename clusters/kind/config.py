"""Render a kind cluster config from a CNI recipe, and fingerprint it.

The config is data derived from the recipe alone (plus node count and image), so the same
request always renders the same bytes; its hash is what lets us refuse to reuse a same-named
cluster that was created differently (pytest-kind reuses blindly, reference §5.1).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from clusters.errors import UsageProblem
from clusters.kind.versions import CLUSTER_PREFIX
from clusters.recipes import CniRecipe

API_VERSION = "kind.x-k8s.io/v1alpha4"


def cluster_name(cni: str) -> str:
    """One cluster per CNI, so switching CNI never reuses a cluster wired for another one."""
    return f"{CLUSTER_PREFIX}{cni}"


def controller_manager_arg_patch(name: str, value: str) -> dict[str, str]:
    """A JSON6902 patch appending one kube-controller-manager flag in kubeadm v1beta4 list form.

    kind >= v0.32 writes kubeadm v1beta4 for Kubernetes >= 1.36, where ``extraArgs`` is a list
    of ``{name, value}``; a merge patch in the old map form breaks ``kind create`` and a list
    merge patch would replace kind's own entries, so we append (reference §1.2).
    """
    entry = json.dumps({"name": name, "value": value})
    return {
        "group": "kubeadm.k8s.io",
        "version": "v1beta4",
        "kind": "ClusterConfiguration",
        "patch": f"- op: add\n  path: /controllerManager/extraArgs/-\n  value: {entry}\n",
    }


def render_kind_config(
    recipe: CniRecipe,
    *,
    name: str,
    nodes: int,
    cni_bin_dir: Path | None = None,
    controller_manager_args: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The kind ``Cluster`` document for ``recipe``: one control plane plus ``nodes - 1`` workers.

    ``cni_bin_dir`` is the host dir mounted over every node's /opt/cni/bin; it is required
    exactly when the recipe asks for the full plugin set.
    """
    if nodes < 1:
        raise UsageProblem(f"a kind cluster needs at least 1 node, got {nodes}; pass --nodes 1 or more")
    needs = recipe.kind
    if needs.full_cni_plugins and cni_bin_dir is None:
        raise UsageProblem(f"cni {recipe.name} needs a host dir with the full CNI plugin set to mount")

    def node(role: str) -> dict[str, Any]:
        # A fresh dict per node: shared objects would be dumped as YAML anchors and aliases.
        entry: dict[str, Any] = {"role": role}
        if needs.full_cni_plugins and cni_bin_dir is not None:
            entry["extraMounts"] = [{"hostPath": str(cni_bin_dir), "containerPath": "/opt/cni/bin"}]
        return entry

    node_list = [node("control-plane")] + [node("worker") for _ in range(nodes - 1)]
    doc: dict[str, Any] = {
        "kind": "Cluster",
        "apiVersion": API_VERSION,
        "name": name,
        "nodes": node_list,
        "networking": {
            "disableDefaultCNI": needs.disable_default_cni,
            "podSubnet": needs.pod_subnet,
            "serviceSubnet": needs.service_subnet,
            "kubeProxyMode": needs.kube_proxy_mode,
        },
    }
    if controller_manager_args:
        doc["kubeadmConfigPatchesJSON6902"] = [
            controller_manager_arg_patch(k, v) for k, v in controller_manager_args
        ]
    return doc


def config_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def config_hash(doc: dict[str, Any], node_image: str, recipe: CniRecipe) -> str:
    """SHA-256 over everything that shapes the cluster: kind config, node image, CNI install.

    A cluster created with another CNI version is as wrong to reuse as one with another subnet.
    """
    identity = {
        "kind_config": doc,
        "node_image": node_image,
        "cni": recipe.name,
        "cni_version": recipe.version,
        "install": [dataclasses.asdict(step) for step in recipe.install],
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
