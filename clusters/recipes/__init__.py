"""CNI recipes: one declarative YAML file per CNI, loaded into frozen dataclasses.

A recipe says everything the suite needs to know about a CNI without code: the version it pins,
how to install it, what kind config it needs, which images to preload, which objects mean
"ready", what it can do, the name of the conf file it writes and who rewrites that file when it
is deleted (reference §2.5). Adding a CNI means adding one file next to this module.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from clusters.capabilities import Capability
from clusters.errors import UsageProblem


class ConfRewrite(enum.StrEnum):
    """Who puts a deleted conf file back (reference §2.5, §3.1)."""

    AGENT_RESTART = "agent-restart"
    """Written once at agent (init container) start: restart the node's agent pod to restore."""
    INPUT_CHANGE = "input-change"
    """Rewritten when the agent's inputs change or it restarts (kindnet)."""
    SELF = "self"
    """The agent watches the directory and re-creates the file by itself (Cilium)."""


class Ipam(enum.StrEnum):
    NODE_PODCIDR = "node-podcidr"
    """Addresses from the node's spec.podCIDR (host-local or equivalent): a tiny podCIDR exhausts."""
    OWN = "own"
    """The CNI's own pools (calico-ipam, Weave): node podCIDRs are ignored."""


class InstallAction(enum.StrEnum):
    KUBECTL_CREATE = "kubectl-create"
    KUBECTL_APPLY = "kubectl-apply"
    HELM_INSTALL = "helm-install"
    NONE = "none"
    """Installed by the cluster itself (kindnet on kind, the lab's own agent)."""


class ProviderName(enum.StrEnum):
    KIND = "kind"
    EXISTING = "existing"
    LAB = "lab"


@dataclass(frozen=True)
class InstallStep:
    action: InstallAction
    source: str = ""
    """A manifest URL or path (kubectl), or ``repo/chart`` (helm)."""
    repo_url: str = ""
    release: str = ""
    namespace: str = ""
    version: str = ""
    values: tuple[tuple[str, str], ...] = ()
    """Helm ``--set`` pairs in order."""


@dataclass(frozen=True)
class ReadinessObject:
    kind: str
    """DaemonSet, Deployment or TigeraStatus."""
    namespace: str
    name: str


@dataclass(frozen=True)
class KindNeeds:
    """What the kind cluster config must say for this CNI."""

    disable_default_cni: bool = True
    pod_subnet: str = "10.244.0.0/16"
    service_subnet: str = "10.96.0.0/16"
    kube_proxy_mode: str = "iptables"
    full_cni_plugins: bool = False
    """Mount the full containernetworking plugin set over /opt/cni/bin (Flannel needs ``bridge``)."""


@dataclass(frozen=True)
class Agent:
    """The CNI's per-node agent, for readiness and for the "CNI agent down" fault."""

    namespace: str
    daemonset: str
    selector: str


@dataclass(frozen=True)
class CniRecipe:
    name: str
    summary: str
    version: str
    providers: frozenset[ProviderName]
    conf_file: str
    conf_rewrite: ConfRewrite
    ipam: Ipam
    capabilities: frozenset[Capability]
    agent: Agent
    install: tuple[InstallStep, ...] = ()
    kind: KindNeeds = field(default_factory=KindNeeds)
    images: tuple[str, ...] = ()
    readiness: tuple[ReadinessObject, ...] = ()
    overlay_ports: tuple[str, ...] = ()
    """Data-plane ports between nodes as ``proto/port`` (``udp/8472``, ``ipip``), for partitions."""
    notes: str = ""

    def supports(self, provider: ProviderName) -> bool:
        return provider in self.providers


_TOP_KEYS = {
    "name", "summary", "version", "providers", "conf_file", "conf_rewrite", "ipam", "capabilities",
    "agent", "install", "kind", "images", "readiness", "overlay_ports", "notes",
}


def _only(keys: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(keys) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")


def _install_step(raw: Mapping[str, Any]) -> InstallStep:
    fields = {"action", "source", "repo_url", "release", "namespace", "version", "values"}
    _only(raw, fields, "install step")
    values = tuple((str(k), str(v)) for k, v in (raw.get("values") or {}).items())
    return InstallStep(
        action=InstallAction(raw["action"]),
        source=str(raw.get("source", "")),
        repo_url=str(raw.get("repo_url", "")),
        release=str(raw.get("release", "")),
        namespace=str(raw.get("namespace", "")),
        version=str(raw.get("version", "")),
        values=values,
    )


def parse_recipe(raw: Mapping[str, Any], where: str = "recipe") -> CniRecipe:
    """Build a recipe from its YAML mapping; unknown keys are errors so typos cannot hide."""
    _only(raw, _TOP_KEYS, where)
    kind_raw = dict(raw.get("kind") or {})
    _only(kind_raw, set(KindNeeds.__dataclass_fields__), f"{where}.kind")
    agent_raw = dict(raw["agent"])
    _only(agent_raw, set(Agent.__dataclass_fields__), f"{where}.agent")
    return CniRecipe(
        name=str(raw["name"]),
        summary=str(raw["summary"]),
        version=str(raw["version"]),
        providers=frozenset(ProviderName(p) for p in raw["providers"]),
        conf_file=str(raw["conf_file"]),
        conf_rewrite=ConfRewrite(raw["conf_rewrite"]),
        ipam=Ipam(raw["ipam"]),
        capabilities=frozenset(Capability.parse(c) for c in raw.get("capabilities") or ()),
        agent=Agent(**agent_raw),
        install=tuple(_install_step(s) for s in raw.get("install") or ()),
        kind=KindNeeds(**kind_raw),
        images=tuple(str(i) for i in raw.get("images") or ()),
        readiness=tuple(ReadinessObject(**r) for r in raw.get("readiness") or ()),
        overlay_ports=tuple(str(p) for p in raw.get("overlay_ports") or ()),
        notes=str(raw.get("notes", "")),
    )


@functools.cache
def all_recipes() -> Mapping[str, CniRecipe]:
    """Every recipe file shipped in this package, by name."""
    found: dict[str, CniRecipe] = {}
    for entry in sorted(resources.files(__package__).iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        raw = yaml.safe_load(entry.read_text(encoding="utf-8"))
        recipe = parse_recipe(raw, where=f"recipes/{entry.name}")
        if f"{recipe.name}.yaml" != entry.name:
            raise ValueError(f"recipes/{entry.name}: name {recipe.name!r} must match the file name")
        found[recipe.name] = recipe
    return found


def recipe_names(provider: ProviderName | None = None) -> list[str]:
    return sorted(n for n, r in all_recipes().items() if provider is None or r.supports(provider))


def load_recipe(name: str) -> CniRecipe:
    """The recipe called ``name``; an unknown name is one line listing the choices."""
    try:
        return all_recipes()[name]
    except KeyError:
        raise UsageProblem(
            f"unknown CNI {name!r}; choose one of: {', '.join(recipe_names())}"
        ) from None
