"""One node's NetworkPolicy enforcement as ``iptables-restore`` text for the ``filter`` table.

Where packets are checked (all in FORWARD of the NODE's network namespace):

- pod↔pod on the same node is bridged on ``cni0``; with ``bridge-nf-call-iptables=1`` (the
  underlay sets it per node netns) bridged IPv4 frames traverse FORWARD — verified in a netns;
  with it at 0 they bypass iptables and same-node policy fails open, exactly as on a real node;
- traffic to or from other nodes is routed through the node, so it traverses FORWARD too;
- traffic the node itself originates (kubelet probes, the API server's pod proxy on the
  control plane) leaves through OUTPUT and is never checked, as Calico and Cilium allow
  host→local pod by default; traffic from a pod to its own node's addresses goes to INPUT and is
  not checked either (a documented lab difference: Calico applies egress policy there too).

Chain layout (every chain is ``KNP-*``; nothing else is flushed):

``FORWARD -j KNP-FORWARD`` (first rule) → replies (``ESTABLISHED,RELATED``) leave unchecked →
``KNP-EGRESS`` dispatches by source IP to ``KNP-EGR-<hash>`` of each egress-isolated local pod →
``KNP-INGRESS`` dispatches by destination IP to ``KNP-ING-<hash>`` of each ingress-isolated
local pod. A pod chain RETURNs what a policy allows and DROPs the rest (Calico, Cilium and
kube-network-policies drop, so clients see a timeout). Allowed packets RETURN to FORWARD rather
than ACCEPT, so both directions are checked and kube-proxy's own FORWARD rules still apply.

An ipBlock's ``except`` list is rendered as the CIDR minus the excepts (a set of smaller CIDRs)
instead of "RETURN for excepts, then ACCEPT": with RETURN meaning "allowed" there is no
per-peer "skip" verdict without marks, and the difference is exact.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from clusters.lab.netpol.model import (
    Model,
    Peer,
    Pod,
    Policy,
    PolicyPort,
    PolicyType,
    Rule,
)
from clusters.lab.netpol.selectors import matches

PREFIX = "KNP-"
FORWARD = "KNP-FORWARD"
INGRESS = "KNP-INGRESS"
EGRESS = "KNP-EGRESS"
JUMP = "-j KNP-FORWARD"

Net = ipaddress.IPv4Network


@dataclass(frozen=True)
class Ruleset:
    """Chains in the order they are written; each rule is the text after ``-A <chain>``."""

    chains: tuple[tuple[str, tuple[str, ...]], ...]

    def names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.chains)


def pod_chain(kind: str, pod: Pod) -> str:
    """``KNP-ING-``/``KNP-EGR-`` + 16 hex of the pod's key: fits iptables' 28-character names."""
    digest = hashlib.sha256(pod.key.encode()).hexdigest()[:16].upper()
    return f"{PREFIX}{kind}-{digest}"


def _host(ip: ipaddress.IPv4Address) -> Net:
    return ipaddress.IPv4Network(ip)


def _peer_pods(model: Model, policy: Policy, peer: Peer) -> list[Pod]:
    """Pods a selector peer selects: same namespace without namespaceSelector, AND of both."""
    if peer.namespace_selector is None:
        namespaces = {policy.namespace}
    else:
        sel = peer.namespace_selector
        namespaces = {ns.name for ns in model.namespaces if matches(sel, ns.labels)}
    return [
        pod
        for pod in model.pods
        if pod.enforceable
        and pod.namespace in namespaces
        and (peer.pod_selector is None or matches(peer.pod_selector, pod.labels))
    ]


def _ip_block_nets(peer: Peer) -> list[Net]:
    """The block minus its excepts, IPv4 only (the lab's pod network is IPv4)."""
    block = peer.ip_block
    if block is None or not isinstance(block.cidr, ipaddress.IPv4Network):
        return []
    nets = [block.cidr]
    for exc in block.excepts:
        if not isinstance(exc, ipaddress.IPv4Network):
            continue
        remaining: list[Net] = []
        for net in nets:
            if exc.supernet_of(net):
                continue
            remaining.extend(net.address_exclude(exc) if exc.subnet_of(net) else [net])
        nets = remaining
    return sorted(nets)


def _peer_nets(model: Model, policy: Policy, rule: Rule) -> list[Net] | None:
    """Addresses a rule's peers cover; None when the rule has no peers (everything)."""
    if not rule.peers:
        return None
    nets: list[Net] = []
    for peer in rule.peers:
        if peer.ip_block is not None:
            nets.extend(_ip_block_nets(peer))
        else:
            nets.extend(_host(p.ip) for p in _peer_pods(model, policy, peer) if p.ip is not None)
    return list(dict.fromkeys(nets))


def _proto_match(port: PolicyPort, number: int | None) -> str:
    proto = port.protocol.value.lower()
    if number is None:
        return f"-p {proto}"
    dport = f"{number}:{port.end_port}" if port.end_port is not None else str(number)
    return f"-p {proto} -m {proto} --dport {dport}"


def _comment(policy: Policy, kind: str, index: int) -> str:
    return f'-m comment --comment "{policy.key} {kind}[{index}]"'


def _ingress_lines(model: Model, pod: Pod, policy: Policy, index: int, rule: Rule) -> Iterator[str]:
    nets = _peer_nets(model, policy, rule)
    sources: Sequence[str] = [""] if nets is None else [f"-s {n} " for n in nets]
    matches_: list[str] = []
    for port in rule.ports or (None,):
        if port is None:
            matches_.append("")
        elif isinstance(port.port, str):  # a named port resolves on the destination: this pod
            number = pod.named_port(port.port, port.protocol)
            if number is not None:
                matches_.append(_proto_match(port, number) + " ")
        else:
            matches_.append(_proto_match(port, port.port) + " ")
    comment = _comment(policy, "ingress", index)
    for src in sources:
        for m in matches_:
            yield f"{src}{m}{comment} -j RETURN"


def _egress_lines(model: Model, pod: Pod, policy: Policy, index: int, rule: Rule) -> Iterator[str]:
    nets = _peer_nets(model, policy, rule)
    comment = _comment(policy, "egress", index)
    for port in rule.ports or (None,):
        if port is not None and isinstance(port.port, str):
            # A named port means each destination pod's own number: one rule per such pod.
            for dest in model.pods:
                if not dest.enforceable or dest.ip is None:
                    continue
                if nets is not None and not any(dest.ip in n for n in nets):
                    continue
                number = dest.named_port(port.port, port.protocol)
                if number is not None:
                    yield f"-d {_host(dest.ip)} {_proto_match(port, number)} {comment} -j RETURN"
            continue
        number = port.port if port is not None and isinstance(port.port, int) else None
        m = "" if port is None else _proto_match(port, number) + " "
        for dst in [""] if nets is None else [f"-d {n} " for n in nets]:
            yield f"{dst}{m}{comment} -j RETURN"


def _selecting(model: Model, pod: Pod, kind: PolicyType) -> list[Policy]:
    return sorted(
        (
            p
            for p in model.policies
            if p.namespace == pod.namespace and kind in p.types and matches(p.pod_selector, pod.labels)
        ),
        key=lambda p: p.key,
    )


def render(node: str, model: Model) -> Ruleset:
    """The ``KNP-*`` chains that enforce ``model``'s policies for the pods local to ``node``."""
    local = sorted((p for p in model.pods if p.node == node and p.enforceable), key=lambda p: p.key)
    ingress_dispatch: list[str] = []
    egress_dispatch: list[str] = []
    pod_chains: list[tuple[str, tuple[str, ...]]] = []
    for pod in local:
        assert pod.ip is not None
        me = _host(pod.ip)
        for kind, dispatch in ((PolicyType.EGRESS, egress_dispatch), (PolicyType.INGRESS, ingress_dispatch)):
            policies = _selecting(model, pod, kind)
            if not policies:
                continue  # not isolated in this direction: everything is allowed
            ingress = kind is PolicyType.INGRESS
            name = pod_chain("ING" if ingress else "EGR", pod)
            dispatch.append(f"{'-d' if ingress else '-s'} {me} -j {name}")
            lines = [f"{'-s' if ingress else '-d'} {me} -j RETURN"]  # a pod may always reach itself
            for policy in policies:
                for i, rule in enumerate(policy.ingress if ingress else policy.egress):
                    gen = _ingress_lines if ingress else _egress_lines
                    lines.extend(gen(model, pod, policy, i, rule))
            lines.append(f'-m comment --comment "{pod.key} not allowed" -j DROP')
            pod_chains.append((name, tuple(dict.fromkeys(lines))))
    forward = (
        "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        f"-j {EGRESS}",
        f"-j {INGRESS}",
    )
    dispatchers = ((EGRESS, tuple(egress_dispatch)), (INGRESS, tuple(ingress_dispatch)))
    return Ruleset(((FORWARD, forward), *dispatchers, *pod_chains))


@dataclass(frozen=True)
class Kernel:
    """What ``iptables-save -t filter`` shows of ours: the ``KNP-*`` chains and the jumps to
    ``KNP-FORWARD`` in FORWARD (how many, and whether one is the first rule)."""

    chains: frozenset[str] = frozenset()
    jumps: int = 0
    jump_first: bool = False

    @classmethod
    def parse(cls, save: str) -> Kernel:
        lines = save.splitlines()
        chains = frozenset(line[1:].split()[0] for line in lines if line.startswith(":" + PREFIX))
        forward = [line.strip() for line in lines if line.startswith("-A FORWARD ")]
        jump = f"-A FORWARD {JUMP}"
        return cls(chains, forward.count(jump), bool(forward) and forward[0] == jump)


def restore_text(ruleset: Ruleset, kernel: Kernel = Kernel()) -> str:
    """Input for ``iptables-restore --noflush``: rewrite our chains, delete our stale ones.

    Declaring a chain (``:NAME - [0:0]``) flushes only that chain; chains of ours in ``kernel``
    that are no longer wanted are flushed and deleted after the dispatch chains stop referring
    to them. The FORWARD jump must be the FIRST rule, as Calico keeps its own: kube-proxy
    prepends KUBE-FORWARD, whose ``--mark 0x4000 -j ACCEPT`` would otherwise let NodePort
    traffic past policy; so a jump that is missing, duplicated or not first is (re)inserted.
    """
    wanted = ruleset.names()
    stale = sorted(c for c in kernel.chains - wanted if c.startswith(PREFIX))
    out = ["*filter"]
    out += [f":{name} - [0:0]" for name, _ in ruleset.chains]
    out += [f":{name} - [0:0]" for name in stale]
    for name, rules in ruleset.chains:
        out += [f"-A {name} {rule}" for rule in rules]
    out += [f"-X {name}" for name in stale]
    if not (kernel.jumps == 1 and kernel.jump_first):
        out += [f"-D FORWARD {JUMP}"] * kernel.jumps
        out.append(f"-I FORWARD 1 {JUMP}")
    out.append("COMMIT")
    return "\n".join(out) + "\n"


def node_rules(node: str, model: Model) -> str:
    """The whole restore text for a node whose kernel has no ``KNP-*`` chains yet."""
    return restore_text(render(node, model))
