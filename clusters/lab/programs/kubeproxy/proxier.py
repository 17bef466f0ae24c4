"""kube-proxy's iptables data plane: Services + EndpointSlices → ``iptables-restore`` input.

:func:`render` is a pure function that writes the same chains and rules, in the same order and
with the same comments, as ``pkg/proxy/iptables/proxier.go`` ``syncProxyRules``: ``KUBE-SERVICES``
(jumped to from PREROUTING and OUTPUT), ``KUBE-SVC-<hash>`` per service port with ``statistic``
balancing, ``KUBE-SEP-<hash>`` per endpoint (DNAT), ``KUBE-EXT-``/``KUBE-SVL-``/``KUBE-FW-``,
``KUBE-MARK-MASQ``/``KUBE-POSTROUTING`` (mark + MASQUERADE), ``KUBE-NODEPORTS`` last in
``KUBE-SERVICES``, and in the filter table ``REJECT`` for services without endpoints
(``"<ns>/<svc>:<port> has no endpoints"``) and ``KUBE-FORWARD``. Chain names hash exactly as the
real ones, so a doctor that greps ``iptables-save`` on a kind node works on the lab too.

:class:`IptablesRunner` applies it with ``iptables-restore --noflush`` in the current network
namespace: only the chains named in the input are flushed and rewritten, so other rules on the node
(the CNI's) survive, and stale service chains are deleted.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clusters.proc import run

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
DEFAULT_STICKY_SECONDS = 10800
CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-FW-", "KUBE-EXT-")
IPTABLES_TIMEOUT = 30.0

KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_FIREWALL = "KUBE-FIREWALL"


# -- the model ---------------------------------------------------------------------------------


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
    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str = ""

    @property
    def address(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ProxyState:
    """Everything one sync renders: service ports and their endpoints (keyed by name_string+proto)."""

    services: tuple[ServicePort, ...]
    endpoints: Mapping[tuple[str, str], tuple[Endpoint, ...]] = field(default_factory=dict)

    def endpoints_of(self, sp: ServicePort) -> tuple[Endpoint, ...]:
        return self.endpoints.get((sp.name_string, sp.protocol), ())


@dataclass(frozen=True)
class LocalDetector:
    """How "traffic from a local pod" is recognised (detect-local-mode)."""

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


# -- names -------------------------------------------------------------------------------------


def _to_port(chain: str, comment: str, proto: str, ip: str, dport: str, target: str) -> tuple[str, ...]:
    """``-A chain -m comment --comment C -m proto -p proto -d ip --dport port -j target``: the
    shape of most per-service rules kube-proxy writes."""
    return (
        "-A",
        chain,
        "-m",
        "comment",
        "--comment",
        comment,
        "-m",
        proto,
        "-p",
        proto,
        "-d",
        ip,
        "--dport",
        dport,
        "-j",
        target,
    )


def _hash16(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """proxier.go portProtoHash: base32(sha256(name + protocol))[:16]."""
    return _hash16(service_port_name + protocol)


def endpoint_chain(sp: ServicePort, ep: Endpoint) -> str:
    """proxier.go servicePortEndpointChainName."""
    return "KUBE-SEP-" + _hash16(sp.name_string + sp.proto + ep.address)


def probability(n: int) -> str:
    """proxier.go computeProbability: ``%0.10f`` of 1/n."""
    return f"{1.0 / n:0.10f}"


# -- from API objects --------------------------------------------------------------------------


def service_ports(svc: Mapping[str, Any]) -> list[ServicePort]:
    """The proxied ports of a Service; ExternalName and headless Services have none."""
    meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
    cluster_ip = str(spec.get("clusterIP") or "")
    if spec.get("type") == "ExternalName" or not cluster_ip or cluster_ip == "None":
        return []
    try:
        family = ipaddress.ip_address(cluster_ip).version
    except ValueError:
        return []
    if family != 4:
        return []  # the lab proxies IPv4 only
    affinity = spec.get("sessionAffinity") == "ClientIP"
    sticky = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get(
        "timeoutSeconds"
    ) or DEFAULT_STICKY_SECONDS
    svc_type = spec.get("type") or "ClusterIP"
    lb_ips: tuple[str, ...] = ()
    if svc_type == "LoadBalancer":
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        lb_ips = tuple(str(i["ip"]) for i in ingress if isinstance(i, dict) and i.get("ip"))
    external_local = spec.get("externalTrafficPolicy") == "Local" and svc_type in ("NodePort", "LoadBalancer")
    out = []
    for p in spec.get("ports") or []:
        out.append(
            ServicePort(
                namespace=str(meta.get("namespace") or "default"),
                name=str(meta.get("name") or ""),
                port_name=str(p.get("name") or ""),
                protocol=str(p.get("protocol") or "TCP"),
                cluster_ip=cluster_ip,
                port=int(p.get("port") or 0),
                node_port=int(p.get("nodePort") or 0) if svc_type in ("NodePort", "LoadBalancer") else 0,
                external_ips=tuple(str(ip) for ip in spec.get("externalIPs") or ()),
                load_balancer_ips=lb_ips,
                load_balancer_source_ranges=tuple(str(r) for r in spec.get("loadBalancerSourceRanges") or ()),
                client_ip_affinity=affinity,
                sticky_seconds=int(sticky),
                external_policy_local=external_local,
                internal_policy_local=spec.get("internalTrafficPolicy") == "Local",
                health_check_node_port=int(spec.get("healthCheckNodePort") or 0) if external_local else 0,
            )
        )
    return out


def slice_endpoints(slices: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str, str], list[Endpoint]]:
    """EndpointSlices → endpoints per (namespace, service, port name, protocol), deduplicated and
    sorted by ``ip:port`` string as the endpoint slice cache does."""
    found: dict[tuple[str, str, str, str], dict[str, Endpoint]] = {}
    for sl in slices:
        meta = sl.get("metadata") or {}
        svc = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not svc or sl.get("addressType", "IPv4") != "IPv4":
            continue
        ns = str(meta.get("namespace") or "default")
        for p in sl.get("ports") or []:
            port = p.get("port")
            if not port:
                continue
            key = (ns, str(svc), str(p.get("name") or ""), str(p.get("protocol") or "TCP"))
            bucket = found.setdefault(key, {})
            for e in sl.get("endpoints") or []:
                addrs = e.get("addresses") or []
                if not addrs:
                    continue
                cond = e.get("conditions") or {}
                ready = cond.get("ready")
                ready = True if ready is None else bool(ready)
                serving = cond.get("serving")
                ep = Endpoint(
                    ip=str(addrs[0]),
                    port=int(port),
                    ready=ready,
                    serving=ready if serving is None else bool(serving),
                    terminating=bool(cond.get("terminating") or False),
                    node_name=str(e.get("nodeName") or ""),
                )
                bucket.setdefault(ep.address, ep)
    return {k: sorted(v.values(), key=lambda ep: ep.address) for k, v in found.items()}


def build_state(services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]]) -> ProxyState:
    by_port = slice_endpoints(slices)
    ports: list[ServicePort] = []
    eps: dict[tuple[str, str], tuple[Endpoint, ...]] = {}
    for svc in services:
        for sp in service_ports(svc):
            ports.append(sp)
            eps[(sp.name_string, sp.protocol)] = tuple(
                by_port.get((sp.namespace, sp.name, sp.port_name, sp.protocol), ())
            )
    ports.sort(key=lambda sp: (sp.name_string, sp.protocol))
    return ProxyState(services=tuple(ports), endpoints=eps)


# -- endpoint selection (pkg/proxy/topology.go CategorizeEndpoints, without topology hints) ------


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


# -- rendering ---------------------------------------------------------------------------------


def _q(text: str) -> str:
    return f'"{text}"'


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, *words: str | Sequence[str]) -> None:
        flat: list[str] = []
        for w in words:
            if isinstance(w, str):
                flat.append(w)
            else:
                flat.extend(w)
        self.lines.append(" ".join(flat))

    def chain(self, name: str) -> None:
        self.lines.append(f":{name} - [0:0]")


def render(state: ProxyState, opts: RenderOptions) -> str:
    """The ``iptables-restore`` input for one full sync (filter then nat, as the real proxier)."""
    filter_chains, filter_rules, nat_chains, nat_rules = _Lines(), _Lines(), _Lines(), _Lines()
    for c in (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL):
        filter_chains.chain(c)
    for c in (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ):
        nat_chains.chain(c)
    mark = opts.masquerade_mark
    nat_rules.write("-A", KUBE_POSTROUTING, "-m", "mark", "!", "--mark", f"{mark}/{mark}", "-j", "RETURN")
    nat_rules.write("-A", KUBE_POSTROUTING, "-j", "MARK", "--xor-mark", mark)
    nat_rules.write(
        "-A",
        KUBE_POSTROUTING,
        "-m",
        "comment",
        "--comment",
        _q("kubernetes service traffic requiring SNAT"),
        "-j",
        "MASQUERADE",
        "--random-fully",
    )
    nat_rules.write("-A", KUBE_MARK_MASQ, "-j", "MARK", "--or-mark", mark)
    if opts.localhost_node_ports:
        filter_chains.chain(KUBE_FIREWALL)
        filter_rules.write(
            "-A",
            KUBE_FIREWALL,
            "-m",
            "comment",
            "--comment",
            _q("block incoming localnet connections"),
            "-d",
            "127.0.0.0/8",
            "!",
            "-s",
            "127.0.0.0/8",
            "-m",
            "conntrack",
            "!",
            "--ctstate",
            "RELATED,ESTABLISHED,DNAT",
            "-j",
            "DROP",
        )

    active: set[str] = set()
    for sp in state.services:
        _render_service(sp, state.endpoints_of(sp), opts, filter_rules, nat_chains, nat_rules, active)

    for chain in sorted(opts.existing_nat_chains - active):
        if chain.startswith(CHAIN_PREFIXES):
            nat_chains.chain(chain)
            nat_rules.write("-X", chain)

    if opts.node_port_ips is None:
        dest: list[str] = ["-m", "addrtype", "--dst-type", "LOCAL"]
        if not opts.localhost_node_ports:
            dest += ["!", "-d", "127.0.0.0/8"]
        nat_rules.write(
            "-A",
            KUBE_SERVICES,
            "-m",
            "comment",
            "--comment",
            _q("kubernetes service nodeports; NOTE: this must be the last rule in this chain"),
            dest,
            "-j",
            KUBE_NODEPORTS,
        )
    else:
        for ip in opts.node_port_ips:
            nat_rules.write(
                "-A",
                KUBE_SERVICES,
                "-m",
                "comment",
                "--comment",
                _q("kubernetes service nodeports; NOTE: this must be the last rule in this chain"),
                "-d",
                ip,
                "-j",
                KUBE_NODEPORTS,
            )
    if not opts.conntrack_tcp_liberal:
        filter_rules.write("-A", KUBE_FORWARD, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
    filter_rules.write(
        "-A",
        KUBE_FORWARD,
        "-m",
        "comment",
        "--comment",
        _q("kubernetes forwarding rules"),
        "-m",
        "mark",
        "--mark",
        f"{mark}/{mark}",
        "-j",
        "ACCEPT",
    )
    filter_rules.write(
        "-A",
        KUBE_FORWARD,
        "-m",
        "comment",
        "--comment",
        _q("kubernetes forwarding conntrack rule"),
        "-m",
        "conntrack",
        "--ctstate",
        "RELATED,ESTABLISHED",
        "-j",
        "ACCEPT",
    )
    out = ["*filter", *filter_chains.lines, *filter_rules.lines, "COMMIT"]
    out += ["*nat", *nat_chains.lines, *nat_rules.lines, "COMMIT"]
    return "\n".join(out) + "\n"


def _render_service(
    sp: ServicePort,
    endpoints: Sequence[Endpoint],
    opts: RenderOptions,
    filter_rules: _Lines,
    nat_chains: _Lines,
    nat_rules: _Lines,
    active: set[str],
) -> None:
    proto, name = sp.proto, sp.name_string
    cluster_eps, local_eps, reachable, has_endpoints = categorize(sp, endpoints, opts.node_name)
    cluster_chain, local_chain = sp.svc_chain, sp.svl_chain
    uses_cluster_chain = bool(cluster_eps)
    uses_local_chain = bool(local_eps)
    internal_chain, has_internal = cluster_chain, has_endpoints
    if sp.internal_policy_local:
        internal_chain = local_chain
        has_internal = has_internal and bool(local_eps)
    external_policy_chain, has_external = cluster_chain, has_endpoints
    if sp.external_policy_local:
        external_policy_chain = local_chain
        has_external = has_external and bool(local_eps)
    ext_chain = sp.ext_chain
    uses_ext = has_endpoints and sp.externally_accessible
    uses_fw = has_endpoints and bool(sp.load_balancer_ips) and bool(sp.load_balancer_source_ranges)
    lb_chain = sp.fw_chain if uses_fw else ext_chain

    int_target = int_comment = ext_target = ext_comment = ""
    if not has_endpoints:
        int_target = ext_target = "REJECT"
        int_comment = ext_comment = _q(f"{name} has no endpoints")
    else:
        if not has_internal:
            int_target, int_comment = "DROP", _q(f"{name} has no local endpoints")
        if not has_external:
            ext_target, ext_comment = "DROP", _q(f"{name} has no local endpoints")

    dport = str(sp.port)
    if has_internal:
        nat_rules.write(
            *_to_port(KUBE_SERVICES, _q(f"{name} cluster IP"), proto, sp.cluster_ip, dport, internal_chain),
        )
    else:
        filter_rules.write(
            *_to_port(KUBE_SERVICES, int_comment, proto, sp.cluster_ip, dport, int_target),
        )
    for ip in sp.external_ips:
        if has_endpoints:
            nat_rules.write(
                *_to_port(KUBE_SERVICES, _q(f"{name} external IP"), proto, ip, dport, ext_chain),
            )
        if not has_external:
            filter_rules.write(
                *_to_port(KUBE_EXTERNAL_SERVICES, ext_comment, proto, ip, dport, ext_target),
            )
    for ip in sp.load_balancer_ips:
        if has_endpoints:
            nat_rules.write(
                *_to_port(KUBE_SERVICES, _q(f"{name} loadbalancer IP"), proto, ip, dport, lb_chain),
            )
        if uses_fw:
            filter_rules.write(
                *_to_port(
                    KUBE_PROXY_FIREWALL,
                    _q(f"{name} traffic not accepted by {sp.fw_chain}"),
                    proto,
                    ip,
                    dport,
                    "DROP",
                ),
            )
    if not has_external:
        for ip in sp.load_balancer_ips:
            filter_rules.write(
                *_to_port(KUBE_EXTERNAL_SERVICES, ext_comment, proto, ip, dport, ext_target),
            )
    if sp.node_port:
        nport = str(sp.node_port)
        if has_endpoints:
            nat_rules.write(
                "-A",
                KUBE_NODEPORTS,
                "-m",
                "comment",
                "--comment",
                name,
                "-m",
                proto,
                "-p",
                proto,
                "--dport",
                nport,
                "-j",
                ext_chain,
            )
        if not has_external:
            filter_rules.write(
                "-A",
                KUBE_EXTERNAL_SERVICES,
                "-m",
                "comment",
                "--comment",
                ext_comment,
                "-m",
                "addrtype",
                "--dst-type",
                "LOCAL",
                "-m",
                proto,
                "-p",
                proto,
                "--dport",
                nport,
                "-j",
                ext_target,
            )
    if sp.health_check_node_port:
        filter_rules.write(
            "-A",
            KUBE_NODEPORTS,
            "-m",
            "comment",
            "--comment",
            _q(f"{name} health check node port"),
            "-m",
            "tcp",
            "-p",
            "tcp",
            "--dport",
            str(sp.health_check_node_port),
            "-j",
            "ACCEPT",
        )

    if has_internal:
        args = [
            "-m",
            "comment",
            "--comment",
            _q(f"{name} cluster IP"),
            "-m",
            proto,
            "-p",
            proto,
            "-d",
            sp.cluster_ip,
            "--dport",
            dport,
        ]
        if opts.masquerade_all:
            nat_rules.write("-A", internal_chain, args, "-j", KUBE_MARK_MASQ)
        elif opts.local_detector.implemented:
            nat_rules.write(
                "-A", internal_chain, args, opts.local_detector.if_not_local, "-j", KUBE_MARK_MASQ
            )

    if uses_ext:
        nat_chains.chain(ext_chain)
        active.add(ext_chain)
        if not sp.external_policy_local:
            nat_rules.write(
                "-A",
                ext_chain,
                "-m",
                "comment",
                "--comment",
                _q(f"masquerade traffic for {name} external destinations"),
                "-j",
                KUBE_MARK_MASQ,
            )
        else:
            if opts.local_detector.implemented:
                nat_rules.write(
                    "-A",
                    ext_chain,
                    "-m",
                    "comment",
                    "--comment",
                    _q(f"pod traffic for {name} external destinations"),
                    opts.local_detector.if_local,
                    "-j",
                    cluster_chain,
                )
            nat_rules.write(
                "-A",
                ext_chain,
                "-m",
                "comment",
                "--comment",
                _q(f"masquerade LOCAL traffic for {name} external destinations"),
                "-m",
                "addrtype",
                "--src-type",
                "LOCAL",
                "-j",
                KUBE_MARK_MASQ,
            )
            nat_rules.write(
                "-A",
                ext_chain,
                "-m",
                "comment",
                "--comment",
                _q(f"route LOCAL traffic for {name} external destinations"),
                "-m",
                "addrtype",
                "--src-type",
                "LOCAL",
                "-j",
                cluster_chain,
            )
        if has_external:
            nat_rules.write("-A", ext_chain, "-j", external_policy_chain)

    if uses_fw:
        fw = sp.fw_chain
        nat_chains.chain(fw)
        active.add(fw)
        base = ["-A", fw, "-m", "comment", "--comment", _q(f"{name} loadbalancer IP")]
        allow_node = False
        for cidr in sp.load_balancer_source_ranges:
            nat_rules.write(base, "-s", cidr, "-j", ext_chain)
            try:
                if opts.node_ip and ipaddress.ip_address(opts.node_ip) in ipaddress.ip_network(
                    cidr, strict=False
                ):
                    allow_node = True
            except ValueError:
                continue
        if allow_node:
            for ip in sp.load_balancer_ips:
                nat_rules.write(base, "-s", ip, "-j", ext_chain)
        nat_rules.write(
            "-A",
            fw,
            "-m",
            "comment",
            "--comment",
            _q(f"other traffic to {name} will be dropped by KUBE-PROXY-FIREWALL"),
        )

    if uses_cluster_chain:
        nat_chains.chain(cluster_chain)
        active.add(cluster_chain)
        _to_endpoints(nat_rules, sp, cluster_chain, cluster_eps)
    if uses_local_chain:
        nat_chains.chain(local_chain)
        active.add(local_chain)
        _to_endpoints(nat_rules, sp, local_chain, local_eps)

    for ep in reachable:
        chain = endpoint_chain(sp, ep)
        nat_chains.chain(chain)
        active.add(chain)
        args = ["-A", chain, "-m", "comment", "--comment", name]
        nat_rules.write(args, "-s", ep.ip, "-j", KUBE_MARK_MASQ)
        if sp.client_ip_affinity:
            args += ["-m", "recent", "--name", chain, "--set"]
        nat_rules.write(args, "-m", proto, "-p", proto, "-j", "DNAT", "--to-destination", ep.address)


def _to_endpoints(nat_rules: _Lines, sp: ServicePort, chain: str, endpoints: Sequence[Endpoint]) -> None:
    """writeServiceToEndpointRules: affinity checks first, then the probability ladder."""
    name = sp.name_string
    if sp.client_ip_affinity:
        for ep in endpoints:
            sep = endpoint_chain(sp, ep)
            nat_rules.write(
                "-A",
                chain,
                "-m",
                "comment",
                "--comment",
                _q(f"{name} -> {ep.address}"),
                "-m",
                "recent",
                "--name",
                sep,
                "--rcheck",
                "--seconds",
                str(sp.sticky_seconds),
                "--reap",
                "-j",
                sep,
            )
    n = len(endpoints)
    for i, ep in enumerate(endpoints):
        args = ["-A", chain, "-m", "comment", "--comment", _q(f"{name} -> {ep.address}")]
        if i < n - 1:
            args += ["-m", "statistic", "--mode", "random", "--probability", probability(n - i)]
        nat_rules.write(args, "-j", endpoint_chain(sp, ep))


# -- applying ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JumpRule:
    table: str
    dst_chain: str
    src_chain: str
    comment: str
    extra: tuple[str, ...] = ()

    def args(self) -> list[str]:
        words = list(self.extra)
        if self.comment:
            words += ["-m", "comment", "--comment", self.comment]
        return [*words, "-j", self.dst_chain]


_NEW = ("-m", "conntrack", "--ctstate", "NEW")
JUMPS = (
    JumpRule(
        "filter", KUBE_EXTERNAL_SERVICES, "INPUT", "kubernetes externally-visible service portals", _NEW
    ),
    JumpRule(
        "filter", KUBE_EXTERNAL_SERVICES, "FORWARD", "kubernetes externally-visible service portals", _NEW
    ),
    JumpRule("filter", KUBE_NODEPORTS, "INPUT", "kubernetes health check service ports"),
    JumpRule("filter", KUBE_SERVICES, "FORWARD", "kubernetes service portals", _NEW),
    JumpRule("filter", KUBE_SERVICES, "OUTPUT", "kubernetes service portals", _NEW),
    JumpRule("filter", KUBE_FORWARD, "FORWARD", "kubernetes forwarding rules"),
    JumpRule("filter", KUBE_PROXY_FIREWALL, "INPUT", "kubernetes load balancer firewall", _NEW),
    JumpRule("filter", KUBE_PROXY_FIREWALL, "OUTPUT", "kubernetes load balancer firewall", _NEW),
    JumpRule("filter", KUBE_PROXY_FIREWALL, "FORWARD", "kubernetes load balancer firewall", _NEW),
    JumpRule("nat", KUBE_SERVICES, "OUTPUT", "kubernetes service portals"),
    JumpRule("nat", KUBE_SERVICES, "PREROUTING", "kubernetes service portals"),
    JumpRule("nat", KUBE_POSTROUTING, "POSTROUTING", "kubernetes postrouting rules"),
    # kubelet's copies (iptablesKubeletJumpChains)
    JumpRule("filter", KUBE_FIREWALL, "INPUT", ""),
    JumpRule("filter", KUBE_FIREWALL, "OUTPUT", ""),
)


class IptablesRunner:
    """iptables in the current network namespace (the node's, for a hostNetwork kube-proxy)."""

    def __init__(
        self, iptables: str = "iptables", restore: str = "iptables-restore", save: str = "iptables-save"
    ) -> None:
        self.iptables, self.restore_bin, self.save_bin = iptables, restore, save

    def ensure_jumps(self) -> None:
        """EnsureChain + EnsureRule(Prepend) for every jump, as a full sync does."""
        for jump in JUMPS:
            exists = run(
                [self.iptables, "-w", "5", "-t", jump.table, "-S", jump.dst_chain],
                timeout=IPTABLES_TIMEOUT,
                check=False,
            )
            if not exists.ok:
                run(
                    [self.iptables, "-w", "5", "-t", jump.table, "-N", jump.dst_chain],
                    timeout=IPTABLES_TIMEOUT,
                )
            check = run(
                [self.iptables, "-w", "5", "-t", jump.table, "-C", jump.src_chain, *jump.args()],
                timeout=IPTABLES_TIMEOUT,
                check=False,
            )
            if not check.ok:
                run(
                    [self.iptables, "-w", "5", "-t", jump.table, "-I", jump.src_chain, *jump.args()],
                    timeout=IPTABLES_TIMEOUT,
                )

    def nat_chains(self) -> frozenset[str]:
        out = run([self.save_bin, "-t", "nat"], timeout=IPTABLES_TIMEOUT).stdout
        return frozenset(line[1:].split()[0] for line in out.splitlines() if line.startswith(":"))

    def restore(self, data: str) -> None:
        run([self.restore_bin, "-w", "5", "--noflush"], timeout=IPTABLES_TIMEOUT, stdin=data)
