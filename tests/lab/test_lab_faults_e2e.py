"""Classic cluster-network faults in the embedded lab, injected the way a person does it on kind
(edit a kube-system ConfigMap, `kubectl rollout restart`, apply a NetworkPolicy) and observed the way
a person would (pod states, container logs, EndpointSlices, probes from pods).

Facts asserted come from reference §3.2 (CoreDNS loop) and §3.3 (bad kube-proxy ConfigMap). Every
fault is reverted in ``finally`` and the revert is checked, so one failure does not cascade. One lab
serves the module; its teardown asserts nothing with the lab's prefix is left.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from .labkit import Lab, Manifest, PodView, agnhost_pod, responses, settle, started_lab, wait_for

pytestmark = pytest.mark.lab
NS = "faults-e2e"
NP_NS = "netpol-e2e"  # only the server: a deny-all there must not cut the probe clients off
NP_CLIENTS = "netpol-e2e-clients"
SYSTEM = "kube-system"
LOOP_FATAL = re.compile(
    r'\[FATAL\] plugin/loop: Loop \(127\.0\.0\.1:\d+ -> :53\) detected for zone "\.", '
    r'see https://coredns\.io/plugins/loop#troubleshooting\. Query: "HINFO \d+\.\d+\."'
)
# kube-proxy logs the error inside err="...", so the quotes around foo arrive escaped
BAD_MODE = re.compile(r'Invalid value: \\?"foo\\?": must be iptables, ipvs, nftables or blank')


def _service(name: str, selector: dict[str, str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }


def _policy(name: str, spec: Manifest) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


@dataclass(frozen=True)
class World:
    """Clients on both workers and one backend on the second worker, behind Service ``echo``."""

    lab: Lab
    clients: dict[str, str]  # node -> client pod name (namespace NS)
    client_ips: dict[str, str]  # client pod name -> pod IP
    backend: str
    np_server_ip: str

    def connects(
        self, src: str, target: str, expect: str = "CONNECTED", ns: str = NS
    ) -> Callable[[], tuple[bool, str]]:
        def check() -> tuple[bool, str]:
            probe = self.lab.connect(ns, src, target)
            return probe.verdict == expect, f"expected {expect}, got {probe.verdict}: {probe.output.strip()}"

        return check

    def service_ip(self, name: str) -> str:
        return self.lab.service(NS, name).cluster_ip


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with started_lab("faults") as the_lab:
        yield the_lab


@pytest.fixture(scope="module")
def world(lab: Lab) -> World:
    w1, w2 = lab.workers
    lab.namespace(NS)
    lab.namespace(NP_NS)
    lab.namespace(NP_CLIENTS)
    clients = {w1: "client-w1", w2: "client-w2"}
    lab.apply(
        NS,
        agnhost_pod("echo-far", {"app": "echo"}, w2),
        *(agnhost_pod(name, {"role": "client"}, node) for node, name in clients.items()),
        _service("echo", {"app": "echo"}),
    )
    lab.apply(NP_NS, agnhost_pod("server", {"app": "server"}, w2))
    lab.apply(
        NP_CLIENTS,
        agnhost_pod("allowed", {"role": "allowed"}, w1),
        agnhost_pod("other", {"role": "other"}, w1),
        agnhost_pod("other-w2", {"role": "other"}, w2),
    )
    wanted = [(NS, n) for n in (*clients.values(), "echo-far")]
    wanted += [(NP_CLIENTS, n) for n in ("allowed", "other", "other-w2")] + [(NP_NS, "server")]
    pods = {(ns, n): wait_for(f"{ns}/{n} Ready", functools.partial(lab.ready_pod, ns, n)) for ns, n in wanted}
    return World(
        lab=lab,
        clients=clients,
        client_ips={name: pods[NS, name].ip for name in clients.values()},
        backend=pods[NS, "echo-far"].ip,
        np_server_ip=pods[NP_NS, "server"].ip,
    )


# --- CoreDNS ---------------------------------------------------------------------------------


def _corefile(lab: Lab) -> str:
    return lab.config_data(SYSTEM, "coredns", "Corefile")


def _patch_config(lab: Lab, configmap: str, key: str, text: str) -> None:
    """Edit one key of a kube-system ConfigMap with kubectl, as a person would."""
    patch = json.dumps({"data": {key: text}})
    lab.kubectl("-n", SYSTEM, "patch", "configmap", configmap, "--type", "merge", "-p", patch)


def _set_corefile(lab: Lab, text: str) -> None:
    _patch_config(lab, "coredns", "Corefile", text)


def _logs(lab: Lab, ns: str, pod: str) -> str:
    """The current and the previous container's log: a crash-looping pod may be between the two."""
    now = lab.kubectl("-n", ns, "logs", pod, check=False).stdout
    before = lab.kubectl("-n", ns, "logs", pod, "--previous", check=False).stdout
    return now + before


