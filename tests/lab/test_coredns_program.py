"""The lab CoreDNS as a process on loopback, against a lab API server and the lab upstream resolver.

No root: everything listens on 127.0.0.1 free ports; the Corefile is kubeadm's with ports, ``bind``
and a ``kubeconfig`` line added (the same options real CoreDNS accepts).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.rdatatype
import kubernetes
import pytest

from clusters.lab.api import RunningApiServer, start_api_server, write_kubeconfig
from tests.lab.coredns_support import Program, answers, free_port, http_get, poll, program, query, rcode

NS = "dnstest"
CORE = "clusters.lab.programs.coredns"
UPSTREAM = "clusters.lab.programs.upstream"
FATAL = re.compile(
    r'^\[FATAL\] plugin/loop: Loop \((127\.0\.0\.1:\d+) -> (\S*:\d+)\) detected for zone "\.", '
    r"see https://coredns\.io/plugins/loop#troubleshooting\. "
    r'Query: "HINFO (\d+)\.(\d+)\."$',
    re.M,
)


def kubeadm_corefile(
    port: int, kubeconfig: Path, upstream: int, health: int, ready: int, metrics: int
) -> str:
    """kubeadm's ≥1.32 Corefile, with loopback ports and a kubeconfig instead of in-cluster config."""
    return f"""\
.:{port} {{
    bind 127.0.0.1
    errors
    health 127.0.0.1:{health} {{
       lameduck 1s
    }}
    ready 127.0.0.1:{ready}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
       kubeconfig {kubeconfig}
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }}
    prometheus 127.0.0.1:{metrics}
    forward . 127.0.0.1:{upstream} {{
       max_concurrent 1000
    }}
    cache 30 {{
       disable success cluster.local
       disable denial cluster.local
    }}
    loop
    reload
    loadbalance
}}
"""


@dataclass(frozen=True)
class Lab:
    api: Any  # kubernetes ApiClient
    port: int
    health: int
    ready: int
    metrics: int
    front_ip: str
    coredns: Program


def _core(api: Any) -> Any:
    return kubernetes.client.CoreV1Api(api)


def _create_objects(api: Any) -> str:
    core = _core(api)
    core.create_namespace({"metadata": {"name": NS}})
    front = core.create_namespaced_service(
        NS,
        {
            "metadata": {"name": "front"},
            "spec": {
                "selector": {"app": "front"},
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            },
        },
    )
    core.create_namespaced_service(
        NS,
        {
            "metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "pg", "port": 5432}]},
        },
    )
    core.create_namespaced_service(
        NS,
        {"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "example.lab.test"}},
    )
    core.create_namespaced_service(
        NS,
        {
            "metadata": {"name": "alias"},
            "spec": {"type": "ExternalName", "externalName": f"front.{NS}.svc.cluster.local"},
        },
    )
    kubernetes.client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(
        NS,
        {
            "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": True}},
                {"addresses": ["10.244.2.6"], "hostname": "db-1", "conditions": {"ready": True}},
            ],
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        },
    )
    core.create_namespaced_pod(
        NS,
        {
            "metadata": {"name": "client", "labels": {"app": "client"}},
            "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53"}]},
        },
    )
    return str(front.spec.cluster_ip)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("coredns")
    server: RunningApiServer = start_api_server(port=0)
    api = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=server.url))
    try:
        front_ip = _create_objects(api)
        kubeconfig = write_kubeconfig(tmp / "kubeconfig", server.url)
        up_port, port, health, ready, metrics = (free_port() for _ in range(5))
        with program(UPSTREAM, ["--listen", f"127.0.0.1:{up_port}"], tmp / "upstream.log"):
            conf = tmp / "Corefile"
            conf.write_text(kubeadm_corefile(port, kubeconfig, up_port, health, ready, metrics))
            with program(CORE, ["-conf", str(conf)], tmp / "coredns.log") as core:
                poll(lambda: http_get(f"http://127.0.0.1:{ready}/ready")[0] == 200, 20, "/ready 200")
                poll(lambda: "CoreDNS-" in core.output(), 10, "the start-up banner")
                yield Lab(api, port, health, ready, metrics, front_ip, core)
    finally:
        api.close()
        server.stop()


