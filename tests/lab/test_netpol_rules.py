"""Rule generation for the lab CNI's NetworkPolicy mode: parsing, selectors and golden chains.

No root needed: :func:`clusters.lab.netpol.rules.render` is pure. Golden lines are written out
in full so a change in semantics (not just in wording) shows as a diff.
"""

from __future__ import annotations

from typing import Any

import pytest

from clusters.lab.netpol import rules
from clusters.lab.netpol.model import (
    LabelSelector,
    Model,
    Operator,
    PolicyError,
    PolicyType,
    Requirement,
    parse_namespace,
    parse_pod,
    parse_policy,
)
from clusters.lab.netpol.selectors import matches


def ns(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


def pod(
    namespace: str, name: str, ip: str, node: str, ports: list[dict[str, Any]] | None = None, **labels: str
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports or []}]},
        "status": {"phase": "Running", "podIP": ip},
    }


def policy(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    }


NAMESPACES = [ns("prod", team="a"), ns("dev", team="b"), ns("ops", team="a", tier="infra")]
PODS = [
    pod("prod", "web", "10.244.1.2", "w1", [{"name": "http", "containerPort": 8080}], app="web"),
    pod("prod", "db", "10.244.1.3", "w1", [{"name": "sql", "containerPort": 5432}], app="db"),
    pod("prod", "cache", "10.244.2.2", "w2", [{"name": "http", "containerPort": 9090}], app="cache"),
    pod("dev", "client", "10.244.2.3", "w2", app="client"),
    pod("ops", "mon", "10.244.2.4", "w2", app="mon"),
    pod("ops", "agent", "10.244.1.4", "w1", app="agent"),
]


def model(*policies: dict[str, Any], pods: list[dict[str, Any]] = PODS) -> Model:
    return Model(
        namespaces=tuple(parse_namespace(n) for n in NAMESPACES),
        pods=tuple(parse_pod(p) for p in pods),
        policies=tuple(parse_policy(p) for p in policies),
    )


def chain_of(ruleset: rules.Ruleset, name: str) -> tuple[str, ...]:
    return dict(ruleset.chains)[name]


def pod_chain(m: Model, kind: str, key: str) -> str:
    return rules.pod_chain(kind, next(p for p in m.pods if p.key == key))


def comment(policy_key: str, kind: str, i: int) -> str:
    return f'-m comment --comment "{policy_key} {kind}[{i}]" -j RETURN'


DROP_WEB = '-m comment --comment "prod/web not allowed" -j DROP'


# ---- selectors and parsing --------------------------------------------------------------------


def test_selector_operators() -> None:
    labels = (("app", "web"), ("tier", "front"))
    assert matches(LabelSelector(), ())
    assert matches(LabelSelector((("app", "web"),)), labels)
    assert not matches(LabelSelector((("app", "db"),)), labels)
    assert matches(LabelSelector(match_expressions=(Requirement("app", Operator.IN, ("web", "x")),)), labels)
    assert not matches(
        LabelSelector(match_expressions=(Requirement("app", Operator.NOT_IN, ("web",)),)), labels
    )
    assert matches(LabelSelector(match_expressions=(Requirement("zone", Operator.NOT_IN, ("a",)),)), labels)
    assert matches(LabelSelector(match_expressions=(Requirement("tier", Operator.EXISTS),)), labels)
    assert not matches(
        LabelSelector(match_expressions=(Requirement("tier", Operator.DOES_NOT_EXIST),)), labels
    )
    assert not matches(
        LabelSelector((("app", "web"),), (Requirement("tier", Operator.IN, ("back",)),)), labels
    )


