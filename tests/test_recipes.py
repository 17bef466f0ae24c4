"""The five shipped CNI recipes load and say what reference §2.5 says about each CNI."""

from __future__ import annotations

from importlib import resources
from typing import Any

import pytest
import yaml

from clusters.capabilities import Capability
from clusters.recipes import (
    ConfRewrite,
    InstallAction,
    Ipam,
    ProviderName,
    all_recipes,
    load_recipe,
    parse_recipe,
    recipe_names,
)

CNIS = ["calico", "cilium", "flannel", "kindnet", "weave"]
CNIS_ORDERED = ["kindnet", "calico", "flannel", "cilium", "weave"]

# Reference §2.5 quick matrix.
CONF_FILES = {
    "kindnet": "10-kindnet.conflist",
    "calico": "10-calico.conflist",
    "flannel": "10-flannel.conflist",
    "cilium": "05-cilium.conflist",
    "weave": "10-weave.conflist",
}
REWRITE = {
    "kindnet": ConfRewrite.INPUT_CHANGE,
    "calico": ConfRewrite.AGENT_RESTART,
    "flannel": ConfRewrite.AGENT_RESTART,
    "cilium": ConfRewrite.SELF,
    "weave": ConfRewrite.AGENT_RESTART,
}
IPAM = {
    "kindnet": Ipam.NODE_PODCIDR,
    "calico": Ipam.OWN,
    "flannel": Ipam.NODE_PODCIDR,
    "cilium": Ipam.NODE_PODCIDR,
    "weave": Ipam.OWN,
}
NETWORK_POLICY = {"kindnet": True, "calico": True, "flannel": False, "cilium": True, "weave": True}
HOST_PORT = {"kindnet": True, "calico": True, "flannel": True, "cilium": False, "weave": True}


def _raw(name: str) -> dict[str, Any]:
    text = resources.files("clusters.recipes").joinpath(f"{name}.yaml").read_text("utf-8")
    raw: dict[str, Any] = yaml.safe_load(text)
    return raw


def test_all_five_load_with_names_matching_files() -> None:
    assert set(CNIS) <= set(all_recipes())
    # The lab's own recipes live next to these but never claim kind.
    assert recipe_names(ProviderName.KIND) == CNIS
    for name in CNIS:
        assert load_recipe(name).name == name
        assert _raw(name)["name"] == name


@pytest.mark.parametrize("name", CNIS)
def test_matrix_facts(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.conf_file == CONF_FILES[name]
    assert recipe.conf_rewrite is REWRITE[name]
    assert recipe.ipam is IPAM[name]
    assert (Capability.NETWORK_POLICY in recipe.capabilities) is NETWORK_POLICY[name]
    assert (Capability.HOST_PORT in recipe.capabilities) is HOST_PORT[name]
    assert recipe.providers == frozenset({ProviderName.KIND, ProviderName.EXISTING})


@pytest.mark.parametrize("name", CNIS)
def test_only_kindnet_keeps_kinds_default_cni(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.kind.disable_default_cni is (name != "kindnet")
    assert recipe.kind.service_subnet == "10.96.0.0/16"


def test_install_steps_pin_versions() -> None:
    kindnet, calico, flannel, cilium, weave = (load_recipe(n) for n in CNIS_ORDERED)
    assert [s.action for s in kindnet.install] == [InstallAction.NONE]
    assert calico.install[0].action is InstallAction.KUBECTL_CREATE
    assert "/projectcalico/calico/v3.32.1/manifests/calico.yaml" in calico.install[0].source
    assert flannel.install[0].source.endswith("/releases/download/v0.28.9/kube-flannel.yml")
    helm = cilium.install[0]
    assert (helm.action, helm.source, helm.version) == (InstallAction.HELM_INSTALL, "cilium/cilium", "1.20.0")
    assert dict(helm.values) == {
        "image.pullPolicy": "IfNotPresent",
        "ipam.mode": "kubernetes",
        "operator.replicas": "1",
    }
    assert weave.install[0].source == (
        "https://github.com/rajch/weave/releases/download/v2.9.0/weave-daemonset-k8s-1.11.yaml"
    )


def test_kind_needs_per_cni() -> None:
    assert load_recipe("flannel").kind.full_cni_plugins
    assert not any(load_recipe(n).kind.full_cni_plugins for n in CNIS if n != "flannel")
    # Weave's IPALLOC_RANGE default; the others use kind's default podSubnet.
    assert load_recipe("weave").kind.pod_subnet == "10.32.0.0/12"
    assert {load_recipe(n).kind.pod_subnet for n in CNIS if n != "weave"} == {"10.244.0.0/16"}


def test_agents_and_readiness() -> None:
    flannel = load_recipe("flannel")
    assert (flannel.agent.namespace, flannel.agent.daemonset, flannel.agent.selector) == (
        "kube-flannel",
        "kube-flannel-ds",
        "app=flannel",
    )
    assert load_recipe("kindnet").agent.selector == "app=kindnet"
    calico_ready = {(r.kind, r.namespace, r.name) for r in load_recipe("calico").readiness}
    assert calico_ready == {
        ("DaemonSet", "kube-system", "calico-node"),
        ("Deployment", "kube-system", "calico-kube-controllers"),
    }
    cilium_ready = {(r.kind, r.name) for r in load_recipe("cilium").readiness}
    assert {("DaemonSet", "cilium"), ("Deployment", "cilium-operator")} <= cilium_ready


@pytest.mark.parametrize("name", CNIS)
def test_images_are_pinned(name: str) -> None:
    for image in load_recipe(name).images:
        assert ":latest" not in image and ":" in image.rsplit("/", 1)[-1], image
    assert load_recipe("cilium").images[0].count("@sha256:") == 1


def test_overlay_ports() -> None:
    assert load_recipe("flannel").overlay_ports == ("udp/8472",)
    assert set(load_recipe("calico").overlay_ports) == {"ipip", "tcp/179"}
    assert set(load_recipe("weave").overlay_ports) == {"tcp/6783", "udp/6783", "udp/6784"}


def test_unknown_key_in_a_recipe_is_an_error() -> None:
    raw = _raw("calico")
    raw["podSubnet"] = "10.0.0.0/8"
    with pytest.raises(ValueError, match="unknown keys"):
        parse_recipe(raw)
    raw = _raw("calico")
    raw["kind"]["podsubnet"] = "10.0.0.0/8"
    with pytest.raises(ValueError, match=r"calico.kind: unknown keys \['podsubnet'\]"):
        parse_recipe(raw, where="calico")