def _coredns_healthy(lab: Lab) -> list[PodView] | None:
    pods = lab.pods(SYSTEM, "k8s-app=kube-dns")
    return pods if len(pods) == 2 and all(p.serving for p in pods) else None


def test_coredns_forward_loop_crashes_every_replica_and_breaks_cluster_dns(world: World) -> None:
    lab = world.lab
    client = world.clients[lab.workers[0]]
    original = _corefile(lab)
    assert "forward . /etc/resolv.conf" in original
    before = {p.name for p in lab.pods(SYSTEM, "k8s-app=kube-dns")}
    try:
        _set_corefile(lab, original.replace("forward . /etc/resolv.conf", "forward . 127.0.0.1"))
        lab.kubectl("-n", SYSTEM, "rollout", "restart", "deploy/coredns")
        # The rollout keeps one old pod (maxUnavailable 1), which would only loop once `reload`
        # sees the edit (30 s ± 15 s after the kubelet refreshes the volume). Deleting the old
        # pods, as the runbook does, makes every replica start on the looping Corefile now.
        wait_for(
            "the new ReplicaSet's pods",
            lambda: {p.name for p in lab.pods(SYSTEM, "k8s-app=kube-dns")} - before,
        )
        lab.kubectl("-n", SYSTEM, "delete", "pod", "--wait=false", *sorted(before), check=False)

        def all_crashlooping() -> list[PodView] | None:
            pods = lab.pods(SYSTEM, "k8s-app=kube-dns")
            gone = any(p.name in before for p in pods)
            ok = len(pods) >= 2 and not gone and all(p.waiting == "CrashLoopBackOff" for p in pods)
            return pods if ok else None

        crashing = wait_for("every CoreDNS pod in CrashLoopBackOff", all_crashlooping, timeout=40)
        for pod in crashing:
            logs = _logs(lab, SYSTEM, pod.name)
            assert LOOP_FATAL.search(logs), f"{pod.name} logged no loop FATAL line:\n{logs}"
            assert pod.last_exit_code == 1 and pod.restarts >= 1, pod
        # Old replicas in their graceful shutdown still serve (CoreDNS's lameduck), and kube-proxy
        # falls back to serving terminating endpoints when none is ready.
        wait_for(
            "kube-dns without serving endpoints",
            lambda: lab.serving_endpoints(SYSTEM, "kube-dns") == [],
            timeout=60,
        )
        assert lab.connect(NS, client, "echo:80").verdict == "DNS", "a lookup must fail with no DNS server"
    finally:
        _set_corefile(lab, original)
        lab.kubectl("-n", SYSTEM, "rollout", "restart", "deploy/coredns")
    assert _corefile(lab) == original
    healed = wait_for("2 Ready CoreDNS pods after the fix", lambda: _coredns_healthy(lab), timeout=60)
    assert all(not LOOP_FATAL.search(_logs(lab, SYSTEM, p.name)) for p in healed)
    settle("DNS works again", {"echo by name": world.connects(client, "echo:80")})


# --- kube-proxy ------------------------------------------------------------------------------