def test_policy_types_default_like_the_api_server() -> None:
    assert parse_policy(policy("a", "p", {"podSelector": {}})).types == {PolicyType.INGRESS}
    assert parse_policy(policy("a", "p", {"podSelector": {}, "egress": []})).types == {PolicyType.INGRESS}
    assert parse_policy(policy("a", "p", {"podSelector": {}, "egress": [{}]})).types == {
        PolicyType.INGRESS,
        PolicyType.EGRESS,
    }
    only = parse_policy(policy("a", "p", {"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}))
    assert only.types == {PolicyType.EGRESS}


def test_namespace_gets_the_metadata_name_label() -> None:
    assert ("kubernetes.io/metadata.name", "prod") in parse_namespace(ns("prod")).labels


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "spec.podSelector is required"),
        ({"podSelector": {}, "policyTypes": ["Both"]}, "'Both' is not Ingress or Egress"),
        ({"podSelector": {}, "ingress": [{"from": [{}]}]}, "set podSelector, namespaceSelector or ipBlock"),
        (
            {
                "podSelector": {},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}],
            },
            "ipBlock cannot be combined",
        ),
        (
            {
                "podSelector": {},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}}]}],
            },
            "except 11.0.0.0/8 is not inside cidr 10.0.0.0/8",
        ),
        (
            {"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]},
            "endPort 80 is below port 90",
        ),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 80}]}]}, "named port 'http'"),
        (
            {"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]},
            "'ICMP' is not TCP, UDP or SCTP",
        ),
        (
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
            "operator In needs at least one value",
        ),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}}, "'Gt'"),
    ],
)
def test_invalid_policies_are_rejected_with_one_line(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(policy("prod", "bad", spec))
    assert message in str(err.value)
    assert "prod/bad" in str(err.value) and "\n" not in str(err.value)


def test_unknown_fields_are_ignored() -> None:
    p = parse_policy(policy("prod", "p", {"podSelector": {}, "futureField": 1, "ingress": [{"x": 2}]}))
    assert p.ingress[0].peers == () and p.ingress[0].ports == ()


def test_finished_and_host_network_pods_are_not_policed() -> None:
    done = pod("prod", "job", "10.244.1.9", "w1", app="web")
    done["status"]["phase"] = "Succeeded"
    host = pod("prod", "hostnet", "172.18.0.2", "w1", app="web")
    host["spec"]["hostNetwork"] = True
    m = model(policy("prod", "deny", {"podSelector": {}}), pods=[done, host])
    assert chain_of(rules.render("w1", m), rules.INGRESS) == ()


# ---- golden chains ----------------------------------------------------------------------------


def test_no_policies_keeps_the_skeleton_only() -> None:
    ruleset = rules.render("w1", model())
    assert ruleset.chains == (
        (
            rules.FORWARD,
            ("-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN", "-j KNP-EGRESS", "-j KNP-INGRESS"),
        ),
        (rules.EGRESS, ()),
        (rules.INGRESS, ()),
    )


def test_deny_all_ingress() -> None:
    m = model(policy("prod", "deny", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    ruleset = rules.render("w1", m)
    web, db = pod_chain(m, "ING", "prod/web"), pod_chain(m, "ING", "prod/db")
    # only the node's local prod pods are dispatched; ops/agent on w1 is not selected
    assert chain_of(ruleset, rules.INGRESS) == (f"-d 10.244.1.3/32 -j {db}", f"-d 10.244.1.2/32 -j {web}")
    assert chain_of(ruleset, web) == ("-s 10.244.1.2/32 -j RETURN", DROP_WEB)
    assert chain_of(ruleset, rules.EGRESS) == ()
    assert len(web) <= 28 and web.startswith("KNP-ING-")
    text = rules.restore_text(ruleset)
    assert text.startswith("*filter\n:KNP-FORWARD - [0:0]\n") and text.endswith(
        "-I FORWARD 1 -j KNP-FORWARD\nCOMMIT\n"
    )
    declared = [line for line in text.splitlines() if line.startswith(":")]
    assert declared and all(line.startswith(":KNP-") for line in declared)  # only KNP-* are flushed
    assert not any(line.startswith(("-F", "-X")) for line in text.splitlines())
    # the same policy on w2 only isolates prod/cache there
    assert chain_of(rules.render("w2", m), rules.INGRESS) == (
        f"-d 10.244.2.2/32 -j {pod_chain(m, 'ING', 'prod/cache')}",
    )


def test_allow_from_namespace_selector() -> None:
    spec = {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}],
    }
    m = model(policy("prod", "from-team-a", spec))
    web = pod_chain(m, "ING", "prod/web")
    c = comment("prod/from-team-a", "ingress", 0)
    # every pod of prod and ops (team=a), none of dev
    assert chain_of(rules.render("w1", m), web) == (
        "-s 10.244.1.2/32 -j RETURN",
        f"-s 10.244.1.2/32 {c}",
        f"-s 10.244.1.3/32 {c}",
        f"-s 10.244.2.2/32 {c}",
        f"-s 10.244.2.4/32 {c}",
        f"-s 10.244.1.4/32 {c}",
        DROP_WEB,
    )


def test_namespace_and_pod_selector_in_one_peer_are_anded() -> None:
    spec = {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
                        "podSelector": {"matchLabels": {"app": "mon"}},
                    }
                ]
            }
        ],
    }
    m = model(policy("prod", "and", spec))
    c = comment("prod/and", "ingress", 0)
    assert chain_of(rules.render("w1", m), pod_chain(m, "ING", "prod/web")) == (
        "-s 10.244.1.2/32 -j RETURN",
        f"-s 10.244.2.4/32 {c}",  # ops/mon only: ops/agent fails the podSelector, prod the namespaceSelector
        DROP_WEB,
    )


