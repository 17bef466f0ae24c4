"""Traffic policies → which endpoints and chains one service port uses, before any rule is written.

This is ``pkg/proxy/topology.go`` CategorizeEndpoints (without topology hints) and the decisions at
the top of ``syncProxyRules``' per-service loop: internal and external traffic policy pick
``KUBE-SVC-`` (all usable endpoints) or ``KUBE-SVL-`` (this node's only), and a port with no usable
endpoint (or no local one under a Local policy) gets a REJECT or DROP instead of a jump. The
decisions live in one :class:`ServicePlan` because every rule writer branches on them and the
rules only hold together when all writers agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clusters.lab.programs.kubeproxy.model import Endpoint, ServicePort
from clusters.lab.programs.kubeproxy.ruleset import quote


def _usable(endpoints: Sequence[Endpoint]) -> list[Endpoint]:
    """Ready endpoints; when none is ready, serving-and-terminating ones (ProxyTerminatingEndpoints)."""
    ready = [e for e in endpoints if e.ready]
    return ready or [e for e in endpoints if e.serving and e.terminating]


def categorize(
    sp: ServicePort, endpoints: Sequence[Endpoint], node: str
) -> tuple[list[Endpoint], list[Endpoint], list[Endpoint], bool]:
    """(cluster endpoints, local endpoints, all locally reachable, has any usable endpoint)."""
    cluster = _usable(endpoints)
    has_any = bool(cluster)
    uses_local = sp.internal_policy_local or sp.external_policy_local
    local = _usable([e for e in endpoints if e.node_name == node]) if uses_local else []
    uses_cluster = not (
        sp.internal_policy_local and (sp.external_policy_local or not sp.externally_accessible)
    )
    if not uses_cluster:
        cluster = []
    reachable = {e.address: e for e in [*cluster, *local]}
    return cluster, local, sorted(reachable.values(), key=lambda e: e.address), has_any


@dataclass(frozen=True)
class ServicePlan:
    """What one service port gets on this node."""

    sp: ServicePort
    cluster_eps: list[Endpoint]
    """The ``KUBE-SVC-`` chain's endpoints (empty: no such chain)."""
    local_eps: list[Endpoint]
    """The ``KUBE-SVL-`` chain's endpoints (empty: no such chain)."""
    reachable: list[Endpoint]
    """Endpoints that get a ``KUBE-SEP-`` chain."""
    has_endpoints: bool
    internal_chain: str
    """Where cluster-IP traffic goes: SVC, or SVL under internalTrafficPolicy Local."""
    has_internal: bool
    external_policy_chain: str
    """Where external traffic goes after ``KUBE-EXT-``: SVC, or SVL under externalTrafficPolicy Local."""
    has_external: bool
    uses_ext: bool
    uses_fw: bool
    int_target: str
    """REJECT or DROP for cluster-IP traffic when ``has_internal`` is false."""
    int_comment: str
    ext_target: str
    """REJECT or DROP for external traffic when ``has_external`` is false."""
    ext_comment: str

    @property
    def lb_chain(self) -> str:
        """Where load-balancer IP traffic enters: the firewall chain when source ranges apply."""
        return self.sp.fw_chain if self.uses_fw else self.sp.ext_chain


def plan_service(sp: ServicePort, endpoints: Sequence[Endpoint], node: str) -> ServicePlan:
    """Decide ``sp``'s chains and targets on ``node`` from its policies and usable endpoints."""
    name = sp.name_string
    cluster_eps, local_eps, reachable, has_endpoints = categorize(sp, endpoints, node)
    internal_chain, has_internal = sp.svc_chain, has_endpoints
    if sp.internal_policy_local:
        internal_chain = sp.svl_chain
        has_internal = has_internal and bool(local_eps)
    external_policy_chain, has_external = sp.svc_chain, has_endpoints
    if sp.external_policy_local:
        external_policy_chain = sp.svl_chain
        has_external = has_external and bool(local_eps)

    int_target = int_comment = ext_target = ext_comment = ""
    if not has_endpoints:
        int_target = ext_target = "REJECT"
        int_comment = ext_comment = quote(f"{name} has no endpoints")
    else:
        if not has_internal:
            int_target, int_comment = "DROP", quote(f"{name} has no local endpoints")
        if not has_external:
            ext_target, ext_comment = "DROP", quote(f"{name} has no local endpoints")

    return ServicePlan(
        sp=sp,
        cluster_eps=cluster_eps,
        local_eps=local_eps,
        reachable=reachable,
        has_endpoints=has_endpoints,
        internal_chain=internal_chain,
        has_internal=has_internal,
        external_policy_chain=external_policy_chain,
        has_external=has_external,
        uses_ext=has_endpoints and sp.externally_accessible,
        uses_fw=has_endpoints and bool(sp.load_balancer_ips) and bool(sp.load_balancer_source_ranges),
        int_target=int_target,
        int_comment=int_comment,
        ext_target=ext_target,
        ext_comment=ext_comment,
    )