def test_startup_lines(lab: Lab) -> None:
    out = lab.coredns.output()
    assert out.splitlines()[0] == f".:{lab.port}"
    assert re.search(r"^\[INFO\] plugin/reload: Running configuration SHA512 = [0-9a-f]{128}$", out, re.M)
    assert re.search(r"^CoreDNS-1\.12\.\d+$", out, re.M)
    assert re.search(r"^linux/\w+, go1\.\d+\.\d+, [0-9a-f]+$", out, re.M)


def test_service_a_record(lab: Lab) -> None:
    msg = query(lab.port, f"front.{NS}.svc.cluster.local", "A")
    assert rcode(msg) == "NOERROR"
    assert answers(msg) == [lab.front_ip]
    assert msg.answer[0].ttl == 30
    assert msg.flags & dns.flags.AA


def test_srv_record(lab: Lab) -> None:
    msg = query(lab.port, f"_http._tcp.front.{NS}.svc.cluster.local", "SRV")
    assert answers(msg) == [f"0 100 80 front.{NS}.svc.cluster.local."]
    assert [rd.to_text() for rrset in msg.additional for rd in rrset] == [lab.front_ip]


def test_headless_service_and_hostnames(lab: Lab) -> None:
    assert answers(query(lab.port, f"db.{NS}.svc.cluster.local", "A")) == ["10.244.1.5", "10.244.2.6"]
    assert answers(query(lab.port, f"db-1.db.{NS}.svc.cluster.local", "A")) == ["10.244.2.6"]
    assert answers(query(lab.port, f"_pg._tcp.db.{NS}.svc.cluster.local", "SRV")) == [
        f"0 50 5432 db-0.db.{NS}.svc.cluster.local.",
        f"0 50 5432 db-1.db.{NS}.svc.cluster.local.",
    ]


def test_ptr_records(lab: Lab) -> None:
    rev = ".".join(reversed(lab.front_ip.split("."))) + ".in-addr.arpa"
    assert answers(query(lab.port, rev, "PTR")) == [f"front.{NS}.svc.cluster.local."]
    assert answers(query(lab.port, "5.1.244.10.in-addr.arpa", "PTR")) == [f"db-0.db.{NS}.svc.cluster.local."]


def test_unknown_reverse_falls_through_to_upstream(lab: Lab) -> None:
    assert answers(query(lab.port, "253.255.18.172.in-addr.arpa", "PTR")) == ["upstream.lab.test."]


def test_external_name_cname_is_chased_upstream(lab: Lab) -> None:
    msg = query(lab.port, f"ext.{NS}.svc.cluster.local", "A")
    kinds = [(str(rrset.name), dns.rdatatype.to_text(rrset.rdtype)) for rrset in msg.answer]
    assert kinds == [(f"ext.{NS}.svc.cluster.local.", "CNAME"), ("example.lab.test.", "A")]
    assert answers(msg) == ["192.0.2.10", "example.lab.test."]


def test_external_name_inside_the_cluster_zone_is_answered_from_the_index(lab: Lab) -> None:
    msg = query(lab.port, f"alias.{NS}.svc.cluster.local", "A")
    kinds = [(str(rrset.name), dns.rdatatype.to_text(rrset.rdtype)) for rrset in msg.answer]
    assert kinds == [
        (f"alias.{NS}.svc.cluster.local.", "CNAME"),
        (f"front.{NS}.svc.cluster.local.", "A"),
    ]
    assert answers(msg)[0] == lab.front_ip


def test_nxdomain_carries_soa(lab: Lab) -> None:
    msg = query(lab.port, f"nope.{NS}.svc.cluster.local", "A")
    assert rcode(msg) == "NXDOMAIN"
    soa = msg.authority[0]
    assert str(soa.name) == "cluster.local."
    assert soa[0].mname.to_text() == "ns.dns.cluster.local."
    assert soa[0].minimum == 30


