"""Attaching to an already running cluster from a kubeconfig alone.

`chaos run faults/experiments/x.json` with only ``KUBECONFIG`` set, and `knetcheck doctor`, must
reach the same Cluster handle the pytest plugin builds, node channel included. The kubeconfig
says which cluster it is: the embedded lab's API, a knetcheck kind cluster (context
``kind-knetcheck-<cni>``), or anything else (an existing cluster, node access only when the user
allows destructive actions). Deciding that is provider knowledge, so it lives here.
"""

from __future__ import annotations

import os
from pathlib import Path

from clusters.errors import UsageProblem
from clusters.handle import Cluster
from clusters.labels import env_run_id, new_run_id
from clusters.options import kubeconfig_path, read_kubeconfig
from clusters.provider import ClusterKind, ClusterRequest

KIND_CONTEXT_PREFIX = "kind-knetcheck-"


def _server_and_context(kubeconfig: Path, context: str | None) -> tuple[str, str]:
    doc = read_kubeconfig(kubeconfig)
    doc = doc if isinstance(doc, dict) else {}
    name = context or doc.get("current-context") or ""
    ctx = next((c.get("context") or {} for c in doc.get("contexts") or [] if c.get("name") == name), None)
    if ctx is None:
        raise UsageProblem(f"kubeconfig {kubeconfig} has no context {name!r}; pass one of its contexts")
    cluster = next(
        (c.get("cluster") or {} for c in doc.get("clusters") or [] if c.get("name") == ctx.get("cluster")), {}
    )
    return str(cluster.get("server", "")), str(name)


def attach(
    kubeconfig: Path | None = None, context: str | None = None, *, allow_destructive: bool = False
) -> Cluster:
    """The Cluster handle for a running cluster; never creates or deletes anything."""
    path = kubeconfig or kubeconfig_path(None, os.environ)
    server, ctx = _server_and_context(path, context)
    run_id = env_run_id() or new_run_id()

    from clusters.lab import control, layout

    lab = control.status(layout.default_root())
    if lab.running and lab.api_url and lab.api_url == server:
        from clusters.lab.provider import LAB_CAPABILITIES, LabNodeChannel
        from clusters.recipes import load_recipe

        recipe = load_recipe(lab.cni or "lab")
        return Cluster(
            name=layout.CLUSTER_NAME,
            provider="lab",
            kubeconfig=path,
            context=context,
            cni=recipe,
            capabilities=frozenset(recipe.capabilities | LAB_CAPABILITIES),
            node_channel=LabNodeChannel(layout.default_root(), lab.prefix),
            run_id=run_id,
        )

    from clusters.existing.provider import ExistingProvider

    request = ClusterRequest(
        kind=ClusterKind.EXISTING,
        cni=None,
        run_id=run_id,
        state_dir=Path(".knetcheck"),
        kubeconfig=path,
        context=context,
        allow_destructive=allow_destructive,
    )
    cluster = ExistingProvider().acquire(request)
    if ctx.startswith(KIND_CONTEXT_PREFIX):
        # A knetcheck kind cluster: its nodes are Docker containers we may exec into.
        from dataclasses import replace

        from clusters.capabilities import Capability
        from clusters.kind.channel import DockerExecChannel

        name = ctx.removeprefix("kind-")
        return replace(
            cluster,
            name=name,
            provider="kind",
            node_channel=DockerExecChannel(name),
            capabilities=cluster.capabilities | {Capability.NODE_ACCESS},
        )
    return cluster
