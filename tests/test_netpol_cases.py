"""The netpol case set and generators, offline: every policy is a valid object, every hand-written
expectation agrees with the oracle, placeholders resolve to the live values they stand for."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings

from clusters.errors import UsageProblem
from clusters.labels import RUN_ID_LABEL
from clusters.validate import validate_manifest
from suites.netpol import cases
from suites.netpol.generate import policy_sets
from suites.netpol.model import Model
from suites.truthtable import TruthTable

MODEL = Model("r1test")
IPS = {k: f"10.244.{1 + i % 2}.{10 + i}" for i, k in enumerate(MODEL.pod_keys())}


def materialized(policies: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [cases.materialize(p, MODEL, IPS) for p in policies]


def test_case_names_are_unique_and_cover_the_upstream_set() -> None:
    names = cases.case_ids()
    assert len(names) == len(set(names)) >= 20
    for needed in (
        "deny-all-ingress",
        "deny-all-egress",
        "ip-block-with-except",
        "end-port-range",
        "egress-to-one-pod-and-dns",
        "multiple-policies-union",
        "deny-all-then-allow-one-pair",
    ):
        assert needed in names
    assert sum(1 for c in cases.CASES if c.hand is not None) >= 8


@pytest.mark.parametrize("case", cases.CASES, ids=cases.case_ids())
def test_every_case_policy_is_a_valid_networkpolicy(case: cases.Case) -> None:
    for pol in materialized(case.policies):
        validate_manifest(pol)
        assert pol["metadata"]["namespace"].endswith("-r1test")
        assert pol["metadata"]["labels"][RUN_ID_LABEL] == "r1test"


@pytest.mark.parametrize("case", [c for c in cases.CASES if c.hand], ids=lambda c: c.name)
def test_hand_written_expectations_agree_with_the_oracle(case: cases.Case) -> None:
    assert case.hand is not None
    oracle = MODEL.oracle(IPS, materialized(case.policies))
    for pp, table in MODEL.expected(oracle).items():
        want = case.hand(pp, TruthTable.filled(table.froms, table.tos, True))
        comparison = want.compare(table, ignore_loopback=True)
        assert comparison.ok, comparison.render(f"{case.name} {pp}")


def test_a_wrong_hand_expectation_is_caught() -> None:
    """The oracle/hand check can fail: a deny-all read as 'nothing changes' disagrees."""
    oracle = MODEL.oracle(IPS, materialized((cases.deny_all_ingress("x"),)))
    table = MODEL.expected(oracle)[cases.TCP80]
    assert not TruthTable.filled(table.froms, table.tos, True).compare(table, ignore_loopback=True).ok


def test_placeholders_resolve_to_live_values() -> None:
    pol = cases.policy(
        "x",
        "p",
        ingress=[
            cases.allow_from(
                cases.ip_block(cases.POD_RANGE, cases.pod_ip("y/b")),
                cases.namespaces(cases.labels(**{"kubernetes.io/metadata.name": cases.ns_name("z")})),
            )
        ],
    )
    out = cases.materialize(pol, MODEL, IPS)
    peers = out["spec"]["ingress"][0]["from"]
    assert peers[0]["ipBlock"] == {"cidr": "10.244.0.0/22", "except": [f"{IPS['y/b']}/32"]}
    assert peers[1]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "z-r1test"}
    assert out["metadata"]["namespace"] == "x-r1test"
    assert pol["metadata"]["namespace"] == "x", "materialize must not change the case's data"


def test_pod_range_is_the_smallest_covering_network() -> None:
    assert cases.pod_range(["10.244.1.5", "10.244.1.9"]) == "10.244.1.0/28"
    assert cases.pod_range(["10.244.1.5"]) == "10.244.1.5/32"
    with pytest.raises(UsageProblem):
        cases.pod_range(["10.0.0.1", "fd00::1"])


def test_materialize_rejects_a_namespace_outside_the_model() -> None:
    with pytest.raises(UsageProblem, match="not a model namespace"):
        cases.materialize(cases.policy("kube-system", "p"), MODEL, IPS)


@settings(max_examples=60, deadline=None)
@given(policy_sets())
def test_generated_policies_are_valid_and_the_oracle_reads_them(policies: list[dict[str, Any]]) -> None:
    objs = materialized(policies)
    for pol in objs:
        validate_manifest(pol)
    oracle = MODEL.oracle(IPS, objs)
    assert set(MODEL.expected(oracle)) == set(MODEL.port_protocols())
    assert len({p["metadata"]["name"] for p in objs}) == len(objs)
