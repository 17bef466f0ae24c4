"""Applying rules: ``iptables-restore --noflush`` and the jump rules, in the current network namespace.

The restore input names only kube-proxy's chains, so ``--noflush`` flushes and rewrites just those
and every other rule on the node (the CNI's, kubelet's) survives; stale service chains are deleted
by the same input. The jumps from the built-in chains (PREROUTING, OUTPUT, FORWARD, …) cannot be
part of it without flushing the built-ins, so they are ensured one by one with ``-C``/``-I`` as
``EnsureRule(Prepend)`` does, on the full syncs only.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusters.lab.programs.kubeproxy.chains import (
    KUBE_EXTERNAL_SERVICES,
    KUBE_FIREWALL,
    KUBE_FORWARD,
    KUBE_NODEPORTS,
    KUBE_POSTROUTING,
    KUBE_PROXY_FIREWALL,
    KUBE_SERVICES,
)
from clusters.proc import CommandResult, run

IPTABLES_TIMEOUT = 30.0


@dataclass(frozen=True)
class JumpRule:
    """A jump from a built-in chain into one of ours (``-C`` then ``-I``: it must come first)."""

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

    def _iptables(self, table: str, *args: str, check: bool = True) -> CommandResult:
        return run([self.iptables, "-w", "5", "-t", table, *args], timeout=IPTABLES_TIMEOUT, check=check)

    def ensure_jumps(self) -> None:
        """EnsureChain + EnsureRule(Prepend) for every jump, as a full sync does."""
        for jump in JUMPS:
            if not self._iptables(jump.table, "-S", jump.dst_chain, check=False).ok:
                self._iptables(jump.table, "-N", jump.dst_chain)
            if not self._iptables(jump.table, "-C", jump.src_chain, *jump.args(), check=False).ok:
                self._iptables(jump.table, "-I", jump.src_chain, *jump.args())

    def nat_chains(self) -> frozenset[str]:
        out = run([self.save_bin, "-t", "nat"], timeout=IPTABLES_TIMEOUT).stdout
        return frozenset(line[1:].split()[0] for line in out.splitlines() if line.startswith(":"))

    def restore(self, data: str) -> None:
        run([self.restore_bin, "-w", "5", "--noflush"], timeout=IPTABLES_TIMEOUT, stdin=data)
