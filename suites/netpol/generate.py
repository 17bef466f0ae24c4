"""Hypothesis strategies for small, valid NetworkPolicies over the x/y/z x a/b/c model (Cyclonus-style).

Policies are built from the same fragments as the case set (:mod:`suites.netpol.cases`): a target
selector, policy types, up to two rules per direction, each with up to two peers (pod selector,
namespace selector, both, or an ipBlock over the pods' addresses with an except) and up to two
ports (numbered, named, protocol-only, a port range). The first alternative of every choice is
the simplest, so shrinking walks toward a small policy a person can read. Everything is in model
names with placeholders; :func:`suites.netpol.cases.materialize` makes it a cluster object.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from suites.netpol import cases as c

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
KEYS = tuple(f"{ns}/{p}" for ns in NAMESPACES for p in PODS)


def _subset(values: tuple[str, ...]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), min_size=1, max_size=2, unique=True).map(sorted)


def pod_selectors() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.just(c.labels()),
        st.sampled_from(PODS).map(lambda p: c.labels(pod=p)),
        _subset(PODS).map(lambda v: c.exprs(c.expr("pod", "In", *v))),
        _subset(PODS).map(lambda v: c.exprs(c.expr("pod", "NotIn", *v))),
        st.just(c.exprs(c.expr("pod", "Exists"))),
    )


def namespace_selectors() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.just(c.labels()),
        st.sampled_from(NAMESPACES).map(lambda n: c.labels(ns=n)),
        _subset(NAMESPACES).map(lambda v: c.exprs(c.expr("ns", "In", *v))),
        _subset(NAMESPACES).map(lambda v: c.exprs(c.expr("ns", "NotIn", *v))),
    )


def peers() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        pod_selectors().map(c.pods),
        namespace_selectors().map(c.namespaces),
        st.builds(c.pods_in, namespace_selectors(), pod_selectors()),
        st.lists(st.sampled_from(KEYS), max_size=2, unique=True).map(
            lambda ks: c.ip_block(c.POD_RANGE, *(c.pod_ip(k) for k in sorted(ks)))
        ),
    )


PORTS: tuple[dict[str, Any], ...] = (
    c.port(80),
    c.port(81),
    c.port(80, "UDP"),
    c.port(81, "UDP"),
    c.port("serve-80-tcp"),
    c.port("serve-81-udp", "UDP"),
    c.any_port("TCP"),
    c.any_port("UDP"),
    c.port(80, "TCP", end=81),
    c.port(79, "UDP", end=80),
)


def rules(direction: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        c.rule,
        st.just(direction),
        st.none() | st.lists(peers(), min_size=1, max_size=2),
        st.none() | st.lists(st.sampled_from(PORTS), min_size=1, max_size=2, unique_by=repr),
    )


TYPES: tuple[list[str] | None, ...] = (None, ["Ingress"], ["Egress"], ["Ingress", "Egress"])


@st.composite
def policies(draw: st.DrawFn, name: str = "gen") -> dict[str, Any]:
    """One policy in a model namespace, targeting some of its pods."""
    ingress = draw(st.none() | st.lists(rules("Ingress"), max_size=2))
    egress = draw(st.none() | st.lists(rules("Egress"), max_size=2))
    return c.policy(
        draw(st.sampled_from(NAMESPACES)),
        name,
        draw(pod_selectors()),
        ingress=ingress,
        egress=egress,
        types=draw(st.sampled_from(TYPES)),
    )


def policy_sets(max_policies: int = 2) -> st.SearchStrategy[list[dict[str, Any]]]:
    """One or two policies (names gen-0, gen-1): enough for unions without long sweeps."""
    return st.integers(1, max_policies).flatmap(
        lambda n: st.tuples(*(policies(f"gen-{i}") for i in range(n))).map(list)
    )
