"""The NetworkPolicy oracle: which pod may reach which, computed from the spec and nothing else.

It is the check on every enforcer, the lab's included, so it imports nothing from ``clusters`` but
the error type: namespaces, pods and policies come in as data (policies as the plain dicts the API
returns, ``networking.k8s.io/v1``), and the answer is what the Kubernetes API reference and the
NetworkPolicy concept page promise:

* a pod is isolated for a direction when some policy in its namespace selects it with that policy
  type; ``policyTypes`` defaults to Ingress, plus Egress when ``spec.egress`` is non-empty (the API
  server's defaulting);
* an isolated pod accepts only what the union of its selecting policies' rules allows; traffic
  needs both the source's egress and the destination's ingress to allow it;
* a rule without ``from``/``to`` (or with an empty list) matches every peer; without ``ports``
  every port; a peer with podSelector alone means the policy's namespace, namespaceSelector alone
  means every pod there, both in one peer means AND; ipBlock matches the pod IP (cidr minus
  except), as the upstream tests treat it;
* ports: protocol defaults to TCP; a number, a number..endPort range, or a name resolved against
  the destination pod's container ports (for ingress and for egress alike);
* traffic from a pod to itself is allowed (``allow_loopback``, upstream's AllowLoopback: "a pod
  cannot block access to itself"; CNIs differ in practice, so comparisons usually ignore it).

What it does not model: node and host-network traffic (always allowed from the pod's own node),
Services (policies see the pod after DNAT), and reply traffic (always allowed).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clusters.errors import UsageProblem
from suites.truthtable import TruthTable


class Direction(enum.StrEnum):
    INGRESS = "Ingress"
    EGRESS = "Egress"


# ---- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamespaceInfo:
    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: str
    ports: Mapping[str, tuple[int, str]]
    """Named container ports: name -> (containerPort, protocol)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


# ---- label selectors -------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@dataclass(frozen=True)
class Selector:
    """A LabelSelector: matchLabels AND matchExpressions; the empty selector matches everything."""

    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def parse_selector(raw: Mapping[str, Any] | None, where: str) -> Selector:
    raw = raw or {}
    reqs = [Requirement(str(k), "In", frozenset({str(v)})) for k, v in (raw.get("matchLabels") or {}).items()]
    for expr in raw.get("matchExpressions") or []:
        op = str(expr.get("operator", ""))
        if op not in _OPERATORS:
            raise UsageProblem(
                f"{where}: matchExpressions operator {op!r} is not one of {', '.join(_OPERATORS)}"
            )
        values = frozenset(str(v) for v in expr.get("values") or [])
        if op in ("In", "NotIn") and not values:
            raise UsageProblem(f"{where}: operator {op} needs a non-empty values list")
        if op in ("Exists", "DoesNotExist") and values:
            raise UsageProblem(f"{where}: operator {op} must not have values")
        reqs.append(Requirement(str(expr["key"]), op, values))
    return Selector(tuple(reqs))


# ---- policies --------------------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class IPBlock:
    cidr: Network
    excepts: tuple[Network, ...]

    def matches(self, ip: str) -> bool:
        if not ip:
            return False
        addr = ipaddress.ip_address(ip)
        if addr.version != self.cidr.version or addr not in self.cidr:
            return False
        return not any(addr in e for e in self.excepts if e.version == addr.version)


@dataclass(frozen=True)
class PolicyPeer:
    pod_selector: Selector | None
    namespace_selector: Selector | None
    ip_block: IPBlock | None


@dataclass(frozen=True)
class PolicyPort:
    protocol: str
    port: int | str | None
    """None = every port of ``protocol``; a str is a named port."""
    end_port: int | None


