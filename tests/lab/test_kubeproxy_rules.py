"""The lab kube-proxy's rule rendering: Services + EndpointSlices → iptables-restore text (pure).

Golden expectations follow ``pkg/proxy/iptables/proxier.go``. Chain-name hashes are checked against
an ``iptables-save`` from a real cluster (``default/test-svc`` → ``KUBE-SVC-QKNQQNIN727HO3XU``,
endpoints 10.244.1.3:80 / 10.244.2.3:80 → ``KUBE-SEP-SQEBHSRBMT4ZUBXZ`` / ``KUBE-SEP-SUSDB4Q4CAFDFR7F``).
"""

from __future__ import annotations

from typing import Any

from clusters.lab.programs.kubeproxy.endpoints import probability
from clusters.lab.programs.kubeproxy.model import Endpoint, ServicePort, endpoint_chain
from clusters.lab.programs.kubeproxy.options import LocalDetector, RenderOptions
from clusters.lab.programs.kubeproxy.render import render
from clusters.lab.programs.kubeproxy.state import build_state, service_ports

CIDR = LocalDetector.by_cidr("10.244.0.0/16")


def svc(name: str, ip: str, ports: list[dict[str, Any]], ns: str = "default", **spec: Any) -> dict[str, Any]:
    status = spec.pop("status", {})
    return {
        "metadata": {"namespace": ns, "name": name},
        "spec": {"clusterIP": ip, "ports": ports, **spec},
        "status": status,
    }


def eps(
    service: str, port: int, addrs: list[str], ns: str = "default", name: str = "", **extra: Any
) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": ns,
            "name": f"{service}-abc",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": name, "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}, **extra} for a in addrs],
    }


def nat_rules(text: str) -> list[str]:
    nat = text.split("*nat\n", 1)[1]
    return [line for line in nat.splitlines() if line.startswith("-A ")]


def filter_rules(text: str) -> list[str]:
    flt = text.split("*filter\n", 1)[1].split("COMMIT", 1)[0]
    return [line for line in flt.splitlines() if line.startswith("-A ")]


def test_chain_names_match_a_real_cluster() -> None:
    sp = ServicePort("default", "test-svc", "", "TCP", "10.96.115.88", 80)
    assert sp.svc_chain == "KUBE-SVC-QKNQQNIN727HO3XU"
    assert endpoint_chain(sp, Endpoint("10.244.1.3", 80)) == "KUBE-SEP-SQEBHSRBMT4ZUBXZ"
    assert endpoint_chain(sp, Endpoint("10.244.2.3", 80)) == "KUBE-SEP-SUSDB4Q4CAFDFR7F"
    named = ServicePort("ns1", "web", "http", "TCP", "10.96.0.20", 80)
    assert named.name_string == "ns1/web:http"
    assert named.svc_chain != ServicePort("ns1", "web", "http", "UDP", "10.96.0.20", 80).svc_chain


def test_probabilities_are_formatted_like_go() -> None:
    assert [probability(n) for n in (2, 3, 4)] == ["0.5000000000", "0.3333333333", "0.2500000000"]


def test_cluster_ip_with_two_endpoints_golden() -> None:
    state = build_state(
        [svc("web", "10.96.0.20", [{"name": "http", "port": 80, "protocol": "TCP"}])],
        [eps("web", 8080, ["10.244.2.12", "10.244.2.11"], name="http")],
    )
    text = render(state, RenderOptions(local_detector=CIDR))
    sp = state.services[-1]
    svc_chain = sp.svc_chain
    sep1 = endpoint_chain(sp, Endpoint("10.244.2.11", 8080))
    sep2 = endpoint_chain(sp, Endpoint("10.244.2.12", 8080))
    assert nat_rules(text) == [
        "-A KUBE-POSTROUTING -m mark ! --mark 0x004000/0x004000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x004000",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x004000",
        f'-A KUBE-SERVICES -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20 '
        f"--dport 80 -j {svc_chain}",
        f'-A {svc_chain} -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20 '
        "--dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
        f'-A {svc_chain} -m comment --comment "default/web:http -> 10.244.2.11:8080" '
        f"-m statistic --mode random --probability 0.5000000000 -j {sep1}",
        f'-A {svc_chain} -m comment --comment "default/web:http -> 10.244.2.12:8080" -j {sep2}',
        f"-A {sep1} -m comment --comment default/web:http -s 10.244.2.11 -j KUBE-MARK-MASQ",
        f"-A {sep1} -m comment --comment default/web:http -m tcp -p tcp "
        "-j DNAT --to-destination 10.244.2.11:8080",
        f"-A {sep2} -m comment --comment default/web:http -s 10.244.2.12 -j KUBE-MARK-MASQ",
        f"-A {sep2} -m comment --comment default/web:http -m tcp -p tcp "
        "-j DNAT --to-destination 10.244.2.12:8080",
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; '
        'NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
    ]
    assert f":{svc_chain} - [0:0]" in text and f":{sep1} - [0:0]" in text
    assert text.startswith("*filter\n:KUBE-SERVICES - [0:0]\n") and text.endswith("COMMIT\n")


