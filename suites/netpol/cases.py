"""The upstream NetworkPolicy case set, in our own words, as data over the x/y/z x a/b/c model.

Each :class:`Case` is a name and the policies it applies, written with the small builders below in
the MODEL's names (namespace ``x``, labels ``ns=x``, ``pod=a``), so a case reads like the spec.
:func:`materialize` turns them into cluster objects: the run's namespace names, the run labels,
and the two things only the live cluster knows, written as placeholders:

* ``POD_RANGE`` in an ipBlock cidr: the smallest network holding every model pod IP;
* ``pod_ip("y/b")``: that pod's address as a /32 (/128 for IPv6);
* ``ns_name("y")`` in a label value: the cluster's name of model namespace ``y`` (for selectors on
  ``kubernetes.io/metadata.name``, which the API server sets).

Expected tables come from the oracle on the live objects. Some cases also carry a hand-written
expectation (:attr:`Case.hand`), built the upstream way from an all-allowed table with wildcard
edits, so the oracle itself is checked against a person's reading of the spec on every run.
Loopback cells are left to the oracle (CNIs differ there; comparisons ignore them).
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clusters.errors import UsageProblem
from clusters.labels import run_labels
from suites.netpol.model import Model
from suites.truthtable import Peer, PortProtocol, TruthTable

Policy = dict[str, Any]
Hand = Callable[[PortProtocol, TruthTable], TruthTable]
"""(port/protocol, the all-allowed table over model keys) -> the expected table."""

POD_RANGE = "<pod-range>"
_IP = "<ip:"
_NS = "<ns:"
EVERYONE = Peer()


# ---- builders --------------------------------------------------------------------------------


def pod_ip(key: str) -> str:
    """Placeholder for model pod ``key``'s address as a host CIDR (an ipBlock cidr or except)."""
    return f"{_IP}{key}>"


def ns_name(namespace: str) -> str:
    """Placeholder for the cluster's name of model namespace ``namespace``."""
    return f"{_NS}{namespace}>"


def labels(**match: str) -> dict[str, Any]:
    """A matchLabels selector (``labels()`` is the empty selector: everything)."""
    return {"matchLabels": dict(match)} if match else {}


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    """One matchExpressions requirement."""
    out: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        out["values"] = list(values)
    return out


def exprs(*requirements: dict[str, Any]) -> dict[str, Any]:
    return {"matchExpressions": list(requirements)}


def pods(selector: dict[str, Any]) -> dict[str, Any]:
    """Peer: pods of the policy's own namespace."""
    return {"podSelector": selector}


def namespaces(selector: dict[str, Any]) -> dict[str, Any]:
    """Peer: every pod of the selected namespaces."""
    return {"namespaceSelector": selector}


def pods_in(namespace_selector: dict[str, Any], pod_selector: dict[str, Any]) -> dict[str, Any]:
    """Peer: both selectors in ONE peer, i.e. pods matching both (AND)."""
    return {"namespaceSelector": namespace_selector, "podSelector": pod_selector}


def the_pod(key: str) -> dict[str, Any]:
    """Peer: exactly model pod ``ns/pod`` (namespace and pod selector in one peer)."""
    namespace, _, name = key.partition("/")
    return pods_in(labels(ns=namespace), labels(pod=name))


def ip_block(cidr: str, *excepts: str) -> dict[str, Any]:
    block: dict[str, Any] = {"cidr": cidr}
    if excepts:
        block["except"] = list(excepts)
    return {"ipBlock": block}


