"""The proxier's model: service ports and endpoints as plain frozen values.

Rendering works on these rather than on API objects so that it stays a pure function of values a
test can write in one line, and so that everything API-shaped (defaults, headless and ExternalName
services, EndpointSlice conditions) is decided once, in :mod:`.state`. Each service port also owns
its chain names, because kube-proxy derives them from the port's identity.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from clusters.lab.programs.kubeproxy.chains import chain_hash, port_proto_hash

DEFAULT_STICKY_SECONDS = 10800


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service, as kube-proxy's ServicePortInfo sees it."""

    namespace: str
    name: str
    port_name: str
    protocol: str
    """TCP, UDP or SCTP."""
    cluster_ip: str
    port: int
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    load_balancer_source_ranges: tuple[str, ...] = ()
    client_ip_affinity: bool = False
    sticky_seconds: int = DEFAULT_STICKY_SECONDS
    external_policy_local: bool = False
    internal_policy_local: bool = False
    health_check_node_port: int = 0

    @property
    def name_string(self) -> str:
        """ServicePortName.String(): ``ns/name`` plus ``:port`` when the port is named."""
        return f"{self.namespace}/{self.name}" + (f":{self.port_name}" if self.port_name else "")

    @property
    def proto(self) -> str:
        return self.protocol.lower()

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.external_ips or self.load_balancer_ips)

    def _chain(self, prefix: str) -> str:
        """kube-proxy's per-service-port chain name: prefix + hash of "ns/name:port" and protocol."""
        return prefix + port_proto_hash(self.name_string, self.proto)

    @property
    def svc_chain(self) -> str:
        return self._chain("KUBE-SVC-")

    @property
    def svl_chain(self) -> str:
        return self._chain("KUBE-SVL-")

    @property
    def ext_chain(self) -> str:
        return self._chain("KUBE-EXT-")

    @property
    def fw_chain(self) -> str:
        return self._chain("KUBE-FW-")


@dataclass(frozen=True)
class Endpoint:
    """One address of an EndpointSlice for one port, with the conditions endpoint selection needs."""

    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str = ""

    @property
    def address(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


def endpoint_chain(sp: ServicePort, ep: Endpoint) -> str:
    """proxier.go servicePortEndpointChainName."""
    return "KUBE-SEP-" + chain_hash(sp.name_string + sp.proto + ep.address)


@dataclass(frozen=True)
class ProxyState:
    """Everything one sync renders: service ports and their endpoints (keyed by name_string+proto)."""

    services: tuple[ServicePort, ...]
    endpoints: Mapping[tuple[str, str], tuple[Endpoint, ...]] = field(default_factory=dict)

    def endpoints_of(self, sp: ServicePort) -> tuple[Endpoint, ...]:
        return self.endpoints.get((sp.name_string, sp.protocol), ())