def test_pod_selector_alone_means_the_policy_namespace() -> None:
    spec = {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {}}]}]}
    m = model(policy("prod", "same-ns", spec))
    sources = [r.split()[1] for r in chain_of(rules.render("w1", m), pod_chain(m, "ING", "prod/web"))[1:-1]]
    assert sources == ["10.244.1.2/32", "10.244.1.3/32", "10.244.2.2/32"]


def test_ip_block_except_is_subtracted() -> None:
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {
                "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16", "10.128.0.0/9"]}}],
                "ports": [{"port": 80}],
            }
        ],
    }
    m = model(policy("prod", "cidr", spec))
    lines = chain_of(rules.render("w1", m), pod_chain(m, "ING", "prod/web"))
    c = comment("prod/cidr", "ingress", 0)
    assert lines == (
        "-s 10.244.1.2/32 -j RETURN",
        f"-s 10.0.0.0/9 -p tcp -m tcp --dport 80 {c}",
        DROP_WEB,
    )
    spec["ingress"][0]["from"][0]["ipBlock"]["except"] = ["10.1.0.0/16"]
    m = model(policy("prod", "cidr", spec))
    nets = [r.split()[1] for r in chain_of(rules.render("w1", m), pod_chain(m, "ING", "prod/web"))[1:-1]]
    assert len(nets) == 8 and "10.1.0.0/16" not in nets and "10.0.0.0/16" in nets and "10.128.0.0/9" in nets


def test_named_port_resolves_on_the_destination_pod() -> None:
    spec = {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}, {"port": "sql", "protocol": "UDP"}]}]}
    m = model(policy("prod", "named", spec))
    r1 = rules.render("w1", m)
    c = comment("prod/named", "ingress", 0)
    assert chain_of(r1, pod_chain(m, "ING", "prod/web")) == (
        "-s 10.244.1.2/32 -j RETURN",
        f"-p tcp -m tcp --dport 8080 {c}",
        DROP_WEB,
    )
    # db's "sql" is TCP: the UDP named port resolves to nothing, so db allows nothing
    assert chain_of(r1, pod_chain(m, "ING", "prod/db"))[1:] == (
        '-m comment --comment "prod/db not allowed" -j DROP',
    )
    assert f"-p tcp -m tcp --dport 9090 {c}" in chain_of(
        rules.render("w2", m), pod_chain(m, "ING", "prod/cache")
    )