@dataclass(frozen=True)
class Rule:
    peers: tuple[PolicyPeer, ...] | None
    """None = every peer (``from``/``to`` absent or empty)."""
    ports: tuple[PolicyPort, ...] | None
    """None = every port and protocol."""


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    pod_selector: Selector
    types: frozenset[Direction]
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...]

    def rules(self, direction: Direction) -> tuple[Rule, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress


def _network(text: str, where: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise UsageProblem(f"{where}: {text!r} is not a CIDR (write e.g. 10.0.0.0/8)") from None


def _peer(raw: Mapping[str, Any], where: str) -> PolicyPeer:
    block = raw.get("ipBlock")
    pods, namespaces = raw.get("podSelector"), raw.get("namespaceSelector")
    if block is not None:
        if pods is not None or namespaces is not None:
            raise UsageProblem(
                f"{where}: ipBlock cannot be combined with a selector in one peer; use two peers"
            )
        cidr = _network(str(block["cidr"]), where)
        excepts = tuple(_network(str(e), where) for e in block.get("except") or [])
        for e in excepts:
            if e.version != cidr.version or not e.subnet_of(cidr):  # type: ignore[arg-type]
                raise UsageProblem(f"{where}: except {e} is not inside cidr {cidr}")
        return PolicyPeer(None, None, IPBlock(cidr, excepts))
    if pods is None and namespaces is None:
        raise UsageProblem(f"{where}: a peer needs podSelector, namespaceSelector or ipBlock")
    return PolicyPeer(
        parse_selector(pods, where) if pods is not None else None,
        parse_selector(namespaces, where) if namespaces is not None else None,
        None,
    )


def _port(raw: Mapping[str, Any], where: str) -> PolicyPort:
    protocol = str(raw.get("protocol") or "TCP")
    port = raw.get("port")
    end = raw.get("endPort")
    if end is not None and not isinstance(port, int):
        raise UsageProblem(f"{where}: endPort needs a numeric port")
    if end is not None and int(end) < int(port):  # type: ignore[arg-type]
        raise UsageProblem(f"{where}: endPort {end} is below port {port}")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    return PolicyPort(protocol, port, int(end) if end is not None else None)


def _rule(raw: Mapping[str, Any], peer_key: str, where: str) -> Rule:
    peers = raw.get(peer_key) or []
    ports = raw.get("ports") or []
    return Rule(
        tuple(_peer(p, f"{where}.{peer_key}[{i}]") for i, p in enumerate(peers)) or None,
        tuple(_port(p, f"{where}.ports[{i}]") for i, p in enumerate(ports)) or None,
    )


def parse_policy(raw: Mapping[str, Any]) -> Policy:
    """A NetworkPolicy dict -> :class:`Policy`, with the API server's policyTypes defaulting."""
    meta = raw.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "?")
    where = f"NetworkPolicy {namespace}/{name}"
    if not namespace:
        raise UsageProblem(
            f"{where}: metadata.namespace is required for the oracle (policies are namespaced)"
        )
    spec = raw.get("spec") or {}
    ingress = spec.get("ingress") or []
    egress = spec.get("egress") or []
    raw_types = spec.get("policyTypes") or []
    if raw_types:
        try:
            types = frozenset(Direction(str(t)) for t in raw_types)
        except ValueError:
            raise UsageProblem(
                f"{where}: policyTypes must be Ingress and/or Egress, got {raw_types}"
            ) from None
    else:
        types = frozenset({Direction.INGRESS, *([Direction.EGRESS] if egress else [])})
    return Policy(
        namespace,
        name,
        parse_selector(spec.get("podSelector"), f"{where}.spec.podSelector"),
        types,
        tuple(_rule(r, "from", f"{where}.spec.ingress[{i}]") for i, r in enumerate(ingress)),
        tuple(_rule(r, "to", f"{where}.spec.egress[{i}]") for i, r in enumerate(egress)),
    )


# ---- the oracle ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


class Oracle:
    """Answers "may ``src`` reach ``dst`` on port/protocol?" for one set of namespaces, pods, policies."""

    def __init__(
        self,
        namespaces: Iterable[NamespaceInfo],
        pods: Iterable[PodInfo],
        policies: Iterable[Mapping[str, Any] | Policy],
        *,
        allow_loopback: bool = True,
    ) -> None:
        self.namespaces = {ns.name: ns for ns in namespaces}
        self.pods = {p.key: p for p in pods}
        self.policies = tuple(p if isinstance(p, Policy) else parse_policy(p) for p in policies)
        self.allow_loopback = allow_loopback
        for pod in self.pods.values():
            if pod.namespace not in self.namespaces:
                raise UsageProblem(
                    f"pod {pod.key}: namespace {pod.namespace} is not in the oracle's namespaces"
                )

    def pod(self, key: str | PodInfo) -> PodInfo:
        if isinstance(key, PodInfo):
            return key
        try:
            return self.pods[key]
        except KeyError:
            raise UsageProblem(
                f"unknown pod {key!r}; the oracle knows {', '.join(sorted(self.pods))}"
            ) from None

    def selecting(self, pod: str | PodInfo, direction: Direction) -> list[Policy]:
        """Policies that select ``pod`` for ``direction`` (non-empty = isolated)."""
        p = self.pod(pod)
        return [
            pol
            for pol in self.policies
            if pol.namespace == p.namespace and direction in pol.types and pol.pod_selector.matches(p.labels)
        ]

    def isolated(self, pod: str | PodInfo, direction: Direction) -> bool:
        return bool(self.selecting(pod, direction))

    def _peer_matches(self, peer: PolicyPeer, policy_ns: str, other: PodInfo) -> bool:
        if peer.ip_block is not None:
            return peer.ip_block.matches(other.ip)
        if peer.namespace_selector is None:
            ns_ok = other.namespace == policy_ns
        else:
            ns_labels = self.namespaces[other.namespace].labels
            ns_ok = peer.namespace_selector.matches(ns_labels)
        if not ns_ok:
            return False
        return peer.pod_selector is None or peer.pod_selector.matches(other.labels)

    @staticmethod
    def _port_matches(rule_port: PolicyPort, dst: PodInfo, port: int, protocol: str) -> bool:
        if rule_port.protocol != protocol:
            return False
        if rule_port.port is None:
            return True
        if isinstance(rule_port.port, str):
            named = dst.ports.get(rule_port.port)
            return named is not None and named == (port, protocol)
        if rule_port.end_port is not None:
            return rule_port.port <= port <= rule_port.end_port
        return rule_port.port == port

    def _rule_allows(
        self, rule: Rule, policy_ns: str, peer: PodInfo, dst: PodInfo, port: int, protocol: str
    ) -> bool:
        peer_ok = rule.peers is None or any(self._peer_matches(p, policy_ns, peer) for p in rule.peers)
        port_ok = rule.ports is None or any(self._port_matches(p, dst, port, protocol) for p in rule.ports)
        return peer_ok and port_ok

    def _side(
        self, direction: Direction, src: PodInfo, dst: PodInfo, port: int, protocol: str
    ) -> tuple[bool, str]:
        subject, peer = (dst, src) if direction is Direction.INGRESS else (src, dst)
        policies = self.selecting(subject, direction)
        if not policies:
            return True, f"{subject.key} is not isolated for {direction.value.lower()}"
        for pol in policies:
            for i, rule in enumerate(pol.rules(direction)):
                if self._rule_allows(rule, pol.namespace, peer, dst, port, protocol):
                    return True, f"{pol.namespace}/{pol.name} {direction.value.lower()}[{i}] allows it"
        names = ", ".join(f"{p.namespace}/{p.name}" for p in policies)
        return False, f"{subject.key} is {direction.value.lower()}-isolated by {names} and no rule allows it"

    def decide(self, src: str | PodInfo, dst: str | PodInfo, port: int, protocol: str = "TCP") -> Decision:
        s, d = self.pod(src), self.pod(dst)
        if self.allow_loopback and s.key == d.key:
            return Decision(True, "a pod may always reach itself (loopback)")
        egress_ok, egress_why = self._side(Direction.EGRESS, s, d, port, protocol)
        ingress_ok, ingress_why = self._side(Direction.INGRESS, s, d, port, protocol)
        if egress_ok and ingress_ok:
            return Decision(True, f"{egress_why}; {ingress_why}")
        return Decision(False, egress_why if not egress_ok else ingress_why)

    def allowed(self, src: str | PodInfo, dst: str | PodInfo, port: int, protocol: str = "TCP") -> bool:
        return self.decide(src, dst, port, protocol).allowed

    def table(
        self,
        port: int,
        protocol: str = "TCP",
        froms: Sequence[str] | None = None,
        tos: Sequence[str] | None = None,
    ) -> TruthTable:
        """The expected truth table on ``port``/``protocol`` (default: every pod to every pod)."""
        keys = list(self.pods)
        return TruthTable.from_function(
            froms or keys, tos or keys, lambda s, d: self.allowed(s, d, port, protocol)
        )
