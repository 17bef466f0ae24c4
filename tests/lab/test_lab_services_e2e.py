"""Services and cluster DNS in the embedded lab, end to end: a 3-replica agnhost Deployment behind
ClusterIP, NodePort, LoadBalancer, headless and ExternalName Services, probed from a client pod
pinned to every node (the control plane included) through the API server's pod proxy.

One lab serves the module; its teardown asserts nothing with the lab's prefix is left.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .labkit import (
    AGNHOST,
    Connect,
    Lab,
    Manifest,
    PodView,
    agnhost_pod,
    connected,
    parallel,
    responses,
    settle,
    started_lab,
    wait_for,
)

pytestmark = pytest.mark.lab
NS = "svc-e2e"
LB_POOL = ipaddress.ip_network("172.18.255.0/24")
UPSTREAM_IP = "172.18.255.253"  # what the lab's upstream resolver answers for upstream.lab.test


def _service(name: str, spec: Manifest) -> Manifest:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def _objects() -> list[Manifest]:
    web = {"app": "web"}
    deployment: Manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": web},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": web},
            "template": {
                "metadata": {"labels": web},
                "spec": {
                    "containers": [
                        {
                            "name": "netexec",
                            "image": AGNHOST,
                            # UDP on the HTTP port number: one Service port 80 carries TCP and UDP
                            "args": ["netexec", "--http-port=8080", "--udp-port=8080"],
                            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                        }
                    ]
                },
            },
        },
    }
    http = {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    return [
        deployment,
        _service(
            "web",
            {
                "selector": web,
                "ports": [http, {"name": "udp", "port": 80, "targetPort": 8080, "protocol": "UDP"}],
            },
        ),
        _service("web-np", {"type": "NodePort", "selector": web, "ports": [http]}),
        _service("web-lb", {"type": "LoadBalancer", "selector": web, "ports": [http]}),
        _service(
            "web-headless",
            {
                "clusterIP": "None",
                "selector": web,
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            },
        ),
        _service("upstream", {"type": "ExternalName", "externalName": "upstream.lab.test"}),
    ]


@dataclass(frozen=True)
class World:
    lab: Lab
    clients: dict[str, str]  # node -> client pod name
    client_ips: dict[str, str]  # client pod name -> pod IP
    backends: dict[str, str]  # backend pod name -> pod IP
    cluster_ip: str
    node_port: int
    lb_ip: str

    def dial(
        self,
        src: str,
        host: str,
        port: int,
        request: str = "hostname",
        protocol: str = "http",
        tries: int = 1,
    ) -> dict[str, Any]:
        return self.lab.dial(NS, src, host, port, request, protocol, tries)

    def connect(self, src: str, target: str, protocol: str = "tcp") -> Connect:
        return self.lab.connect(NS, src, target, protocol)

    def answers_from_backend(
        self, src: str, host: str, port: int, protocol: str = "http"
    ) -> Callable[[], tuple[bool, str]]:
        def check() -> tuple[bool, str]:
            answer = self.dial(src, host, port, protocol=protocol)
            got = responses(answer)
            return len(got) == 1 and got[0] in self.backends, str(answer)

        return check


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with started_lab("svc") as the_lab:
        yield the_lab


@pytest.fixture(scope="module")
def world(lab: Lab) -> World:
    lab.namespace(NS)
    clients = {node: f"client-{i}" for i, node in enumerate(lab.nodes)}
    lab.apply(NS, *_objects(), *(agnhost_pod(pod, {"role": "client"}, node) for node, pod in clients.items()))
    wait_for("3 ready endpoints for Service web", lambda: len(set(lab.ready_endpoints(NS, "web"))) == 3)
    backends = wait_for("3 Ready web pods", lambda: _serving(lab.pods(NS, "app=web"), 3))
    pods = [wait_for(f"{n} Ready", functools.partial(lab.ready_pod, NS, n)) for n in clients.values()]
    assert {p.node for p in pods} == set(lab.nodes)
    lb_ip = wait_for("web-lb ingress IP", lambda: lab.service(NS, "web-lb").lb_ips)[0]
    return World(
        lab=lab,
        clients=clients,
        client_ips={p.name: p.ip for p in pods},
        backends={p.name: p.ip for p in backends},
        cluster_ip=lab.service(NS, "web").cluster_ip,
        node_port=lab.service(NS, "web-np").ports[0][2] or 0,
        lb_ip=lb_ip,
    )


def _serving(pods: list[PodView], count: int) -> list[PodView] | None:
    ready = [p for p in pods if p.serving]
    return ready if len(ready) == count else None


def test_every_node_reaches_the_cluster_ip_every_node_port_and_the_lb_ip(world: World) -> None:
    targets = {"ClusterIP": (world.cluster_ip, 80), "LoadBalancer": (world.lb_ip, 80)}
    for node in world.lab.nodes:
        targets[f"NodePort@{node}"] = (world.lab.node_ip(node), world.node_port)
    checks = {
        f"{src} -> {kind} {host}:{port}": world.answers_from_backend(src, host, port)
        for src in world.clients.values()
        for kind, (host, port) in targets.items()
    }
    assert len(checks) == 3 * 5
    settle("Service reachability from every node", checks)


def test_load_balancer_and_node_port_addresses_come_from_their_ranges(world: World) -> None:
    assert ipaddress.ip_address(world.lb_ip) in LB_POOL
    assert 30000 <= world.node_port <= 32767
    assert world.cluster_ip not in world.backends.values()
    assert ipaddress.ip_address(world.cluster_ip) in ipaddress.ip_network("10.96.0.0/16")


def test_cluster_ip_traffic_keeps_the_client_pod_ip(world: World) -> None:
    def seen_by_backend(src: str) -> str:
        answer = world.dial(src, world.cluster_ip, 80, request="clientip")
        return (responses(answer) or [str(answer)])[0].rsplit(":", 1)[0]

    names = list(world.clients.values())
    seen = dict(zip(names, parallel([functools.partial(seen_by_backend, n) for n in names]), strict=True))
    assert seen == world.client_ips, "a backend saw a NATed source instead of the client pod IP"


def _programmed_backends(world: World, node: str) -> set[str]:
    """Backend IPs in ``node``'s KUBE-SVC jump rules for web:http (the real comment format)."""
    nat = world.lab.channel.exec(node, ["iptables-save", "-t", "nat"], None, 30).stdout
    marker = f'"{NS}/web:http -> '
    return {
        line.split(marker, 1)[1].split(":", 1)[0]
        for line in nat.splitlines()
        if marker in line and "-j KUBE-SEP-" in line
    }