def _proxy_config(lab: Lab) -> str:
    return lab.config_data(SYSTEM, "kube-proxy", "config.conf")


def _set_proxy_config(lab: Lab, text: str) -> None:
    _patch_config(lab, "kube-proxy", "config.conf", text)


def _proxy_pods(lab: Lab) -> list[PodView]:
    return lab.pods(SYSTEM, "k8s-app=kube-proxy")


def _restart_proxies(lab: Lab) -> set[str]:
    """``rollout restart ds/kube-proxy``; returns the names of the pods it replaces."""
    old = {p.name for p in _proxy_pods(lab)}
    lab.kubectl("-n", SYSTEM, "rollout", "restart", "ds/kube-proxy")
    return old


def _proxies_running(lab: Lab, old: set[str]) -> list[PodView] | None:
    """Every node runs a new, Ready kube-proxy and none of ``old`` is left."""
    pods = _proxy_pods(lab)
    fresh = [p for p in pods if p.name not in old and p.ready and p.phase == "Running"]
    return fresh if len(pods) == len(lab.nodes) == len(fresh) else None


def _restore_proxy_config(lab: Lab, original: str) -> None:
    _set_proxy_config(lab, original)
    old = _restart_proxies(lab)
    wait_for(
        "a Running kube-proxy on every node after the fix", lambda: _proxies_running(lab, old), timeout=40
    )


def _mounted_config(lab: Lab, pod: PodView) -> str:
    """The config.conf the lab kubelet put in this kube-proxy pod's ConfigMap volume."""
    return (lab.root / "pods" / pod.uid / "volumes" / "kube-proxy" / "config.conf").read_text()


def _mounted_says(lab: Lab, pod: PodView, text: str) -> bool:
    return text in _mounted_config(lab, pod)


def test_bad_kube_proxy_mode_crashes_only_after_restart_and_freezes_the_rules(world: World) -> None:
    lab = world.lab
    original = _proxy_config(lab)
    assert re.search(r'^mode: (iptables|"")$', original, re.MULTILINE), original
    running = {p.name: p for p in _proxy_pods(lab)}
    restarts = {n: p.restarts for n, p in running.items()}
    try:
        _set_proxy_config(lab, re.sub(r"^mode: .*$", "mode: foo", original, flags=re.MULTILINE))
        lab.apply(NS, _service("early", {"app": "echo"}))
        # Until a restart nothing reads the edit, even once the kubelet has swapped the new file in.
        for pod in running.values():
            wait_for(
                f"{pod.name}'s volume shows mode: foo",
                functools.partial(_mounted_says, lab, pod, "mode: foo"),
                timeout=30,
            )
        now = {p.name: p for p in _proxy_pods(lab)}
        assert set(now) == set(running)
        assert {n: p.restarts for n, p in now.items()} == restarts
        assert all(p.phase == "Running" and p.ready and p.waiting is None for p in now.values())
        settle(
            "a Service created after the edit, before the restart",
            {f"{c} -> early": world.connects(c, "early:80") for c in world.clients.values()},
        )

        old = _restart_proxies(lab)

        # A real rollout (maxUnavailable 1) may stall after the first node if kubelet never sees
        # the crashing pod Ready; the lab's slower-dying kube-proxy lets it roll on. Either way,
        # judge the nodes whose kube-proxy did crash.
        def crashed_under_clients() -> dict[str, PodView] | None:
            crashed = {
                p.node: p for p in _proxy_pods(lab) if p.name not in old and p.waiting == "CrashLoopBackOff"
            }
            return crashed if set(crashed) & set(world.clients) else None

        crashed = wait_for("a restarted kube-proxy in CrashLoopBackOff", crashed_under_clients, timeout=30)
        for pod in crashed.values():
            logs = _logs(lab, SYSTEM, pod.name)
            assert BAD_MODE.search(logs), f"{pod.name}: no ProxyMode validation error:\n{logs}"
        lab.apply(NS, _service("late", {"app": "echo"}))
        wait_for("late's endpoint", lambda: lab.ready_endpoints(NS, "late") == [world.backend])
        late_ip = world.service_ip("late")
        checks: dict[str, Callable[[], tuple[bool, str]]] = {}
        for node in set(crashed) & set(world.clients):
            c = world.clients[node]
            checks[f"{c} -> echo (old rules)"] = world.connects(c, "echo:80")
            checks[f"{c} -> early (old rules)"] = world.connects(c, "early:80")
            # by name: CoreDNS (which reads the API) knows it, only the data plane does not
            checks[f"{c} -> late {late_ip} (never programmed)"] = world.connects(c, "late:80", "TIMEOUT")
        settle("Services while kube-proxy crash-loops", checks, timeout=10)
    finally:
        _restore_proxy_config(lab, original)
    settle(
        "the late Service once kube-proxy runs again",
        {f"{c} -> late": world.connects(c, "late:80") for c in world.clients.values()},
    )