def test_masquerade_rule_follows_cluster_cidr() -> None:
    state = build_state(
        [svc("web", "10.96.0.20", [{"port": 80, "protocol": "TCP"}])], [eps("web", 8080, ["10.244.2.11"])]
    )
    wrong = render(state, RenderOptions(local_detector=LocalDetector.by_cidr("10.99.0.0/16")))
    assert any("! -s 10.99.0.0/16 -j KUBE-MARK-MASQ" in r for r in nat_rules(wrong))
    none = render(state, RenderOptions(local_detector=LocalDetector()))
    assert not any("cluster IP" in r and "KUBE-MARK-MASQ" in r for r in nat_rules(none))
    everything = render(state, RenderOptions(masquerade_all=True, local_detector=CIDR))
    assert any(r.endswith("--dport 80 -j KUBE-MARK-MASQ") and " -s " not in r for r in nat_rules(everything))


def test_node_port_golden() -> None:
    state = build_state(
        [svc("np", "10.96.0.30", [{"port": 80, "protocol": "TCP", "nodePort": 30080}], type="NodePort")],
        [eps("np", 8080, ["10.244.2.11"])],
    )
    sp = state.services[-1]
    rules = nat_rules(render(state, RenderOptions(local_detector=CIDR)))
    assert (
        f"-A KUBE-NODEPORTS -m comment --comment default/np -m tcp -p tcp --dport 30080 -j {sp.ext_chain}"
        in rules
    )
    assert (
        f'-A {sp.ext_chain} -m comment --comment "masquerade traffic for default/np external destinations" '
        "-j KUBE-MARK-MASQ"
    ) in rules
    assert f"-A {sp.ext_chain} -j {sp.svc_chain}" in rules
    # KUBE-NODEPORTS is reached from the last rule of KUBE-SERVICES
    assert rules[-1].endswith("-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")


def test_no_endpoints_rejects_with_the_real_comment() -> None:
    state = build_state(
        [
            svc(
                "web",
                "10.96.0.20",
                [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}],
                type="NodePort",
            )
        ],
        [],
    )
    text = render(state, RenderOptions(local_detector=CIDR))
    assert filter_rules(text)[:2] == [
        '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 '
        "! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
        '-A KUBE-SERVICES -m comment --comment "default/web:http has no endpoints" -m tcp -p tcp '
        "-d 10.96.0.20 --dport 80 -j REJECT",
    ]
    assert (
        '-A KUBE-EXTERNAL-SERVICES -m comment --comment "default/web:http has no endpoints" '
        "-m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30080 -j REJECT"
    ) in filter_rules(text)
    assert not any("KUBE-SVC-" in r for r in nat_rules(text))


def test_not_ready_endpoints_are_not_used_but_terminating_serving_ones_are_a_fallback() -> None:
    ready = {"addresses": ["10.244.2.11"], "conditions": {"ready": True}}
    unready = {"addresses": ["10.244.2.12"], "conditions": {"ready": False}}
    slice_ = eps("web", 8080, [])
    slice_["endpoints"] = [ready, unready]
    text = render(build_state([svc("web", "10.96.0.20", [{"port": 80}])], [slice_]), RenderOptions())
    assert "10.244.2.11:8080" in text and "10.244.2.12:8080" not in text
    slice_["endpoints"] = [
        {"addresses": ["10.244.2.13"], "conditions": {"ready": False, "serving": True, "terminating": True}}
    ]
    text = render(build_state([svc("web", "10.96.0.20", [{"port": 80}])], [slice_]), RenderOptions())
    assert "DNAT --to-destination 10.244.2.13:8080" in text and "has no endpoints" not in text