def test_pod_record_insecure(lab: Lab) -> None:
    assert answers(query(lab.port, f"10-244-1-9.{NS}.pod.cluster.local", "A")) == ["10.244.1.9"]


def test_upstream_forwarding_udp_and_tcp(lab: Lab) -> None:
    assert answers(query(lab.port, "upstream.lab.test", "A")) == ["172.18.255.253"]
    assert answers(query(lab.port, "example.lab.test", "AAAA", tcp=True)) == ["2001:db8::10"]
    assert rcode(query(lab.port, "missing.lab.test", "A")) == "NXDOMAIN"


def test_health_ready_metrics(lab: Lab) -> None:
    assert http_get(f"http://127.0.0.1:{lab.health}/health") == (200, "OK")
    assert http_get(f"http://127.0.0.1:{lab.ready}/ready") == (200, "OK")
    status, body = http_get(f"http://127.0.0.1:{lab.metrics}/metrics")
    assert status == 200
    assert 'coredns_dns_requests_total{proto="udp",type="A"}' in body


def test_watch_sees_new_and_deleted_services(lab: Lab) -> None:
    core = _core(lab.api)
    svc = core.create_namespaced_service(
        NS, {"metadata": {"name": "late"}, "spec": {"ports": [{"port": 8080}], "selector": {"app": "late"}}}
    )
    name = f"late.{NS}.svc.cluster.local"
    poll(lambda: answers(query(lab.port, name, "A")) == [svc.spec.cluster_ip], 10, f"{name} to resolve")
    core.delete_namespaced_service("late", NS, _preload_content=False)
    poll(lambda: rcode(query(lab.port, name, "A")) == "NXDOMAIN", 10, f"{name} to be gone")


# -- processes of their own ------------------------------------------------------------------------


def test_unknown_plugin_fails_start(tmp_path: Path) -> None:
    conf = tmp_path / "Corefile"
    conf.write_text(f".:{free_port()} {{\n    bind 127.0.0.1\n    errors\n    proxy . 127.0.0.1\n}}\n")
    with program(CORE, ["-conf", str(conf)], tmp_path / "out.log") as p:
        code = p.proc.wait(timeout=30)
        assert code == 1
        assert f"{conf}:4 - Error during parsing: Unknown directive 'proxy'" in p.output()


