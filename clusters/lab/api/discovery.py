"""Legacy (unaggregated) discovery documents: /version, /api, /api/v1, /apis, /apis/<g>[/<v>].

kubectl 1.32 asks for aggregated discovery first (Accept ``…as=APIGroupDiscoveryList``) and
falls back to these when the server answers plain ``application/json``, as older servers do.
"""

from __future__ import annotations

from typing import Any

from clusters.lab.api import resources
from clusters.lab.api.resources import ResourceType

SERVER_VERSION = {
    "major": "1",
    "minor": "36",
    "emulationMajor": "1",
    "emulationMinor": "36",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "35",
    "gitVersion": "v1.36.1",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

# Subresource -> (kind, verbs, group, version) as the real discovery lists them.
_SUBRESOURCES: dict[str, tuple[str, tuple[str, ...], str | None, str | None]] = {
    "status": ("", ("get", "patch", "update"), None, None),
    "scale": ("Scale", ("get", "patch", "update"), "autoscaling", "v1"),
    "log": ("Pod", ("get",), None, None),
    "proxy": ("", ("create", "delete", "get", "patch", "update"), None, None),
    "binding": ("Binding", ("create",), None, None),
    "eviction": ("Eviction", ("create",), "policy", "v1"),
    "exec": ("PodExecOptions", ("create", "get"), None, None),
    "attach": ("PodAttachOptions", ("create", "get"), None, None),
    "portforward": ("PodPortForwardOptions", ("create", "get"), None, None),
    "finalize": ("Namespace", ("update",), None, None),
}
_PROXY_KINDS = {"Pod": "PodProxyOptions", "Service": "ServiceProxyOptions", "Node": "NodeProxyOptions"}


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _resource_entries(rt: ResourceType) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": list(rt.verbs),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    out = [entry]
    for sub in rt.subresources:
        kind, verbs, group, version = _SUBRESOURCES[sub]
        if sub == "proxy":
            kind = _PROXY_KINDS.get(rt.kind, rt.kind)
        sub_entry: dict[str, Any] = {
            "name": f"{rt.plural}/{sub}",
            "singularName": "",
            "namespaced": rt.namespaced,
            "kind": kind or rt.kind,
            "verbs": list(verbs),
        }
        if group is not None:
            sub_entry["group"], sub_entry["version"] = group, version
        out.append(sub_entry)
    return out


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    types = list(resources.in_group(group, version))
    if not types:
        return None
    entries = [e for rt in types for e in _resource_entries(rt)]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": entries,
    }


def _group(name: str) -> dict[str, Any]:
    versions = sorted({rt.version for rt in resources.RESOURCES if rt.group == name})
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def group_list() -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g) for g in resources.GROUP_ORDER]}


def group(name: str) -> dict[str, Any] | None:
    if name not in resources.GROUP_ORDER:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name)}
