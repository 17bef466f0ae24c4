"""The ``iptables-restore`` document one sync writes, and the word shapes its rules share.

iptables-restore wants every ``:CHAIN`` declaration of a table before that table's first rule, so
:class:`Ruleset` keeps declarations and rules of the filter and nat tables in four buffers; rule
writers for the two tables may then interleave freely, and only the order within a buffer shows in
the output. It also remembers which per-service chains this sync used, because every other
``KUBE-SVC-``-style chain found on the node is stale and is deleted in the same restore.

:func:`commented`, :func:`port_match` and :func:`port_rule` are the shapes nearly every rule of
``proxier.go`` has, so each writer spells out only what differs.
"""

from __future__ import annotations

from collections.abc import Sequence

from clusters.lab.programs.kubeproxy.chains import CHAIN_PREFIXES

Words = str | Sequence[str]
"""A word, or a run of words, of one rule; runs are flattened when the rule is written."""


def quote(text: str) -> str:
    """A ``--comment`` argument with spaces, quoted the way iptables-save prints it."""
    return f'"{text}"'


def commented(chain: str, comment: str) -> list[str]:
    """``-A chain -m comment --comment C``: how nearly every kube-proxy rule begins."""
    return ["-A", chain, "-m", "comment", "--comment", comment]


def port_match(proto: str, dport: str, dst: str | None = None) -> list[str]:
    """``-m proto -p proto [-d dst] --dport port``: the match of a service port."""
    return ["-m", proto, "-p", proto, *(["-d", dst] if dst is not None else []), "--dport", dport]


def port_rule(
    chain: str,
    comment: str,
    proto: str,
    dport: str,
    target: str,
    *,
    dst: str | None = None,
    match: Sequence[str] = (),
) -> list[str]:
    """``-A chain -m comment --comment C [match] -m proto -p proto [-d dst] --dport port -j target``:
    the shape of most per-service rules kube-proxy writes."""
    return [*commented(chain, comment), *match, *port_match(proto, dport, dst), "-j", target]


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, *words: Words) -> None:
        flat: list[str] = []
        for w in words:
            if isinstance(w, str):
                flat.append(w)
            else:
                flat.extend(w)
        self.lines.append(" ".join(flat))

    def chain(self, name: str) -> None:
        self.lines.append(f":{name} - [0:0]")


class Ruleset:
    """One sync's filter and nat tables, written in the order the real proxier writes them."""

    def __init__(self) -> None:
        self._filter_chains, self._filter_rules = _Lines(), _Lines()
        self._nat_chains, self._nat_rules = _Lines(), _Lines()
        self._active: set[str] = set()

    def filter_chain(self, name: str) -> None:
        """Declare (and so flush) a fixed filter chain."""
        self._filter_chains.chain(name)

    def nat_chain(self, name: str) -> None:
        """Declare (and so flush) a fixed nat chain."""
        self._nat_chains.chain(name)

    def service_chain(self, name: str) -> None:
        """Declare a per-service nat chain this sync uses, which keeps it from being deleted as stale."""
        self._nat_chains.chain(name)
        self._active.add(name)

    def filter(self, *words: Words) -> None:
        self._filter_rules.write(*words)

    def nat(self, *words: Words) -> None:
        self._nat_rules.write(*words)

    def delete_stale(self, existing: frozenset[str]) -> None:
        """``-X`` every per-service chain in ``existing`` that this sync did not use (sorted, as the
        real proxier does); other chains (a CNI's, say) are not ours and are left alone."""
        for chain in sorted(existing - self._active):
            if chain.startswith(CHAIN_PREFIXES):
                self._nat_chains.chain(chain)
                self._nat_rules.write("-X", chain)

    def text(self) -> str:
        """The ``iptables-restore`` input: filter, then nat."""
        out = ["*filter", *self._filter_chains.lines, *self._filter_rules.lines, "COMMIT"]
        out += ["*nat", *self._nat_chains.lines, *self._nat_rules.lines, "COMMIT"]
        return "\n".join(out) + "\n"
