"""The NetworkPolicy oracle, case by case from the spec, plus properties any correct oracle has.

Every case states a rule of the NetworkPolicy spec in our own words; the world is three namespaces
x, y, z with pods a, b, c (labels ns=<ns>, pod=<pod>, plus tier labels for expression cases).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from clusters.errors import UsageProblem
from clusters.validate import validate_manifest
from suites.netpol.model import Model, probe_channel_policies
from suites.netpol.oracle import Direction, NamespaceInfo, Oracle, PodInfo, parse_policy
from suites.probe import CONTROL_PORT
from suites.truthtable import Peer, TruthTable

NSS = ("x", "y", "z")
PODS = ("a", "b", "c")
NAMED = {
    "serve-80-tcp": (80, "TCP"),
    "serve-81-tcp": (81, "TCP"),
    "serve-80-udp": (80, "UDP"),
    "serve-81-udp": (81, "UDP"),
}
TIER = {"a": "web", "b": "db"}  # c has no tier label


def ip_of(ns: str, pod: str) -> str:
    return f"10.0.{NSS.index(ns)}.{PODS.index(pod) + 10}"


def world(policies: list[dict[str, Any]], *, allow_loopback: bool = True, drop_named: str = "") -> Oracle:
    namespaces = [NamespaceInfo(ns, {"ns": ns, "kubernetes.io/metadata.name": ns}) for ns in NSS]
    pods = []
    for ns in NSS:
        for pod in PODS:
            labels = {"pod": pod, **({"tier": TIER[pod]} if pod in TIER else {})}
            ports = {
                k: v
                for k, v in NAMED.items()
                if not (f"{ns}/{pod}" == drop_named.split("#")[0] and k == drop_named.partition("#")[2])
            }
            pods.append(PodInfo(ns, pod, labels, ip_of(ns, pod), ports))
    return Oracle(namespaces, pods, policies, allow_loopback=allow_loopback)


def netpol(
    ns: str,
    name: str,
    selector: dict[str, Any] | None = None,
    *,
    ingress: list[Any] | None = None,
    egress: list[Any] | None = None,
    types: list[str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": selector or {}}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if types is not None:
        spec["policyTypes"] = types
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


ALL = [f"{ns}/{p}" for ns in NSS for p in PODS]


def table(oracle: Oracle, port: int = 80, protocol: str = "TCP") -> TruthTable:
    return oracle.table(port, protocol, ALL, ALL)


def reachable_from(oracle: Oracle, dst: str, port: int = 80, protocol: str = "TCP") -> set[str]:
    return {s for s in ALL if s != dst and oracle.allowed(s, dst, port, protocol)}


OTHERS_THAN = {k: {s for s in ALL if s != k} for k in ALL}


# ---- isolation and policyTypes ---------------------------------------------------------------


def test_no_policies_allows_everything() -> None:
    assert table(world([])).count(True) == 81


def test_deny_all_ingress_blocks_every_other_pod_into_the_namespace() -> None:
    oracle = world([netpol("x", "deny")])
    for dst in ("x/a", "x/b", "x/c"):
        assert reachable_from(oracle, dst) == set()
    assert reachable_from(oracle, "y/a") == OTHERS_THAN["y/a"]  # x's egress is untouched


def test_deny_all_ingress_with_explicit_types_and_empty_rules() -> None:
    oracle = world([netpol("x", "deny", ingress=[], types=["Ingress"])])
    assert reachable_from(oracle, "x/b") == set()


def test_deny_all_egress_blocks_the_namespace_from_reaching_anyone() -> None:
    oracle = world([netpol("x", "deny-egress", types=["Egress"])])
    assert not any(oracle.allowed("x/a", d, 80) for d in ALL if d != "x/a")
    assert reachable_from(oracle, "x/a") == {
        k for k in ALL if not k.startswith("x/")
    }  # x/b, x/c may not send


def test_policy_types_default_adds_egress_when_egress_rules_exist() -> None:
    to_y_b = {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}}
    pol = netpol("x", "p", egress=[{"to": [to_y_b]}])
    assert parse_policy(pol).types == {Direction.INGRESS, Direction.EGRESS}
    oracle = world([pol])
    assert oracle.allowed("x/a", "y/b", 80)
    assert not oracle.allowed("x/a", "y/a", 80)  # egress isolated: only y/b is allowed
    assert reachable_from(oracle, "x/a") == set()  # and Ingress is always defaulted in: nothing gets in


def test_policy_types_default_ignores_an_empty_egress_list() -> None:
    pol = netpol("x", "p", ingress=[{}], egress=[])
    assert parse_policy(pol).types == {Direction.INGRESS}
    assert reachable_from(world([pol]), "y/a") == OTHERS_THAN["y/a"]


def test_egress_only_policy_ignores_its_ingress_rules() -> None:
    pol = netpol("x", "p", ingress=[], egress=[{}], types=["Egress"])
    oracle = world([pol])
    assert not oracle.isolated("x/a", Direction.INGRESS)
    assert reachable_from(oracle, "x/a") == OTHERS_THAN["x/a"]


def test_policy_selects_only_its_own_namespace() -> None:
    oracle = world([netpol("y", "deny")])
    assert reachable_from(oracle, "x/a") == OTHERS_THAN["x/a"]
    assert reachable_from(oracle, "y/a") == set()


def test_pod_selector_isolates_only_matching_pods() -> None:
    oracle = world([netpol("x", "deny-a", {"matchLabels": {"pod": "a"}})])
    assert reachable_from(oracle, "x/a") == set()
    assert reachable_from(oracle, "x/b") == OTHERS_THAN["x/b"]


# ---- peers -----------------------------------------------------------------------------------


def test_allow_from_same_namespace() -> None:
    oracle = world([netpol("x", "same-ns", ingress=[{"from": [{"podSelector": {}}]}])])
    assert reachable_from(oracle, "x/a") == {"x/b", "x/c"}


def test_pod_selector_peer_means_the_policy_namespace() -> None:
    oracle = world(
        [netpol("x", "from-b", ingress=[{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}])]
    )
    assert reachable_from(oracle, "x/a") == {"x/b"}  # not y/b, not z/b


def test_namespace_selector_alone_admits_every_pod_there() -> None:
    oracle = world(
        [netpol("x", "from-y", ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}])]
    )
    assert reachable_from(oracle, "x/a") == {"y/a", "y/b", "y/c"}


def test_empty_namespace_selector_admits_every_namespace() -> None:
    oracle = world([netpol("x", "from-all", ingress=[{"from": [{"namespaceSelector": {}}]}])])
    assert reachable_from(oracle, "x/a") == OTHERS_THAN["x/a"]


def test_namespace_and_pod_selector_in_one_peer_is_and() -> None:
    peer = {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}}
    oracle = world([netpol("x", "and", ingress=[{"from": [peer]}])])
    assert reachable_from(oracle, "x/a") == {"y/b"}


def test_two_peers_are_or() -> None:
    peers = [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
        {"podSelector": {"matchLabels": {"pod": "b"}}},
    ]
    oracle = world([netpol("x", "or", ingress=[{"from": peers}])])
    assert reachable_from(oracle, "x/a") == {"y/a", "y/b", "y/c", "x/b"}


def test_empty_from_list_admits_all_sources() -> None:
    oracle = world([netpol("x", "all", ingress=[{"from": []}])])
    assert reachable_from(oracle, "x/a") == OTHERS_THAN["x/a"]


def test_match_expressions_in() -> None:
    sel = {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]}
    oracle = world([netpol("x", "in", ingress=[{"from": [{"podSelector": sel}]}])])
    assert reachable_from(oracle, "x/a") == {"x/b", "x/c"}


def test_match_expressions_not_in_matches_pods_without_the_key() -> None:
    sel = {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}
    oracle = world([netpol("x", "notin", ingress=[{"from": [{"podSelector": sel}]}])])
    assert reachable_from(oracle, "x/b") == {"x/a", "x/c"}  # x/c has no tier label at all


def test_match_expressions_exists_and_does_not_exist() -> None:
    exists = {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}
    absent = {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}
    assert reachable_from(
        world([netpol("x", "e", ingress=[{"from": [{"podSelector": exists}]}])]), "x/c"
    ) == {"x/a", "x/b"}
    assert reachable_from(
        world([netpol("x", "d", ingress=[{"from": [{"podSelector": absent}]}])]), "x/a"
    ) == {"x/c"}


def test_match_labels_and_expressions_are_anded() -> None:
    sel = {
        "matchLabels": {"tier": "web"},
        "matchExpressions": [{"key": "pod", "operator": "In", "values": ["b"]}],
    }
    oracle = world([netpol("x", "none", ingress=[{"from": [{"podSelector": sel}]}])])
    assert reachable_from(oracle, "x/c") == set()


def test_ip_block_matches_pod_ips() -> None:
    oracle = world([netpol("x", "cidr", ingress=[{"from": [{"ipBlock": {"cidr": "10.0.1.0/24"}}]}])])
    assert reachable_from(oracle, "x/a") == {"y/a", "y/b", "y/c"}


def test_ip_block_except_carves_out_addresses() -> None:
    block = {"cidr": "10.0.0.0/16", "except": [f"{ip_of('y', 'b')}/32", "10.0.2.0/24"]}
    oracle = world([netpol("x", "cidr", ingress=[{"from": [{"ipBlock": block}]}])])
    assert reachable_from(oracle, "x/a") == {"x/b", "x/c", "y/a", "y/c"}


def test_ip_block_on_egress() -> None:
    oracle = world(
        [netpol("x", "to-z", egress=[{"to": [{"ipBlock": {"cidr": "10.0.2.0/24"}}]}], types=["Egress"])]
    )
    assert {d for d in ALL if oracle.allowed("x/a", d, 80)} == {"x/a", "z/a", "z/b", "z/c"}


# ---- ports -----------------------------------------------------------------------------------


def test_numbered_port_and_protocol_default_tcp() -> None:
    oracle = world([netpol("x", "p80", ingress=[{"ports": [{"port": 80}]}])])
    assert oracle.allowed("y/a", "x/a", 80, "TCP")
    assert not oracle.allowed("y/a", "x/a", 81, "TCP")
    assert not oracle.allowed("y/a", "x/a", 80, "UDP")


def test_udp_rule_does_not_open_tcp() -> None:
    oracle = world([netpol("x", "udp80", ingress=[{"ports": [{"port": 80, "protocol": "UDP"}]}])])
    assert oracle.allowed("y/a", "x/a", 80, "UDP")
    assert not oracle.allowed("y/a", "x/a", 80, "TCP")


def test_protocol_without_port_opens_every_port_of_it() -> None:
    oracle = world([netpol("x", "udp", ingress=[{"ports": [{"protocol": "UDP"}]}])])
    assert oracle.allowed("y/a", "x/a", 81, "UDP")
    assert not oracle.allowed("y/a", "x/a", 81, "TCP")


def test_empty_ports_list_means_all_ports() -> None:
    oracle = world([netpol("x", "any", ingress=[{"ports": [], "from": [{"namespaceSelector": {}}]}])])
    assert oracle.allowed("y/a", "x/a", 81, "UDP")


def test_named_port_on_ingress_resolves_against_the_destination() -> None:
    oracle = world([netpol("x", "named", ingress=[{"ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}])])
    assert oracle.allowed("y/a", "x/a", 81, "UDP")
    assert not oracle.allowed("y/a", "x/a", 80, "UDP")
    assert not oracle.allowed("y/a", "x/a", 81, "TCP")


def test_named_port_with_wrong_protocol_matches_nothing() -> None:
    oracle = world([netpol("x", "named", ingress=[{"ports": [{"port": "serve-81-udp"}]}])])  # TCP by default
    assert not oracle.allowed("y/a", "x/a", 81, "UDP")
    assert not oracle.allowed("y/a", "x/a", 81, "TCP")


def test_named_port_on_egress_resolves_against_the_destination_pod() -> None:
    pol = netpol("x", "named-egress", egress=[{"ports": [{"port": "serve-80-tcp"}]}], types=["Egress"])
    oracle = world([pol], drop_named="y/b#serve-80-tcp")
    assert oracle.allowed("x/a", "y/a", 80)
    assert not oracle.allowed("x/a", "y/b", 80)  # y/b has no port of that name
    assert not oracle.allowed("x/a", "y/a", 81)


def test_end_port_range_is_inclusive() -> None:
    oracle = world([netpol("x", "range", ingress=[{"ports": [{"port": 81, "endPort": 90}]}])])
    assert oracle.allowed("y/a", "x/a", 81)
    assert oracle.allowed("y/a", "x/a", 90)
    assert not oracle.allowed("y/a", "x/a", 80)
    assert not oracle.allowed("y/a", "x/a", 91)


# ---- combining -------------------------------------------------------------------------------


def test_egress_and_ingress_must_both_allow() -> None:
    deny_in_y = netpol("y", "deny")
    allow_out_x = netpol("x", "out", egress=[{}], types=["Egress"])
    assert not world([deny_in_y, allow_out_x]).allowed("x/a", "y/a", 80)
    deny_out_x = netpol("x", "deny-out", types=["Egress"])
    allow_in_y = netpol("y", "in", ingress=[{}])
    assert not world([deny_out_x, allow_in_y]).allowed("x/a", "y/a", 80)
    assert world([allow_out_x, allow_in_y]).allowed("x/a", "y/a", 80)


def test_multiple_policies_are_a_union() -> None:
    from_b = netpol("x", "from-b", ingress=[{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}])
    from_y = netpol("x", "from-y", ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}])
    deny = netpol("x", "deny")
    assert reachable_from(world([from_b, from_y, deny]), "x/a") == {"x/b", "y/a", "y/b", "y/c"}


def test_peer_and_port_in_one_rule_are_anded_rules_are_ored() -> None:
    rules = [
        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}], "ports": [{"port": 81}]},
        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}], "ports": [{"port": 80}]},
    ]
    oracle = world([netpol("x", "p", ingress=rules)])
    assert oracle.allowed("y/a", "x/a", 81) and not oracle.allowed("y/a", "x/a", 80)
    assert oracle.allowed("z/a", "x/a", 80) and not oracle.allowed("z/a", "x/a", 81)


def test_loopback_is_allowed_unless_turned_off() -> None:
    deny = [netpol("x", "deny", types=["Ingress", "Egress"])]
    assert world(deny).allowed("x/a", "x/a", 80)
    assert not world(deny, allow_loopback=False).allowed("x/a", "x/a", 80)


def test_decision_explains_which_policy_decided() -> None:
    oracle = world([netpol("x", "deny")])
    decision = oracle.decide("y/a", "x/a", 80)
    assert not decision.allowed and "x/deny" in decision.reason and "ingress-isolated" in decision.reason
    assert "x/deny" not in oracle.decide("x/a", "y/a", 80).reason


@pytest.mark.parametrize(
    ("spec_fragment", "message"),
    [
        (
            {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
            "cannot be combined",
        ),
        (
            {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}}]}]},
            "not inside",
        ),
        ({"ingress": [{"from": [{"ipBlock": {"cidr": "ten"}}]}]}, "not a CIDR"),
        ({"ingress": [{"from": [{}]}]}, "a peer needs"),
        (
            {"podSelector": {"matchExpressions": [{"key": "k", "operator": "Gt", "values": ["1"]}]}},
            "operator",
        ),
        ({"ingress": [{"ports": [{"port": "http", "endPort": 90}]}]}, "endPort needs a numeric port"),
        ({"policyTypes": ["Sideways"]}, "policyTypes"),
    ],
)
def test_invalid_policies_are_one_line_usage_problems(spec_fragment: dict[str, Any], message: str) -> None:
    pol = netpol("x", "bad")
    pol["spec"].update(spec_fragment)
    with pytest.raises(UsageProblem, match=message):
        parse_policy(pol)


def test_unknown_pod_is_a_usage_problem() -> None:
    with pytest.raises(UsageProblem, match="unknown pod 'q/q'"):
        world([]).allowed("q/q", "x/a", 80)


# ---- properties ------------------------------------------------------------------------------

labels_sel = st.sampled_from(
    [
        {},
        {"matchLabels": {"pod": "a"}},
        {"matchLabels": {"pod": "b"}},
        {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "c"]}]},
        {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]},
    ]
)
ns_sel = st.sampled_from(
    [
        {},
        {"matchLabels": {"ns": "x"}},
        {"matchLabels": {"ns": "y"}},
        {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["z"]}]},
    ]
)
peer_st = st.one_of(
    st.builds(lambda p: {"podSelector": p}, labels_sel),
    st.builds(lambda n: {"namespaceSelector": n}, ns_sel),
    st.builds(lambda p, n: {"podSelector": p, "namespaceSelector": n}, labels_sel, ns_sel),
    st.sampled_from(
        [
            {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"]}},
            {"ipBlock": {"cidr": "10.0.2.11/32"}},
        ]
    ),
)
port_st = st.sampled_from(
    [
        {"port": 80},
        {"port": 81, "protocol": "UDP"},
        {"port": "serve-80-tcp"},
        {"port": 80, "endPort": 81},
        {"protocol": "UDP"},
    ]
)
rule_st = st.fixed_dictionaries(
    {}, optional={"from": st.lists(peer_st, max_size=2), "ports": st.lists(port_st, max_size=2)}
)


@st.composite
def policy_st(draw: st.DrawFn, namespaces: tuple[str, ...] = NSS) -> dict[str, Any]:
    ns = draw(st.sampled_from(namespaces))
    types = draw(st.sampled_from([None, ["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    ingress = draw(st.lists(rule_st, max_size=2))
    egress = [
        {("to" if k == "from" else k): v for k, v in r.items()} for r in draw(st.lists(rule_st, max_size=2))
    ]
    name = f"p{draw(st.integers(0, 10**6))}"
    return netpol(ns, name, draw(labels_sel), ingress=ingress, egress=egress, types=types)


CASES = ((80, "TCP"), (81, "TCP"), (80, "UDP"), (81, "UDP"))
PROPERTY = settings(
    max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def allowed_cells(oracle: Oracle) -> set[tuple[str, str, int, str]]:
    return {
        (s, d, port, proto)
        for port, proto in CASES
        for s in ALL
        for d in ALL
        if oracle.allowed(s, d, port, proto)
    }


@PROPERTY
@given(st.sampled_from(CASES))
def test_property_no_policies_everything_allowed(case: tuple[int, str]) -> None:
    assert table(world([]), *case).count(True) == 81


@PROPERTY
@given(st.lists(policy_st(), max_size=3), st.sampled_from(ALL))
def test_property_allow_all_ingress_on_an_unselected_pod_changes_nothing(
    policies: list[dict[str, Any]], target: str
) -> None:
    before = world(policies)
    assume(not before.isolated(target, Direction.INGRESS))
    ns, _, pod = target.partition("/")
    allow_all = netpol(ns, "allow-all", {"matchLabels": {"pod": pod}}, ingress=[{}], types=["Ingress"])
    assert allowed_cells(world([*policies, allow_all])) == allowed_cells(before)


@PROPERTY
@given(st.lists(policy_st(), max_size=3), st.sampled_from(NSS), st.data())
def test_property_union_only_adds_when_the_new_policy_selects_isolated_pods(
    policies: list[dict[str, Any]], ns: str, data: st.DataObject
) -> None:
    # a floor policy isolates all of ns both ways, so any policy drawn for ns selects isolated pods only
    floor = data.draw(policy_st((ns,)))
    floor["spec"]["podSelector"] = {}
    floor["spec"]["policyTypes"] = ["Ingress", "Egress"]
    extra = data.draw(policy_st((ns,)))
    before = world([*policies, floor])
    assert allowed_cells(before) <= allowed_cells(world([*policies, floor, extra]))


@PROPERTY
@given(st.lists(policy_st(("y", "z")), max_size=3), st.sampled_from(CASES))
def test_property_deny_all_blocks_cross_pod_ingress_to_its_namespace(
    policies: list[dict[str, Any]], case: tuple[int, str]
) -> None:
    oracle = world([*policies, netpol("x", "deny-all")])
    port, proto = case
    assert not any(
        oracle.allowed(s, d, port, proto) for s in ALL for d in ALL if d.startswith("x/") and s != d
    )


# ---- the model and its probe-channel companion policy ------------------------------------------

MODEL = Model(run_id="rtest01")
MODEL_IPS = {k: f"10.1.{i // 3}.{i % 3 + 10}" for i, k in enumerate(MODEL.pod_keys())}


def in_model(pol: dict[str, Any]) -> dict[str, Any]:
    pol = {**pol, "metadata": {**pol["metadata"], "namespace": MODEL.ns_name(pol["metadata"]["namespace"])}}
    return pol


def test_model_names_and_manifests_validate() -> None:
    manifests = MODEL.manifests()
    for obj in manifests:
        validate_manifest(obj)
    kinds = [o["kind"] for o in manifests]
    assert kinds.count("Namespace") == 3 and kinds.count("Pod") == 9 and kinds.count("Service") == 9
    pod = MODEL.pod_manifest(MODEL.pods()[0])
    assert pod["metadata"] == {
        "name": "a",
        "namespace": "x-rtest01",
        "labels": {"app.kubernetes.io/managed-by": "knetcheck", "knetcheck.io/run-id": "rtest01", "pod": "a"},
    }
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert names == ["cont-80-tcp", "cont-80-udp", "cont-81-tcp", "cont-81-udp", "netexec"]
    assert pod["spec"]["containers"][1]["command"] == [
        "/agnhost",
        "serve-hostname",
        "--udp",
        "--http=false",
        "--port",
        "80",
    ]
    assert MODEL.service_manifest(MODEL.pods()[4])["metadata"]["name"] == "s-y-rtest01-b"
    assert MODEL.namespace_manifest("z")["metadata"]["labels"]["ns"] == "z"


def test_model_with_sctp_validates() -> None:
    model = Model(run_id="rtest01", protocols=("TCP", "UDP", "SCTP"))
    pod = model.pod_manifest(model.pods()[0])
    validate_manifest(pod)
    sctp = next(c for c in pod["spec"]["containers"] if c["name"] == "cont-80-sctp")
    assert sctp["command"] == ["/agnhost", "porter"] and sctp["env"][0]["name"] == "SERVE_SCTP_PORT_80"


def test_model_rejects_the_control_port_as_matrix_port() -> None:
    with pytest.raises(ValueError, match="control channel"):
        Model(run_id="r1", ports=(80, CONTROL_PORT))


def test_model_expected_tables_use_short_keys() -> None:
    oracle = MODEL.oracle(MODEL_IPS, [in_model(netpol("x", "deny"))])
    expected = MODEL.expected(oracle)
    assert len(expected) == 4
    tcp80 = next(iter(expected.values()))
    assert tcp80.froms[0] == "x/a"
    want = TruthTable.filled(MODEL.pod_keys()).where(Peer(), "x", False).where("x/a", "x/a", True)
    want = want.where("x/b", "x/b", True).where("x/c", "x/c", True)
    assert tcp80 == want
    jobs = MODEL.jobs(MODEL_IPS)
    assert len(jobs) == 4 * 81
    job = next(iter(jobs.values()))
    assert (job.source.namespace, job.source.name, job.host) == ("x-rtest01", "a", MODEL_IPS["x/a"])


def test_probe_channel_policies_validate_and_select_only_isolated_pods() -> None:
    policies = [in_model(netpol("x", "deny-a", {"matchLabels": {"pod": "a"}})), in_model(netpol("y", "deny"))]
    companions = probe_channel_policies(MODEL, MODEL.oracle(MODEL_IPS, policies))
    for obj in companions:
        validate_manifest(obj)
    by_ns = {
        c["metadata"]["namespace"]: c["spec"]["podSelector"]["matchExpressions"][0]["values"]
        for c in companions
    }
    assert by_ns == {"x-rtest01": ["a"], "y-rtest01": ["a", "b", "c"]}
    assert probe_channel_policies(MODEL, MODEL.oracle(MODEL_IPS, [])) == []


@PROPERTY
@given(st.lists(policy_st(), max_size=3))
def test_property_probe_channel_policies_change_no_matrix_cell(policies: list[dict[str, Any]]) -> None:
    real = [in_model(p) for p in policies]
    before = MODEL.oracle(MODEL_IPS, real)
    after = MODEL.oracle(MODEL_IPS, [*real, *probe_channel_policies(MODEL, before)])
    assert MODEL.expected(after) == MODEL.expected(before)
    for key in MODEL.pod_keys():  # and every isolated pod's control port is now open to the API server
        pod = after.pod(MODEL.cluster_key(key))
        if before.isolated(pod, Direction.INGRESS):
            assert after.selecting(pod, Direction.INGRESS)
            assert any(
                pol.name == "knetcheck-probe-channel" for pol in after.selecting(pod, Direction.INGRESS)
            )