def test_cluster_ip_balances_over_more_than_one_backend(world: World) -> None:
    node = world.lab.workers[0]
    src = world.clients[node]
    # Endpoints Ready in the API is not rules on the node: kube-proxy syncs at most once per
    # minSyncPeriod (1 s), later on a loaded machine. Balance is judged once all three are programmed.
    everyone = set(world.backends.values())
    wait_for(f"all 3 backends in {node}'s rules", lambda: _programmed_backends(world, node) == everyone)
    answer = world.dial(src, world.cluster_ip, 80, tries=12)
    got = responses(answer)
    assert len(got) == 12, answer
    assert set(got) <= set(world.backends), answer
    assert len(set(got)) >= 2, f"12 requests all went to {set(got)}: no balancing"


def test_tcp_and_udp_share_the_service_port_number(world: World) -> None:
    ports = world.lab.service(NS, "web").ports
    assert {(port, proto) for port, proto, _ in ports} == {(80, "TCP"), (80, "UDP")}
    src = world.clients[world.lab.workers[1]]
    settle(
        "TCP and UDP on port 80",
        {
            "udp dial": world.answers_from_backend(src, world.cluster_ip, 80, protocol="udp"),
            "tcp dial": world.answers_from_backend(src, world.cluster_ip, 80, protocol="http"),
            "udp connect by name": connected(world.lab, NS, src, "web:80", "udp"),
        },
    )


def test_service_names_resolve_fully_qualified_and_through_the_search_path(world: World) -> None:
    fqdn = f"web.{NS}.svc.cluster.local"
    checks: dict[str, Callable[[], tuple[bool, str]]] = {}
    for src in (world.clients[world.lab.nodes[0]], world.clients[world.lab.workers[0]]):
        checks[f"{src} dial {fqdn}"] = world.answers_from_backend(src, fqdn, 80)
        checks[f"{src} dial web"] = world.answers_from_backend(src, "web", 80)
        checks[f"{src} connect {fqdn}"] = connected(world.lab, NS, src, f"{fqdn}:80")
    settle("cluster DNS names", checks)


def test_headless_name_resolves_to_the_backend_pod_ips(world: World) -> None:
    src = world.clients[world.lab.workers[0]]
    name = f"web-headless.{NS}.svc.cluster.local"
    tcp, udp = parallel(
        [
            lambda: world.connect(src, f"{name}:8080"),
            # nothing listens on UDP 8081 in the backends: the refusal names the address the name gave
            lambda: world.connect(src, f"{name}:8081", "udp"),
        ]
    )
    assert tcp.ok, tcp
    assert udp.verdict == "REFUSED", udp
    found = re.search(r"->(\d+\.\d+\.\d+\.\d+):8081", udp.output)
    assert found and found.group(1) in world.backends.values(), (
        f"the headless name should resolve to a pod IP {sorted(world.backends.values())}: {udp.output}"
    )
    answer = world.dial(src, "web-headless", 8080)
    assert responses(answer) and responses(answer)[0] in world.backends, answer


def test_external_name_resolves_through_the_upstream_resolver(world: World) -> None:
    src = world.clients[world.lab.workers[1]]
    probe = world.connect(src, "upstream:53", "udp")  # nothing answers there; the name must resolve
    assert probe.verdict != "DNS", probe
    assert f"->{UPSTREAM_IP}:53" in probe.output, (
        f"upstream (ExternalName upstream.lab.test) should resolve to {UPSTREAM_IP}: {probe.output}"
    )


def test_an_unknown_name_is_a_dns_error(world: World) -> None:
    probe = world.connect(world.clients[world.lab.workers[0]], "no-such-service:80")
    assert probe.verdict == "DNS", probe
    assert "no such host" in probe.output, probe