def test_forward_to_itself_is_a_fatal_loop(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "Corefile"
    conf.write_text(
        f".:{port} {{\n    bind 127.0.0.1\n    errors\n    forward . 127.0.0.1:{port}\n    loop\n}}\n"
    )
    with program(CORE, ["-conf", str(conf)], tmp_path / "out.log") as p:
        code = p.proc.wait(timeout=10)
        out = p.output()
        assert code == 1, out
        m = FATAL.search(out)
        assert m is not None, out
        assert m.group(2) == f"127.0.0.1:{port}"


def test_loop_through_a_second_server_is_detected(tmp_path: Path) -> None:
    """A → B → A …: like forwarding to the kube-dns Service that leads back to CoreDNS."""
    a, b = free_port(), free_port()
    conf_a, conf_b = tmp_path / "A", tmp_path / "B"
    conf_a.write_text(f".:{a} {{\n    bind 127.0.0.1\n    forward . 127.0.0.1:{b}\n    loop\n}}\n")
    conf_b.write_text(f".:{b} {{\n    bind 127.0.0.1\n    forward . 127.0.0.1:{a}\n}}\n")
    with program(CORE, ["-conf", str(conf_b)], tmp_path / "b.log") as pb:
        # B must answer first: a probe that gets any reply (even SERVFAIL) ends the loop check
        poll(lambda: "CoreDNS-" in pb.output(), 15, "B's start-up banner")
        with program(CORE, ["-conf", str(conf_a)], tmp_path / "a.log") as pa:
            code = pa.proc.wait(timeout=15)
            assert code == 1, pa.output()
            assert FATAL.search(pa.output()) is not None
        assert pb.proc.poll() is None  # B has no loop plugin: it keeps running


def test_healthy_forward_passes_loop_check(tmp_path: Path) -> None:
    up, port = free_port(), free_port()
    conf = tmp_path / "Corefile"
    conf.write_text(f".:{port} {{\n    bind 127.0.0.1\n    forward . 127.0.0.1:{up}\n    loop\n}}\n")
    with (
        program(UPSTREAM, ["--listen", f"127.0.0.1:{up}"], tmp_path / "up.log"),
        program(CORE, ["-conf", str(conf)], tmp_path / "out.log") as p,
    ):
        poll(lambda: answers(query(port, "upstream.lab.test", "A")) == ["172.18.255.253"], 10, "an answer")
        deadline = time.monotonic() + 3  # the probe has had its answer; nothing may kill us now
        while time.monotonic() < deadline:
            assert p.proc.poll() is None, p.output()
            time.sleep(0.2)
        assert "[FATAL]" not in p.output()


def test_reload_picks_up_changed_corefile(tmp_path: Path) -> None:
    up1, up2, port = free_port(), free_port(), free_port()
    conf = tmp_path / "Corefile"

    def corefile(upstream: int, extra: str = "") -> str:
        body = f"    bind 127.0.0.1\n    errors\n{extra}    forward . 127.0.0.1:{upstream}\n    reload 2s\n"
        return f".:{port} {{\n{body}}}\n"

    conf.write_text(corefile(up1))
    with (
        program(UPSTREAM, ["--listen", f"127.0.0.1:{up1}"], tmp_path / "up1.log"),
        program(
            UPSTREAM,
            ["--listen", f"127.0.0.1:{up2}", "--record", "moved.lab.test=192.0.2.77"],
            tmp_path / "up2.log",
        ),
        program(CORE, ["-conf", str(conf)], tmp_path / "out.log") as p,
    ):
        poll(lambda: rcode(query(port, "moved.lab.test", "A")) == "NXDOMAIN", 10, "first upstream's NXDOMAIN")
        conf.write_text(
            corefile(up1, "    bogus\n")
        )  # a broken edit is refused; the old config keeps serving
        poll(lambda: "Restart failed" in p.output(), 10, "the failed reload to be logged")
        assert rcode(query(port, "moved.lab.test", "A")) == "NXDOMAIN"
        conf.write_text(corefile(up2))
        poll(lambda: answers(query(port, "moved.lab.test", "A")) == ["192.0.2.77"], 15, "the reload")
        assert "[INFO] Reloading complete" in p.output()
        assert len(re.findall(r"Running configuration SHA512 = ", p.output())) == 2


def test_unreachable_api_is_not_ready_and_servfails(tmp_path: Path) -> None:
    port, ready, dead = free_port(), free_port(), free_port()
    conf = tmp_path / "Corefile"
    conf.write_text(
        f".:{port} {{\n    bind 127.0.0.1\n    ready 127.0.0.1:{ready}\n"
        f"    kubernetes cluster.local {{\n        endpoint http://127.0.0.1:{dead}\n"
        "        startup_timeout 1s\n    }\n}\n"
    )
    with program(CORE, ["-conf", str(conf)], tmp_path / "out.log") as p:
        poll(lambda: "CoreDNS-" in p.output(), 15, "the start-up banner")
        assert poll(lambda: http_get(f"http://127.0.0.1:{ready}/ready"), 15, "/ready to answer") == (
            503,
            "kubernetes",
        )
        assert rcode(query(port, "kubernetes.default.svc.cluster.local", "A")) == "SERVFAIL"
        assert "[WARNING] plugin/kubernetes: starting server with unsynced Kubernetes API" in p.output()


def test_missing_corefile_fails_start(tmp_path: Path) -> None:
    with program(CORE, ["-conf", str(tmp_path / "nope")], tmp_path / "out.log") as p:
        assert p.proc.wait(timeout=30) == 1
        assert f"open {tmp_path / 'nope'}: no such file or directory" in p.output()