def test_wrong_cluster_cidr_masquerades_pod_to_service_traffic(world: World) -> None:
    lab = world.lab
    node = lab.workers[0]  # the backend runs on the other worker: the reply crosses the underlay
    client = world.clients[node]
    client_ip, node_ip = world.client_ips[client], lab.node_ip(node)
    echo_ip = world.service_ip("echo")

    def source_is(expected: str) -> Callable[[], tuple[bool, str]]:
        def check() -> tuple[bool, str]:
            answer = lab.dial(NS, client, echo_ip, 80, request="clientip")
            seen = (responses(answer) or [str(answer)])[0].rsplit(":", 1)[0]
            return seen == expected, f"backend saw {seen}, expected {expected}"

        return check

    settle("the backend sees the client pod IP", {"clientip": source_is(client_ip)})
    original = _proxy_config(lab)
    assert "clusterCIDR: 10.244.0.0/16" in original
    try:
        _set_proxy_config(lab, original.replace("clusterCIDR: 10.244.0.0/16", "clusterCIDR: 10.99.0.0/16"))
        old = _restart_proxies(lab)
        wait_for(
            "kube-proxy Running with the wrong clusterCIDR", lambda: _proxies_running(lab, old), timeout=30
        )
        settle("the backend sees the node IP (masqueraded)", {"clientip": source_is(node_ip)})
    finally:
        _restore_proxy_config(lab, original)
    settle("the backend sees the client pod IP again", {"clientip": source_is(client_ip)})


# --- NetworkPolicy ---------------------------------------------------------------------------


def test_deny_all_ingress_then_allow_one_client_label(world: World) -> None:
    lab = world.lab
    target = f"{world.np_server_ip}:8080"
    clients = ("allowed", "other", "other-w2")  # other-w2 shares the server's node

    def expect(verdicts: dict[str, str]) -> dict[str, Callable[[], tuple[bool, str]]]:
        return {f"{c} -> server": world.connects(c, target, verdicts[c], ns=NP_CLIENTS) for c in clients}

    open_all = dict.fromkeys(clients, "CONNECTED")
    settle("no policy: every client reaches the server", expect(open_all))
    deny = _policy("deny-all-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
    allow = _policy(
        "allow-from-allowed",
        {
            "podSelector": {"matchLabels": {"app": "server"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NP_CLIENTS}},
                            "podSelector": {"matchLabels": {"role": "allowed"}},
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": 8080}],
                }
            ],
        },
    )
    try:
        lab.apply(NP_NS, deny)
        settle("deny-all: every client times out", expect(dict.fromkeys(clients, "TIMEOUT")))
        lab.apply(NP_NS, allow)
        settle(
            "allow role=allowed: only that client gets in",
            expect({"allowed": "CONNECTED", "other": "TIMEOUT", "other-w2": "TIMEOUT"}),
        )
    finally:
        lab.kubectl(
            "-n",
            NP_NS,
            "delete",
            "networkpolicy",
            "deny-all-ingress",
            "allow-from-allowed",
            "--ignore-not-found",
        )
    settle("policies deleted: every client reaches the server again", expect(open_all))