def port(number: int | str, protocol: str = "TCP", end: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": protocol, "port": number}
    if end is not None:
        out["endPort"] = end
    return out


def any_port(protocol: str) -> dict[str, Any]:
    """Every port of ``protocol``."""
    return {"protocol": protocol}


def rule(
    direction: str, peers: Sequence[dict[str, Any]] | None, ports: Sequence[dict[str, Any]] | None
) -> Policy:
    out: Policy = {}
    if peers is not None:
        out["from" if direction == "Ingress" else "to"] = list(peers)
    if ports is not None:
        out["ports"] = list(ports)
    return out


def allow_from(*peers: dict[str, Any], ports: Sequence[dict[str, Any]] | None = None) -> Policy:
    """An ingress rule; no peers = from everyone."""
    return rule("Ingress", peers or None, ports)


def allow_to(*peers: dict[str, Any], ports: Sequence[dict[str, Any]] | None = None) -> Policy:
    """An egress rule; no peers = to everyone."""
    return rule("Egress", peers or None, ports)


def policy(
    namespace: str,
    name: str,
    selector: dict[str, Any] | None = None,
    *,
    ingress: Sequence[Policy] | None = None,
    egress: Sequence[Policy] | None = None,
    types: Sequence[str] | None = None,
) -> Policy:
    """A NetworkPolicy in model namespace ``namespace``; omitted lists stay omitted (defaulting)."""
    spec: dict[str, Any] = {"podSelector": selector or {}}
    if ingress is not None:
        spec["ingress"] = list(ingress)
    if egress is not None:
        spec["egress"] = list(egress)
    if types is not None:
        spec["policyTypes"] = list(types)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def deny_all_ingress(namespace: str) -> Policy:
    return policy(namespace, f"deny-all-ingress-{namespace}", types=["Ingress"])


def deny_all_egress(namespace: str) -> Policy:
    return policy(namespace, f"deny-all-egress-{namespace}", types=["Egress"])


DNS_PORTS = (port(53, "UDP"), port(53, "TCP"))


def allow_dns() -> Policy:
    """An egress rule to the cluster DNS pods (kube-dns in kube-system, as kubeadm and kind label them)."""
    return allow_to(
        pods_in(labels(**{"kubernetes.io/metadata.name": "kube-system"}), labels(**{"k8s-app": "kube-dns"})),
        ports=DNS_PORTS,
    )


# ---- materializing ---------------------------------------------------------------------------


def pod_range(ips: Sequence[str]) -> str:
    """The smallest network holding every address of ``ips`` (one IP family)."""
    addrs = [ipaddress.ip_address(ip) for ip in ips if ip]
    if not addrs or len({a.version for a in addrs}) != 1:
        raise UsageProblem("the model's pods need addresses of one IP family for an ipBlock case")
    bits = addrs[0].max_prefixlen
    for prefix in range(bits, -1, -1):
        net = ipaddress.ip_network(f"{addrs[0]}/{prefix}", strict=False)
        if all(a in net for a in addrs):
            return str(net)
    raise AssertionError("unreachable: /0 holds every address")


def _host(ip: str) -> str:
    return str(ipaddress.ip_network(ip))


def _resolve(text: str, model: Model, pod_ips: Mapping[str, str]) -> str:
    if text == POD_RANGE:
        return pod_range([pod_ips[k] for k in model.pod_keys()])
    if text.startswith(_IP) and text.endswith(">"):
        key = text[len(_IP) : -1]
        if key not in pod_ips:
            raise UsageProblem(f"placeholder {text}: no model pod {key!r}; pods are {', '.join(pod_ips)}")
        return _host(pod_ips[key])
    if text.startswith(_NS) and text.endswith(">"):
        return model.ns_name(text[len(_NS) : -1])
    return text


def _walk(value: Any, model: Model, pod_ips: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _resolve(value, model, pod_ips)
    if isinstance(value, list):
        return [_walk(v, model, pod_ips) for v in value]
    if isinstance(value, dict):
        return {k: _walk(v, model, pod_ips) for k, v in value.items()}
    return value


def materialize(pol: Policy, model: Model, pod_ips: Mapping[str, str]) -> Policy:
    """A model policy -> the object to create: cluster namespace, run labels, placeholders resolved."""
    out: Policy = _walk(copy.deepcopy(pol), model, pod_ips)
    meta = out.setdefault("metadata", {})
    namespace = str(meta.get("namespace") or "")
    if namespace not in model.namespaces:
        raise UsageProblem(
            f"policy {meta.get('name')!r}: namespace {namespace!r} is not a model namespace "
            f"({', '.join(model.namespaces)})"
        )
    meta["namespace"] = model.ns_name(namespace)
    meta["labels"] = {**(meta.get("labels") or {}), **run_labels(model.run_id)}
    return out


# ---- the cases -------------------------------------------------------------------------------


TCP80 = PortProtocol(80, "TCP")
UDP81 = PortProtocol(81, "UDP")
DEFAULT_PROBES = (TCP80, UDP81)
"""What a case probes unless it is about ports: both ports and both protocols in two tables (81
pairs x 2), half a full sweep. Port cases probe every port/protocol of the model."""


@dataclass(frozen=True)
class Case:
    name: str
    policies: tuple[Policy, ...]
    hand: Hand | None = field(default=None, compare=False)
    """A hand-written expectation to hold the oracle to, when the case has one."""
    about: str = ""
    probes: tuple[PortProtocol, ...] | None = DEFAULT_PROBES
    """The port/protocols to probe; None = every one the model serves."""


def _nothing_into(namespace: str) -> Hand:
    return lambda _pp, t: t.where(EVERYONE, namespace, False)


CASES: tuple[Case, ...] = (
    Case(
        "deny-all-ingress",
        (deny_all_ingress("x"),),
        _nothing_into("x"),
        "an empty podSelector with policyTypes [Ingress] and no rules isolates every pod of x",
    ),
    Case(
        "deny-all-egress",
        (deny_all_egress("x"),),
        lambda _pp, t: t.where("x", EVERYONE, False),
        "policyTypes [Egress] without rules: x reaches nobody",
    ),
    Case(
        "allow-all-ingress",
        (deny_all_ingress("x"), policy("x", "allow-all", ingress=[allow_from()])),
        lambda _pp, t: t,
        "a rule without from/ports admits everything, and rules are a union with the deny-all",
    ),
    Case(
        "allow-from-same-namespace",
        (policy("x", "same-ns", ingress=[allow_from(pods(labels()))]),),
        lambda _pp, t: t.where(EVERYONE, "x", False).where("x", "x", True),
        "podSelector {} as a peer means every pod of the POLICY's namespace",
    ),
    Case(
        "allow-from-namespace-by-label",
        (policy("x", "from-y", ingress=[allow_from(namespaces(labels(ns="y")))]),),
        lambda _pp, t: t.where(EVERYONE, "x", False).where("y", "x", True),
    ),
    Case(
        "allow-from-namespace-by-name",
        (
            policy(
                "x",
                "from-z-by-name",
                ingress=[allow_from(namespaces(labels(**{"kubernetes.io/metadata.name": ns_name("z")})))],
            ),
        ),
        about="the API server's kubernetes.io/metadata.name label selects a namespace by name",
    ),
    Case(
        "pod-and-namespace-selector-in-one-peer",
        (policy("x", "and", labels(pod="a"), ingress=[allow_from(the_pod("y/b"))]),),
        lambda _pp, t: t.where(EVERYONE, "x/a", False).set("y/b", "x/a", True),
        "both selectors in one peer: only y/b",
    ),
    Case(
        "pod-or-namespace-selector-as-two-peers",
        (
            policy(
                "x",
                "or",
                labels(pod="a"),
                ingress=[allow_from(namespaces(labels(ns="y")), pods(labels(pod="b")))],
            ),
        ),
        lambda _pp, t: t.where(EVERYONE, "x/a", False).where("y", "x/a", True).set("x/b", "x/a", True),
        "two peers: all of y, or b of x",
    ),
    Case(
        "match-expressions-in",
        (
            policy(
                "x",
                "in",
                exprs(expr("pod", "In", "a", "b")),
                ingress=[allow_from(pods_in(labels(), exprs(expr("pod", "In", "c"))))],
            ),
        ),
        lambda _pp, t: (
            t.where(EVERYONE, "x/a", False)
            .where(EVERYONE, "x/b", False)
            .where(Peer(pod="c"), "x/a", True)
            .where(Peer(pod="c"), "x/b", True)
        ),
    ),
    Case(
        "match-expressions-not-in",
        (policy("y", "not-in", ingress=[allow_from(namespaces(exprs(expr("ns", "NotIn", "x", "y"))))]),),
        lambda _pp, t: t.where(EVERYONE, "y", False).where("z", "y", True),
    ),
    Case(
        "match-expressions-exists",
        (
            policy(
                "z",
                "exists",
                exprs(expr("pod", "Exists")),
                ingress=[allow_from(pods_in(exprs(expr("ns", "Exists")), exprs(expr("pod", "NotIn", "a"))))],
            ),
        ),
    ),
    Case(
        "named-port",
        (policy("x", "named", ingress=[allow_from(ports=[port("serve-81-tcp")])]),),
        lambda pp, t: t if pp == PortProtocol(81, "TCP") else t.where(EVERYONE, "x", False),
        "a named port resolves against the destination pod's container ports",
        probes=None,
    ),
    Case(
        "numbered-port-only",
        (policy("x", "port-80", ingress=[allow_from(namespaces(labels()), ports=[port(80)])]),),
        lambda pp, t: t if pp == PortProtocol(80, "TCP") else t.where(EVERYONE, "x", False),
        "port 80/TCP admitted; 81 and every UDP port blocked",
        probes=None,
    ),
    Case(
        "end-port-range",
        (policy("x", "range", ingress=[allow_from(ports=[port(75, "TCP", end=80)])]),),
        lambda pp, t: t if pp == PortProtocol(80, "TCP") else t.where(EVERYONE, "x", False),
        "port..endPort is inclusive: 75-80 admits 80, not 81",
        probes=None,
    ),
    Case(
        "udp-only",
        (policy("y", "udp", ingress=[allow_from(ports=[any_port("UDP")])]),),
        lambda pp, t: t if pp.protocol == "UDP" else t.where(EVERYONE, "y", False),
        probes=None,
    ),
    Case(
        "ip-block-with-except",
        (policy("x", "cidr", ingress=[allow_from(ip_block(POD_RANGE, pod_ip("y/b")))]),),
        lambda _pp, t: t.set("y/b", "x/a", False).set("y/b", "x/b", False).set("y/b", "x/c", False),
        "ipBlock over every pod address except y/b's",
    ),
    Case(
        "egress-to-one-pod-and-dns",
        (
            policy(
                "x",
                "egress-b",
                labels(pod="a"),
                types=["Egress"],
                egress=[allow_to(the_pod("y/b")), allow_dns()],
            ),
        ),
        lambda _pp, t: t.where("x/a", EVERYONE, False).set("x/a", "y/b", True),
        "x/a may reach y/b on any port, and the cluster DNS on 53; nothing else",
    ),
    Case(
        "ingress-and-egress-types-with-only-ingress-rules",
        (policy("y", "both", types=["Ingress", "Egress"], ingress=[allow_from(namespaces(labels()))]),),
        lambda _pp, t: t.where("y", EVERYONE, False),
        "policyTypes [Ingress, Egress] with only ingress rules denies all egress of y",
    ),
    Case(
        "multiple-policies-union",
        (
            policy("x", "from-y", labels(pod="a"), ingress=[allow_from(namespaces(labels(ns="y")))]),
            policy("x", "from-z-c", labels(pod="a"), ingress=[allow_from(the_pod("z/c"))]),
        ),
        lambda _pp, t: t.where(EVERYONE, "x/a", False).where("y", "x/a", True).set("z/c", "x/a", True),
    ),
    Case(
        "deny-all-then-allow-one-pair",
        (
            deny_all_ingress("x"),
            deny_all_ingress("y"),
            deny_all_ingress("z"),
            policy("x", "z-c-to-x-a", labels(pod="a"), ingress=[allow_from(the_pod("z/c"))]),
        ),
        lambda _pp, t: t.where(EVERYONE, EVERYONE, False).set("z/c", "x/a", True),
    ),
)


def case_ids() -> list[str]:
    return [c.name for c in CASES]