def test_named_port_egress_expands_per_destination_pod() -> None:
    spec = {
        "podSelector": {"matchLabels": {"app": "client"}},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": "http"}]}],
    }
    m = model(policy("dev", "egr", spec))
    c = comment("dev/egr", "egress", 0)
    ruleset = rules.render("w2", m)
    egr = pod_chain(m, "EGR", "dev/client")
    assert chain_of(ruleset, rules.EGRESS) == (f"-s 10.244.2.3/32 -j {egr}",)
    assert chain_of(ruleset, rules.INGRESS) == ()
    assert chain_of(ruleset, egr) == (
        "-d 10.244.2.3/32 -j RETURN",
        f"-d 10.244.1.2/32 -p tcp -m tcp --dport 8080 {c}",
        f"-d 10.244.2.2/32 -p tcp -m tcp --dport 9090 {c}",
        '-m comment --comment "dev/client not allowed" -j DROP',
    )


def test_end_port_range() -> None:
    spec = {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"ports": [{"port": 32000, "endPort": 32768}]}],
    }
    m = model(policy("prod", "range", spec))
    assert f"-p tcp -m tcp --dport 32000:32768 {comment('prod/range', 'ingress', 0)}" in chain_of(
        rules.render("w1", m), pod_chain(m, "ING", "prod/db")
    )


def test_egress_only_udp_dns_to_a_cidr() -> None:
    spec = {
        "podSelector": {"matchLabels": {"app": "web"}},
        "policyTypes": ["Egress"],
        "egress": [
            {"to": [{"ipBlock": {"cidr": "10.96.0.0/12"}}], "ports": [{"port": 53, "protocol": "UDP"}]},
            {"ports": [{"protocol": "SCTP"}]},
        ],
    }
    m = model(policy("prod", "dns", spec))
    ruleset = rules.render("w1", m)
    egr = pod_chain(m, "EGR", "prod/web")
    assert chain_of(ruleset, rules.INGRESS) == ()  # egress-only: ingress stays open
    assert chain_of(ruleset, egr) == (
        "-d 10.244.1.2/32 -j RETURN",
        f"-d 10.96.0.0/12 -p udp -m udp --dport 53 {comment('prod/dns', 'egress', 0)}",
        f"-p sctp {comment('prod/dns', 'egress', 1)}",
        DROP_WEB,
    )


def test_empty_rule_allows_everything_and_policies_union() -> None:
    deny = policy("prod", "deny", {"podSelector": {}})
    allow = policy("prod", "allow-all", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]})
    m = model(deny, allow)
    assert chain_of(rules.render("w1", m), pod_chain(m, "ING", "prod/web")) == (
        "-s 10.244.1.2/32 -j RETURN",
        comment("prod/allow-all", "ingress", 0),
        DROP_WEB,
    )


def test_restore_text_deletes_stale_chains_and_adds_the_jump_once() -> None:
    m = model(policy("prod", "deny", {"podSelector": {}}))
    ruleset = rules.render("w1", m)
    stale = "KNP-ING-0000000000000000"
    kernel = rules.Kernel(frozenset({stale, rules.FORWARD}), jumps=1, jump_first=True)
    text = rules.restore_text(ruleset, kernel)
    lines = text.splitlines()
    assert f":{stale} - [0:0]" in lines and f"-X {stale}" in lines
    assert lines.index(f"-X {stale}") > max(
        i for i, line in enumerate(lines) if line.startswith("-A KNP-INGRESS")
    )
    assert "KUBE-FORWARD" not in text
    assert not any("FORWARD -j" in line for line in lines if not line.startswith("-A KNP-"))


def test_a_jump_pushed_down_or_duplicated_is_moved_back_to_the_top() -> None:
    save = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:KNP-FORWARD - [0:0]
:KNP-ING-0000000000000000 - [0:0]
:KUBE-FORWARD - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -j KNP-FORWARD
-A FORWARD -j KNP-FORWARD
COMMIT
"""
    kernel = rules.Kernel.parse(save)
    assert kernel == rules.Kernel(frozenset({"KNP-FORWARD", "KNP-ING-0000000000000000"}), 2, False)
    tail = rules.restore_text(rules.render("w1", model()), kernel).splitlines()[-4:]
    assert tail == [
        "-D FORWARD -j KNP-FORWARD",
        "-D FORWARD -j KNP-FORWARD",
        "-I FORWARD 1 -j KNP-FORWARD",
        "COMMIT",
    ]