def test_session_affinity_uses_recent() -> None:
    state = build_state(
        [
            svc(
                "st",
                "10.96.0.40",
                [{"port": 80, "protocol": "TCP"}],
                sessionAffinity="ClientIP",
                sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}},
            )
        ],
        [eps("st", 8080, ["10.244.2.11", "10.244.2.12"])],
    )
    sp = state.services[-1]
    sep1 = endpoint_chain(sp, Endpoint("10.244.2.11", 8080))
    rules = nat_rules(render(state, RenderOptions(local_detector=CIDR)))
    assert (
        f'-A {sp.svc_chain} -m comment --comment "default/st -> 10.244.2.11:8080" -m recent --name {sep1} '
        f"--rcheck --seconds 600 --reap -j {sep1}"
    ) in rules
    assert (
        f"-A {sep1} -m comment --comment default/st -m recent --name {sep1} --set -m tcp -p tcp "
        "-j DNAT --to-destination 10.244.2.11:8080"
    ) in rules
    # the affinity checks come before the probability ladder
    idx = [i for i, r in enumerate(rules) if r.startswith(f"-A {sp.svc_chain}")]
    assert "--rcheck" in rules[idx[1]] and "statistic" in rules[idx[3]]


def test_external_name_and_headless_services_get_no_rules() -> None:
    assert service_ports(svc("ext", "", [], type="ExternalName", externalName="example.com")) == []
    assert service_ports(svc("hl", "None", [{"port": 80}])) == []
    text = render(
        build_state([svc("hl", "None", [{"port": 80}])], [eps("hl", 80, ["10.244.2.11"])]), RenderOptions()
    )
    assert "10.244.2.11" not in text


def test_load_balancer_ingress_ip_is_captured() -> None:
    state = build_state(
        [
            svc(
                "lb",
                "10.96.0.50",
                [{"port": 80, "protocol": "TCP", "nodePort": 30050}],
                type="LoadBalancer",
                status={"loadBalancer": {"ingress": [{"ip": "172.18.255.1"}]}},
            )
        ],
        [eps("lb", 8080, ["10.244.2.11"])],
    )
    sp = state.services[-1]
    rules = nat_rules(render(state, RenderOptions(local_detector=CIDR)))
    assert (
        f'-A KUBE-SERVICES -m comment --comment "default/lb loadbalancer IP" -m tcp -p tcp -d 172.18.255.1 '
        f"--dport 80 -j {sp.ext_chain}"
    ) in rules


def test_external_traffic_policy_local_uses_only_local_endpoints() -> None:
    state = build_state(
        [
            svc(
                "loc",
                "10.96.0.60",
                [{"port": 80, "protocol": "TCP", "nodePort": 30060}],
                type="NodePort",
                externalTrafficPolicy="Local",
            )
        ],
        [
            {
                **eps("loc", 8080, []),
                "endpoints": [
                    {"addresses": ["10.244.1.5"], "nodeName": "n1"},
                    {"addresses": ["10.244.2.5"], "nodeName": "n2"},
                ],
            }
        ],
    )
    sp = state.services[-1]
    rules = nat_rules(render(state, RenderOptions(node_name="n1", local_detector=CIDR)))
    svl = [r for r in rules if r.startswith(f"-A {sp.svl_chain} ")]
    assert len(svl) == 1 and "10.244.1.5:8080" in svl[0]
    assert f"-A {sp.ext_chain} -j {sp.svl_chain}" in rules
    # on a node without local endpoints, external traffic is dropped by the filter table
    other = render(state, RenderOptions(node_name="n3", local_detector=CIDR))
    assert '"default/loc has no local endpoints"' in other and "-j DROP" in other


def test_stale_service_chains_are_deleted_others_left_alone() -> None:
    text = render(
        build_state([], []),
        RenderOptions(
            existing_nat_chains=frozenset({"KUBE-SVC-AAAAAAAAAAAAAAAA", "KUBE-SEP-B", "CNI-HOSTPORT-DNAT"})
        ),
    )
    assert "-X KUBE-SVC-AAAAAAAAAAAAAAAA" in text and "-X KUBE-SEP-B" in text
    assert "CNI-HOSTPORT-DNAT" not in text


def test_endpoints_are_matched_by_port_name_and_deduplicated() -> None:
    a = eps("multi", 8080, ["10.244.2.11"], name="http")
    b = eps("multi", 8443, ["10.244.2.11"], name="https")
    dup = eps("multi", 8080, ["10.244.2.11"], name="http")
    dup["metadata"]["name"] = "multi-def"
    state = build_state(
        [svc("multi", "10.96.0.70", [{"name": "http", "port": 80}, {"name": "https", "port": 443}])],
        [a, b, dup],
    )
    by_name = {sp.port_name: state.endpoints_of(sp) for sp in state.services}
    assert [e.address for e in by_name["http"]] == ["10.244.2.11:8080"]
    assert [e.address for e in by_name["https"]] == ["10.244.2.11:8443"]
