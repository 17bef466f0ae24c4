"""What enforcement needs from API objects, as frozen facts parsed from networking.k8s.io/v1 JSON.

Parsing is strict about the fields it reads (a wrong type or value raises :class:`PolicyError`
naming the field), and ignores fields it does not read, so a newer API version still parses.
Defaulting follows the API server (``policyTypes``, ``protocol``), because objects read from a
cluster are already defaulted but test fixtures and raw manifests may not be.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clusters.errors import UsageProblem

Labels = tuple[tuple[str, str], ...]
"""Labels as sorted (key, value) pairs: hashable, so models can be compared cheaply."""


class PolicyError(UsageProblem):
    """An object enforcement cannot read; the message names the object and the field."""


class Protocol(enum.Enum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class PolicyType(enum.Enum):
    INGRESS = "Ingress"
    EGRESS = "Egress"


class Operator(enum.Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    """A metav1.LabelSelector; the empty selector matches everything."""

    match_labels: Labels = ()
    match_expressions: tuple[Requirement, ...] = ()


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Labels = ()


@dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: Protocol = Protocol.TCP
    name: str = ""


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Labels = ()
    ip: ipaddress.IPv4Address | None = None
    node: str = ""
    host_network: bool = False
    ports: tuple[ContainerPort, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def enforceable(self) -> bool:
        """Has its own IPv4 pod IP: hostNetwork pods share the node's and are never policed."""
        return self.ip is not None and not self.host_network

    def named_port(self, name: str, protocol: Protocol) -> int | None:
        for p in self.ports:
            if p.name == name and p.protocol is protocol:
                return p.port
        return None


@dataclass(frozen=True)
class IPBlock:
    cidr: ipaddress.IPv4Network | ipaddress.IPv6Network
    excepts: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


