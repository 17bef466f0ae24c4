"""Inject/revert pairs of the API-only faults, against the lab API server started in-process.

What must hold for every pair: the revert is a no-op (and says so) when the inject never ran; the
inject saves the original in the cluster before changing anything; a second inject keeps the
first original; the revert puts back exactly the original and is safe to run again; and a fault
whose process died is reverted by the sweep from the saved record alone. Plus the pure helpers
(the kube-proxy variants, partition rules, host-local address picking) without any server.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from clusters.handle import Cluster, NoNodeChannel
from clusters.lab import addons, bootstrap
from clusters.lab.api import RunningApiServer, start_api_server, write_kubeconfig
from clusters.recipes import load_recipe
from faults import context, originals, sweep
from faults.actions import cni, dns, ingress, kubeproxy, network

NS = "kube-system"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Cluster, Any]]:
    """An in-process lab API with kube-system bootstrapped as the lab does, and a Cluster on it."""
    server: RunningApiServer = start_api_server(port=0)
    try:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url)
        cluster = Cluster(
            "unit",
            "lab",
            kubeconfig,
            None,
            load_recipe("lab"),
            frozenset(),
            NoNodeChannel("unit test: API only"),
            "rtest1",
        )
        client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=server.url))
        objects = [*addons.kube_proxy(), *addons.coredns(), bootstrap.cni_daemonset("host-gw", "enforce")]
        for obj in objects:
            kubernetes.utils.create_from_dict(client, obj)
        with context.use_cluster(cluster):
            yield cluster, client
        client.close()
    finally:
        server.stop()


def _core(client: Any) -> Any:
    return kubernetes.client.CoreV1Api(client)


def _apps(client: Any) -> Any:
    return kubernetes.client.AppsV1Api(client)


def _corefile(client: Any) -> str:
    return str(_core(client).read_namespaced_config_map("coredns", NS).data["Corefile"])


def _proxy_conf(client: Any) -> str:
    return str(_core(client).read_namespaced_config_map("kube-proxy", NS).data["config.conf"])


def _selector(client: Any) -> dict[str, str]:
    return dict(_core(client).read_namespaced_service("kube-dns", NS).spec.selector)


def _replicas(client: Any) -> int:
    return int(_apps(client).read_namespaced_deployment("coredns", NS).spec.replicas)


def _agent_selector(client: Any) -> dict[str, str]:
    return dict(
        _apps(client).read_namespaced_daemon_set("lab-cni", NS).spec.template.spec.node_selector or {}
    )


Read = Callable[[Any], object]
Pair = tuple[Callable[[], dict[str, Any]], Callable[[], dict[str, Any]], Read]

PAIRS: dict[str, Pair] = {
    "coredns-loop": (lambda: dns.loop_coredns(), lambda: dns.restore_corefile(), _corefile),
    "coredns-loop-kube-dns": (
        lambda: dns.loop_coredns(target="kube-dns"),
        lambda: dns.restore_corefile(),
        _corefile,
    ),
    "kube-dns-selector": (dns.break_dns_service_selector, dns.restore_dns_service_selector, _selector),
    "coredns-zero": (dns.scale_coredns_to_zero, dns.restore_coredns_replicas, _replicas),
    **{
        f"kube-proxy-{v}": (
            (lambda v=v: kubeproxy.break_kube_proxy_config(variant=v)),  # type: ignore[misc]
            kubeproxy.restore_kube_proxy_config,
            _proxy_conf,
        )
        for v in kubeproxy.VARIANTS
    },
    "cni-agent": (cni.stop_cni_agent, cni.start_cni_agent, _agent_selector),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_revert_without_inject_changes_nothing(api: tuple[Cluster, Any], name: str) -> None:
    cluster, client = api
    _inject, revert, read = PAIRS[name]
    before = read(client)
    assert revert()["reverted"] is False
    assert revert()["reverted"] is False
    assert read(client) == before
    assert originals.list_all(cluster) == []


@pytest.mark.parametrize("name", list(PAIRS))
def test_inject_saves_original_and_revert_restores_it_once(api: tuple[Cluster, Any], name: str) -> None:
    cluster, client = api
    inject, revert, read = PAIRS[name]
    before = copy.deepcopy(read(client))
    inject()
    broken = read(client)
    assert broken != before
    records = originals.list_all(cluster)
    assert len(records) == 1 and records[0].run_id == "rtest1"
    assert records[0].name.startswith("kc-fault-rtest1-")
    inject()  # a second inject must not save the broken state as "original"
    assert len(originals.list_all(cluster)) == 1
    first = revert()
    assert first["reverted"] is True
    assert read(client) == before
    assert revert()["reverted"] is False
    assert read(client) == before
    assert originals.list_all(cluster) == []


def test_sweep_reverts_a_fault_whose_process_died(api: tuple[Cluster, Any]) -> None:
    """A new process knows nothing but the cluster: the record alone must be enough."""
    cluster, client = api
    before = (_corefile(client), _selector(client), _proxy_conf(client))
    dns.loop_coredns()
    dns.break_dns_service_selector()
    kubeproxy.break_kube_proxy_config(variant="invalid-yaml")
    assert _corefile(client) != before[0]
    # the sweep runs in another run (another run id) and reverts them all
    other = Cluster(
        cluster.name,
        cluster.provider,
        cluster.kubeconfig,
        None,
        cluster.cni,
        frozenset(),
        NoNodeChannel("unit test"),
        "rother",
    )
    swept = sweep.revert_all(other)
    assert sorted(r.fault for r in swept) == ["coredns-loop", "dns-service-selector", "kube-proxy-config"]
    assert all(not r.error for r in swept)
    assert (_corefile(client), _selector(client), _proxy_conf(client)) == before
    assert originals.list_all(cluster) == []
    assert sweep.revert_all(other) == []


def test_sweep_keeps_a_record_whose_revert_fails(api: tuple[Cluster, Any]) -> None:
    cluster, _ = api
    rec = originals.FaultRecord(
        "cni-config",
        "node/n1:/etc/cni/net.d/10-lab.conflist",
        "rold",
        originals.Revert("faults.actions.cni", "restore_cni_config", {"node": "n1"}),
        {"path": "/etc/cni/net.d/10-lab.conflist", "content": "{}"},
    )
    originals.save(cluster, rec)
    swept = sweep.revert_all(cluster)
    assert len(swept) == 1 and swept[0].error  # no such node here: reported, not raised
    assert len(originals.list_all(cluster)) == 1


def test_loop_rewrites_only_the_forward_line(api: tuple[Cluster, Any]) -> None:
    _, client = api
    before = _corefile(client)
    dns.loop_coredns()
    after = _corefile(client)
    assert "forward . 127.0.0.1 {" in after and "/etc/resolv.conf" not in after
    assert [ln for ln in before.splitlines() if "forward" not in ln] == [
        ln for ln in after.splitlines() if "forward" not in ln
    ]
    dns.restore_corefile()
    dns.loop_coredns(target="kube-dns")
    ip = _core(client).read_namespaced_service("kube-dns", NS).spec.cluster_ip
    assert f"forward . {ip} " in _corefile(client)


def test_restart_stamps_the_pod_template(api: tuple[Cluster, Any]) -> None:
    _, client = api
    dns.restart_coredns()
    kubeproxy.restart_kube_proxy()
    dep = _apps(client).read_namespaced_deployment("coredns", NS)
    ds = _apps(client).read_namespaced_daemon_set("kube-proxy", NS)
    for obj in (dep, ds):
        assert "kubectl.kubernetes.io/restartedAt" in (obj.spec.template.metadata.annotations or {})


def test_restore_with_restart_restarts_only_when_it_reverted(api: tuple[Cluster, Any]) -> None:
    _, client = api

    def stamp() -> object:
        ann = _apps(client).read_namespaced_deployment("coredns", NS).spec.template.metadata.annotations
        return (ann or {}).get("kubectl.kubernetes.io/restartedAt")

    assert dns.restore_corefile(restart=True)["reverted"] is False
    assert stamp() is None
    dns.loop_coredns()
    assert dns.restore_corefile(restart=True)["restarted"] is True
    assert stamp() is not None


def test_ingress_faults_on_a_demo_ingress(api: tuple[Cluster, Any]) -> None:
    cluster, client = api
    net = kubernetes.client.NetworkingV1Api(client)
    ns = "kc-chaos-rtest1"
    _core(client).create_namespace({"metadata": {"name": ns}})
    net.create_namespaced_ingress(
        ns,
        {
            "metadata": {"name": "web"},
            "spec": {
                "rules": [
                    {
                        "host": "web.x",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "web", "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ]
            },
        },
    )
    original = client.sanitize_for_serialization(net.read_namespaced_ingress("web", ns).spec)
    assert ingress.restore_ingress_backend()["reverted"] is False
    ingress.break_ingress_backend()
    spec = net.read_namespaced_ingress("web", ns).spec
    assert spec.rules[0].http.paths[0].backend.service.name == "knetcheck-missing-rtest1"
    ingress.restore_ingress_backend()
    assert client.sanitize_for_serialization(net.read_namespaced_ingress("web", ns).spec) == original

    assert ingress.restore_ingress_tls()["reverted"] is False
    ingress.expire_ingress_tls(host="web.x")
    tls = net.read_namespaced_ingress("web", ns).spec.tls
    secret = _core(client).read_namespaced_secret(tls[0].secret_name, ns)
    assert secret.type == "kubernetes.io/tls" and secret.metadata.labels["knetcheck.io/run-id"] == "rtest1"
    import base64

    from faults.doctor.ingress import openssl_enddate

    end = openssl_enddate(base64.b64decode(secret.data["tls.crt"]).decode())
    assert end is not None and end.year == 2020
    ingress.restore_ingress_tls()
    assert net.read_namespaced_ingress("web", ns).spec.tls is None
    assert ingress.restore_ingress_tls()["reverted"] is False
    with pytest.raises(kubernetes.client.exceptions.ApiException):
        _core(client).read_namespaced_secret(tls[0].secret_name, ns)
    assert originals.list_all(cluster) == []


# ---- pure helpers ------------------------------------------------------------------------------


ORIGINAL_PROXY = addons.kube_proxy_config()


@pytest.mark.parametrize(
    ("variant", "check"),
    [
        ("mode-foo", lambda d: d["mode"] == "foo"),
        ("wrong-kubeconfig", lambda d: d["clientConnection"]["kubeconfig"] == "/wrong/path"),
        ("wrong-cluster-cidr", lambda d: d["clusterCIDR"] == "10.99.0.0/16"),
    ],
)
def test_kube_proxy_variants_change_one_field(variant: str, check: Callable[[dict[str, Any]], bool]) -> None:
    doc = yaml.safe_load(kubeproxy.broken_config(ORIGINAL_PROXY, variant))
    assert check(doc)
    original = yaml.safe_load(ORIGINAL_PROXY)
    assert {k for k in doc if doc[k] != original.get(k)} <= {"mode", "clientConnection", "clusterCIDR"}


def test_invalid_yaml_variant_does_not_parse() -> None:
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(kubeproxy.broken_config(ORIGINAL_PROXY, "invalid-yaml"))


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="mode-foo"):
        kubeproxy.broken_config(ORIGINAL_PROXY, "mode-bar")


def test_partition_rules_drop_peer_pod_cidr_and_overlay_with_the_run_comment() -> None:
    rules = network.partition_rules(
        "172.18.0.4", ["10.244.2.0/24"], ("udp/8472", "ipip"), "knetcheck-fault-r1"
    )
    assert [
        "FORWARD",
        "-s",
        "10.244.2.0/24",
        "-m",
        "comment",
        "--comment",
        "knetcheck-fault-r1",
        "-j",
        "DROP",
    ] in rules
    assert any(r[:6] == ["INPUT", "-s", "172.18.0.4", "-p", "udp", "--dport"] for r in rules)
    assert any(r[:5] == ["OUTPUT", "-d", "172.18.0.4", "-p", "4"] for r in rules)
    assert all(r[-2:] == ["-j", "DROP"] and "knetcheck-fault-r1" in r for r in rules)


def test_free_addresses_skip_gateway_and_taken() -> None:
    ipam = {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/29"}]]}
    assert cni._free_addresses(ipam, {"10.244.1.3"}) == [
        "10.244.1.2",
        "10.244.1.4",
        "10.244.1.5",
        "10.244.1.6",
    ]


def test_malformed_conf_is_not_json() -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(cni._malformed("r1"))


def test_worker_tokens_resolve_to_worker_nodes_by_name(api: tuple[Cluster, Any]) -> None:
    from clusters.errors import UsageProblem
    from faults.actions import _support

    cluster, client = api
    for name, labels in (("b-cp", {_support.CONTROL_PLANE_ROLE: ""}), ("c-worker", {}), ("a-worker", {})):
        _core(client).create_node({"metadata": {"name": name, "labels": labels}})
    assert _support.resolve_node(cluster, "@worker1") == "a-worker"
    assert _support.resolve_node(cluster, "@worker2") == "c-worker"
    assert _support.resolve_node(cluster, "@worker") == "a-worker"
    assert _support.resolve_node(cluster, "b-cp") == "b-cp"
    for bad in ("@worker4", "@master", "nope"):
        with pytest.raises(UsageProblem):
            _support.resolve_node(cluster, bad)
