"""The node-level inputs to a render: what the KubeProxyConfiguration and the node say.

:class:`RenderOptions` is everything besides Services and endpoints that changes the rules: the
masquerade mark and ``masqueradeAll``, how local pod traffic is recognised (:class:`LocalDetector`,
from ``detectLocalMode`` and the cluster CIDR), where NodePorts listen, and which service chains
already exist. The server (``__init__``) builds it once from the config; the sync loop only adds
the existing chains. Keeping it a frozen value is what makes :func:`~.render.render` pure.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LocalDetector:
    """How "traffic from a local pod" is recognised (detect-local-mode).

    It decides which cluster-IP traffic is masqueraded (everything not from a local pod, so replies
    come back through this node) and which external traffic may short-cut to cluster endpoints.
    An empty detector (no cluster CIDR, say) matches nothing, and those rules are left out.
    """

    if_local: tuple[str, ...] = ()
    if_not_local: tuple[str, ...] = ()

    @property
    def implemented(self) -> bool:
        return bool(self.if_local)

    @staticmethod
    def by_cidr(cidr: str) -> LocalDetector:
        return LocalDetector(("-s", cidr), ("!", "-s", cidr))

    @staticmethod
    def by_interface(name: str) -> LocalDetector:
        return LocalDetector(("-i", name), ("!", "-i", name))


@dataclass(frozen=True)
class RenderOptions:
    """One render's node-level knobs; ``node_name`` picks local endpoints, ``node_ip`` a FW exception."""

    node_name: str = ""
    node_ip: str = ""
    masquerade_mark: str = "0x004000"
    masquerade_all: bool = False
    local_detector: LocalDetector = LocalDetector()
    localhost_node_ports: bool = True
    node_port_ips: tuple[str, ...] | None = None
    """None: NodePorts on every local address (``-m addrtype --dst-type LOCAL``)."""
    conntrack_tcp_liberal: bool = False
    existing_nat_chains: frozenset[str] = frozenset()
    """Chains found in the nat table: stale service chains among them are deleted."""