@dataclass(frozen=True)
class Peer:
    """One ``from``/``to`` entry: selectors (None = not set) or an ipBlock, never both."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PolicyPort:
    protocol: Protocol = Protocol.TCP
    port: int | str | None = None
    """None: every port of the protocol; str: a named container port."""
    end_port: int | None = None


@dataclass(frozen=True)
class Rule:
    """Empty ``peers``: every peer; empty ``ports``: every port (the spec's "empty or missing")."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    pod_selector: LabelSelector
    types: frozenset[PolicyType]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Model:
    """Everything one node's rules are computed from; equal models give equal rules."""

    namespaces: tuple[Namespace, ...] = ()
    pods: tuple[Pod, ...] = ()
    policies: tuple[Policy, ...] = ()

    def namespace_labels(self, name: str) -> Labels | None:
        """None when the namespace is unknown (a namespaceSelector then cannot match it)."""
        for ns in self.namespaces:
            if ns.name == name:
                return ns.labels
        return None


# ---- parsing ---------------------------------------------------------------------------------


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PolicyError(f"{where} must be an object, got {type(value).__name__}: fix the manifest")
    return value


def _list(value: Any, where: str) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise PolicyError(f"{where} must be a list, got {type(value).__name__}: fix the manifest")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PolicyError(f"{where} must be a string, got {value!r}: fix the manifest")
    return value


def _labels(value: Any, where: str) -> Labels:
    return tuple(sorted((_str(k, where), _str(v, f"{where}.{k}")) for k, v in _obj(value, where).items()))


def _meta(obj: Mapping[str, Any], kind: str) -> tuple[str, str, Labels]:
    meta = _obj(obj.get("metadata"), f"{kind}.metadata")
    name = _str(meta.get("name"), f"{kind}.metadata.name")
    namespace = meta.get("namespace") or ""
    return _str(namespace, f"{kind} {name} metadata.namespace"), name, _labels(meta.get("labels"), name)


def _protocol(value: Any, where: str) -> Protocol:
    if value is None:
        return Protocol.TCP
    try:
        return Protocol(value)
    except ValueError:
        raise PolicyError(f"{where}: protocol {value!r} is not TCP, UDP or SCTP") from None


def _port_number(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise PolicyError(f"{where}: port {value!r} is not a number in 1-65535")
    return value


def parse_selector(value: Any, where: str) -> LabelSelector:
    sel = _obj(value, where)
    exprs = []
    for i, raw in enumerate(_list(sel.get("matchExpressions"), f"{where}.matchExpressions")):
        at = f"{where}.matchExpressions[{i}]"
        expr = _obj(raw, at)
        try:
            op = Operator(expr.get("operator"))
        except ValueError:
            raise PolicyError(
                f"{at}: operator {expr.get('operator')!r} is not In, NotIn, Exists or DoesNotExist"
            ) from None
        values = tuple(_str(v, f"{at}.values") for v in _list(expr.get("values"), f"{at}.values"))
        if op in (Operator.IN, Operator.NOT_IN) and not values:
            raise PolicyError(f"{at}: operator {op.value} needs at least one value")
        if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
            raise PolicyError(f"{at}: operator {op.value} takes no values")
        exprs.append(Requirement(_str(expr.get("key"), f"{at}.key"), op, values))
    return LabelSelector(_labels(sel.get("matchLabels"), f"{where}.matchLabels"), tuple(exprs))


NAME_LABEL = "kubernetes.io/metadata.name"
"""Set by the API server on every namespace (immutable); policies select namespaces by it."""


def parse_namespace(obj: Mapping[str, Any]) -> Namespace:
    _, name, labels = _meta(obj, "Namespace")
    merged = dict(labels)
    merged[NAME_LABEL] = name
    return Namespace(name, tuple(sorted(merged.items())))


def parse_pod(obj: Mapping[str, Any]) -> Pod:
    """A pod; its IP only while it runs (a finished pod's IP may already belong to another pod)."""
    namespace, name, labels = _meta(obj, "Pod")
    spec = _obj(obj.get("spec"), f"pod {name} spec")
    status = _obj(obj.get("status"), f"pod {name} status")
    ports = []
    for c in _list(spec.get("containers"), f"pod {name} spec.containers"):
        for p in _list(_obj(c, f"pod {name} container").get("ports"), f"pod {name} ports"):
            port = _obj(p, f"pod {name} port")
            ports.append(
                ContainerPort(
                    _port_number(port.get("containerPort"), f"pod {name} containerPort"),
                    _protocol(port.get("protocol"), f"pod {name} port"),
                    str(port.get("name") or ""),
                )
            )
    ip: ipaddress.IPv4Address | None = None
    raw_ip = status.get("podIP")
    if raw_ip and status.get("phase") not in ("Succeeded", "Failed"):
        addr = ipaddress.ip_address(_str(raw_ip, f"pod {name} status.podIP"))
        ip = addr if isinstance(addr, ipaddress.IPv4Address) else None
    return Pod(
        namespace=namespace,
        name=name,
        labels=labels,
        ip=ip,
        node=str(spec.get("nodeName") or ""),
        host_network=bool(spec.get("hostNetwork")),
        ports=tuple(ports),
    )


def _ip_block(value: Any, where: str) -> IPBlock:
    block = _obj(value, where)
    try:
        cidr = ipaddress.ip_network(_str(block.get("cidr"), f"{where}.cidr"), strict=False)
        excepts = tuple(
            ipaddress.ip_network(_str(e, f"{where}.except"), strict=False)
            for e in _list(block.get("except"), f"{where}.except")
        )
    except ValueError as exc:
        raise PolicyError(f"{where}: {exc}") from None
    for e in excepts:
        if e.version != cidr.version or not e.subnet_of(cidr):  # type: ignore[arg-type]
            raise PolicyError(f"{where}: except {e} is not inside cidr {cidr}")
    return IPBlock(cidr, excepts)


def _peer(value: Any, where: str) -> Peer:
    raw = _obj(value, where)
    pods = raw.get("podSelector")
    nss = raw.get("namespaceSelector")
    block = raw.get("ipBlock")
    if block is not None:
        if pods is not None or nss is not None:
            raise PolicyError(f"{where}: ipBlock cannot be combined with podSelector or namespaceSelector")
        return Peer(ip_block=_ip_block(block, f"{where}.ipBlock"))
    if pods is None and nss is None:
        raise PolicyError(f"{where}: set podSelector, namespaceSelector or ipBlock")
    return Peer(
        pod_selector=None if pods is None else parse_selector(pods, f"{where}.podSelector"),
        namespace_selector=None if nss is None else parse_selector(nss, f"{where}.namespaceSelector"),
    )


def _policy_port(value: Any, where: str) -> PolicyPort:
    raw = _obj(value, where)
    protocol = _protocol(raw.get("protocol"), where)
    port = raw.get("port")
    end = raw.get("endPort")
    if port is None:
        if end is not None:
            raise PolicyError(f"{where}: endPort needs port")
        return PolicyPort(protocol)
    if isinstance(port, str):
        if port.isdigit() or not port:
            raise PolicyError(f"{where}: port {port!r} must be a number or a port name")
        if end is not None:
            raise PolicyError(f"{where}: endPort cannot be used with the named port {port!r}")
        return PolicyPort(protocol, port)
    number = _port_number(port, where)
    if end is not None and _port_number(end, f"{where}.endPort") < number:
        raise PolicyError(f"{where}: endPort {end} is below port {number}")
    return PolicyPort(protocol, number, end)


def _rules(value: Any, where: str, peer_key: str) -> tuple[Rule, ...]:
    rules = []
    for i, raw in enumerate(_list(value, where)):
        at = f"{where}[{i}]"
        rule = _obj(raw, at)
        peers = tuple(_peer(p, f"{at}.{peer_key}[{j}]") for j, p in enumerate(_list(rule.get(peer_key), at)))
        ports = tuple(_policy_port(p, f"{at}.ports[{j}]") for j, p in enumerate(_list(rule.get("ports"), at)))
        rules.append(Rule(peers, ports))
    return tuple(rules)


def parse_policy(obj: Mapping[str, Any]) -> Policy:
    namespace, name, _ = _meta(obj, "NetworkPolicy")
    where = f"NetworkPolicy {namespace}/{name}"
    spec = _obj(obj.get("spec"), f"{where} spec")
    if "podSelector" not in spec:
        raise PolicyError(f"{where}: spec.podSelector is required (use {{}} for every pod)")
    raw_types = _list(spec.get("policyTypes"), f"{where} spec.policyTypes")
    types: set[PolicyType] = set()
    for t in raw_types:
        try:
            types.add(PolicyType(t))
        except ValueError:
            raise PolicyError(f"{where}: policyTypes entry {t!r} is not Ingress or Egress") from None
    egress_raw = _list(spec.get("egress"), f"{where} spec.egress")
    if not types:  # the API server's SetDefaults_NetworkPolicy
        types = {PolicyType.INGRESS} | ({PolicyType.EGRESS} if egress_raw else set())
    return Policy(
        namespace=namespace,
        name=name,
        pod_selector=parse_selector(spec.get("podSelector"), f"{where} spec.podSelector"),
        types=frozenset(types),
        ingress=_rules(spec.get("ingress"), f"{where} spec.ingress", "from"),
        egress=_rules(egress_raw, f"{where} spec.egress", "to"),
    )
