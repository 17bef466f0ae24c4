"""NetworkPolicy enforcement for real: the rules of :mod:`clusters.lab.netpol` in node namespaces.

A module fixture builds two nodes on the lab underlay (:class:`Underlay`) under a unique
``kncl-t-<hex>-`` prefix and wires by hand what the lab CNI leaves on a node (``cni0`` bridge
as the pods' gateway, veth pods with hairpin, host-gw routes) — by hand so these tests depend
only on the data plane's shape, not on the runtime — with five pods, each running agnhost
``serve-hostname`` on TCP 80 and UDP 53. Each test renders a model for both nodes, applies it
with ``iptables-restore --noflush`` inside each node's netns (what the agent's sync loop does),
and probes with ``agnhost connect`` from pod namespaces: exit 0, or ``TIMEOUT`` for a drop.

    w1: prod/web (app=web)   prod/client (app=client)   dev/other (app=other)
    w2: prod/remote (app=remote)   dev/dns (app=dns)
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from clusters.lab import layout
from clusters.lab.netns import list_netns
from clusters.lab.netpol import rules
from clusters.lab.netpol.model import Model, parse_namespace, parse_pod, parse_policy
from clusters.lab.netpol.sync import IptablesApplier, PolicySync
from clusters.lab.node.underlay import NodeNet, Underlay, root_links, sweep
from clusters.proc import run

pytestmark = pytest.mark.lab
log = logging.getLogger(__name__)

NODES = ("w1", "w2")
PODS = (
    ("w1", "prod", "web", "web"),
    ("w1", "prod", "client", "client"),
    ("w1", "dev", "other", "other"),
    ("w2", "prod", "remote", "remote"),
    ("w2", "dev", "dns", "dns"),
)


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "iptables-restore", "iptables-save"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


@dataclass
class PodRef:
    node: str
    namespace: str
    name: str
    app: str
    netns: str
    ip: str


@dataclass
class PolicyLab:
    prefix: str
    nets: dict[str, NodeNet]
    pods: dict[str, PodRef] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def model(self, *policies: dict[str, Any]) -> Model:
        pods = [
            {
                "metadata": {"namespace": p.namespace, "name": p.name, "labels": {"app": p.app}},
                "spec": {"nodeName": p.node, "containers": [{"name": "c"}]},
                "status": {"phase": "Running", "podIP": p.ip},
            }
            for p in self.pods.values()
        ]
        return Model(
            namespaces=tuple(parse_namespace({"metadata": {"name": n}}) for n in ("prod", "dev")),
            pods=tuple(parse_pod(p) for p in pods),
            policies=tuple(parse_policy(p) for p in policies),
        )

    def applier(self, node: str) -> IptablesApplier:
        return IptablesApplier(["ip", "netns", "exec", self.nets[node].netns])

    def apply(self, *policies: dict[str, Any]) -> None:
        """What every node's agent does for this set of policies (same code path as the sync)."""
        m = self.model(*policies)
        for node in NODES:
            applier = self.applier(node)
            applier.apply(rules.restore_text(rules.render(node, m), applier.current()))

    def connect(self, source: str, target: str, port: int = 80, protocol: str = "tcp") -> str:
        """``agnhost connect`` from pod ``source`` (or a node name: from the node itself)."""
        netns = self.nets[source].netns if source in self.nets else self.pods[source].netns
        argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "clusters.lab.programs.agnhost"]
        argv += ["connect", f"{self.pods[target].ip}:{port}", "--timeout=1s", f"--protocol={protocol}"]
        res = run(argv, timeout=20, check=False)
        return "OK" if res.ok else (res.stderr.strip().splitlines() or ["?"])[0].split(":")[0]


def _ip(netns: str, *lines: str) -> None:
    run(["ip", "-n", netns, "-batch", "-"], timeout=15, stdin="".join(line + "\n" for line in lines))


def _build_node(net: NodeNet, peers: list[NodeNet]) -> None:
    """What the lab CNI agent and the ``bridge`` plugin leave on a node: cni0 as the pods'
    gateway, host-gw routes to the other nodes' podCIDRs (bridge-nf-call-iptables is set by
    the underlay)."""
    gw = layout.node_pod_cidr(net.index).network_address + 1
    lines = ["link add cni0 type bridge", f"addr add {gw}/24 dev cni0", "link set cni0 up"]
    lines += [f"route add {layout.node_pod_cidr(p.index)} via {p.ip} dev eth0" for p in peers if p is not net]
    _ip(net.netns, *lines)


def _build_pod(prefix: str, net: NodeNet, name: str, host: int) -> tuple[str, str]:
    """A pod netns on the node's cni0, as the ``bridge`` plugin wires it (hairpin on)."""
    netns = f"{prefix}p-{name}"
    cidr = layout.node_pod_cidr(net.index)
    ip = str(cidr.network_address + host)
    veth = f"{layout.PREFIX}v{name}"[:15]
    run(["ip", "netns", "add", netns], timeout=15)
    _ip(
        net.netns,
        f"link add {veth} type veth peer name eth0 netns {netns}",
        f"link set {veth} master cni0",
        f"link set {veth} type bridge_slave hairpin on",
        f"link set {veth} up",
    )
    _ip(
        netns,
        "link set lo up",
        f"addr add {ip}/{cidr.prefixlen} dev eth0",
        "link set eth0 up",
        f"route add default via {cidr.network_address + 1} dev eth0",
    )
    return netns, ip


@pytest.fixture(scope="module")
def plab() -> Iterator[PolicyLab]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    prefix = f"kncl-t-{secrets.token_hex(3)}-"
    underlay = Underlay(prefix)
    state = PolicyLab(prefix=prefix, nets={})
    try:
        underlay.create()
        for i, node in enumerate(NODES, start=1):
            state.nets[node] = underlay.add_node(node, i)
        for net in state.nets.values():
            _build_node(net, list(state.nets.values()))
        for host, (node, namespace, name, app) in enumerate(PODS, start=2):
            netns, ip = _build_pod(prefix, state.nets[node], name, host)
            state.pods[name] = PodRef(node, namespace, name, app, netns, ip)
            serve = [sys.executable, "-m", "clusters.lab.programs.agnhost", "serve-hostname", "--http=false"]
            for flags in (["--tcp", "--udp", "--port=80"], ["--udp", "--port=53"]):
                argv = ["ip", "netns", "exec", netns, *serve, *flags]
                state.procs.append(
                    subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
        deadline = time.monotonic() + 15
        for name in state.pods:  # servers up: every pod answers before any policy
            while state.connect("w1", name) != "OK" or state.connect("w1", name, 53, "udp") != "OK":
                assert time.monotonic() < deadline, f"server in {name} did not come up"
        yield state
    finally:
        for proc in state.procs:
            proc.kill()
            proc.wait(timeout=10)
        underlay.destroy()  # the iptables rules die with the node namespaces
        sweep(prefix)  # the pod namespaces (and their veths)
        assert [n for n in list_netns() if n.startswith(prefix)] == []
        assert root_links(layout.PREFIX) == []


@pytest.fixture
def lab(plab: PolicyLab) -> Iterator[PolicyLab]:
    """Each test starts and ends with no policies (the skeleton chains only)."""
    plab.apply()
    try:
        yield plab
    finally:
        plab.apply()


def policy(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name}, "spec": spec}


DENY_PROD = policy("prod", "deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]})


def test_bridged_traffic_traverses_the_node_forward_chain(lab: PolicyLab) -> None:
    """The premise of enforcing on cni0: bridge-nf-call-iptables is on in each node netns."""
    for node in NODES:
        out = run(
            [
                "ip",
                "netns",
                "exec",
                lab.nets[node].netns,
                "sysctl",
                "-n",
                "net.bridge.bridge-nf-call-iptables",
            ],
            timeout=10,
        ).stdout
        assert out.strip() == "1"
    assert lab.connect("other", "web") == "OK"
    save = run(
        ["ip", "netns", "exec", lab.nets["w1"].netns, "iptables-save", "-c", "-t", "filter"], timeout=10
    )
    jump = next(line for line in save.stdout.splitlines() if line.endswith("-A FORWARD -j KNP-FORWARD"))
    packets = int(jump.split("]")[0].strip("[").split(":")[0])
    assert packets > 0  # same-node, bridged pod-to-pod packets were seen by FORWARD


def test_no_policy_allows_everything(lab: PolicyLab) -> None:
    assert lab.connect("other", "web") == "OK"
    assert lab.connect("dns", "web") == "OK"
    assert lab.connect("web", "remote") == "OK"
    assert lab.connect("client", "dns", 53, "udp") == "OK"


def test_deny_all_ingress_blocks_others_but_not_replies_or_the_node(lab: PolicyLab) -> None:
    lab.apply(DENY_PROD)
    assert lab.connect("other", "web") == "TIMEOUT"  # same node, bridged
    assert lab.connect("dns", "web") == "TIMEOUT"  # cross node, routed
    assert lab.connect("other", "remote") == "TIMEOUT"  # enforced on w2 for its local prod pod
    assert lab.connect("web", "client") == "TIMEOUT"  # same namespace too: deny-all is deny-all
    assert lab.connect("web", "dns") == "OK"  # outbound from an isolated pod: the reply comes back
    assert lab.connect("web", "dns", 53, "udp") == "OK"  # UDP replies too (conntrack)
    assert lab.connect("w1", "web") == "OK"  # the node itself (kubelet probes, API proxy)
    assert lab.connect("other", "dns") == "OK"  # dev is not isolated


def test_allow_from_pod_selector_reopens_exactly_that_pair(lab: PolicyLab) -> None:
    allow = policy(
        "prod",
        "web-from-other",
        {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dev"}},
                            "podSelector": {"matchLabels": {"app": "other"}},
                        }
                    ],
                    "ports": [{"port": 80, "protocol": "TCP"}],
                }
            ],
        },
    )
    lab.apply(DENY_PROD, allow)
    assert lab.connect("other", "web") == "OK"
    assert lab.connect("other", "web", 53, "udp") == "TIMEOUT"  # only TCP 80 is opened
    assert lab.connect("dns", "web") == "TIMEOUT"  # dev, but not app=other
    assert lab.connect("other", "client") == "TIMEOUT"  # only web was opened


def test_egress_deny_allows_dns_to_a_cidr(lab: PolicyLab) -> None:
    egress = policy(
        "prod",
        "client-egress",
        {
            "podSelector": {"matchLabels": {"app": "client"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"ipBlock": {"cidr": "10.244.0.0/16"}}], "ports": [{"port": 53, "protocol": "UDP"}]}
            ],
        },
    )
    lab.apply(egress)
    assert lab.connect("client", "dns", 53, "udp") == "OK"  # cross node
    assert lab.connect("client", "other", 53, "udp") == "OK"  # same node
    assert lab.connect("client", "dns") == "TIMEOUT"  # TCP 80 is not allowed out
    assert lab.connect("client", "web") == "TIMEOUT"  # nor to a pod on the same node
    assert lab.connect("web", "client") == "OK"  # egress-only: ingress to client stays open


def test_cross_node_ingress_is_enforced_on_the_destination_node(lab: PolicyLab) -> None:
    only_web = policy(
        "prod",
        "remote-from-web",
        {
            "podSelector": {"matchLabels": {"app": "remote"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
        },
    )
    lab.apply(only_web)
    w1 = lab.applier("w1").current().chains
    assert not any(c.startswith("KNP-ING-") for c in w1)  # nothing on w1 is selected
    assert lab.connect("web", "remote") == "OK"
    assert lab.connect("client", "remote") == "TIMEOUT"
    assert lab.connect("dns", "remote") == "TIMEOUT"  # w2's own other pod, bridged


def test_removing_the_policy_restores_and_deletes_the_chains(lab: PolicyLab) -> None:
    lab.apply(DENY_PROD)
    assert lab.connect("other", "web") == "TIMEOUT"
    assert any(c.startswith("KNP-ING-") for c in lab.applier("w1").current().chains)
    lab.apply()
    assert lab.connect("other", "web") == "OK"
    kernel = lab.applier("w1").current()
    assert kernel.chains == {rules.FORWARD, rules.INGRESS, rules.EGRESS}
    assert kernel.jumps == 1 and kernel.jump_first
    save = run(
        ["ip", "netns", "exec", lab.nets["w1"].netns, "iptables-save", "-t", "filter"], timeout=10
    ).stdout
    assert save.count("-j KNP-FORWARD") == 1  # re-applying never duplicates the jump


def test_other_chains_are_left_alone_and_ours_stays_first(lab: PolicyLab) -> None:
    netns = lab.nets["w1"].netns

    def ipt(*args: str) -> list[str]:
        return run(["ip", "netns", "exec", netns, *args], timeout=10).stdout.splitlines()

    ipt("iptables", "-N", "KUBE-FORWARD")
    ipt("iptables", "-A", "KUBE-FORWARD", "-j", "RETURN")
    ipt("iptables", "-I", "FORWARD", "1", "-j", "KUBE-FORWARD")  # kube-proxy prepends its jump
    try:
        forward = [line for line in ipt("iptables-save", "-t", "filter") if line.startswith("-A FORWARD ")]
        assert forward == ["-A FORWARD -j KUBE-FORWARD", "-A FORWARD -j KNP-FORWARD"]
        lab.apply(DENY_PROD)
        save = ipt("iptables-save", "-t", "filter")
        assert "-A KUBE-FORWARD -j RETURN" in save
        forward = [line for line in save if line.startswith("-A FORWARD ")]
        assert forward == ["-A FORWARD -j KNP-FORWARD", "-A FORWARD -j KUBE-FORWARD"]
        assert lab.connect("other", "web") == "TIMEOUT"
    finally:
        ipt("iptables", "-D", "FORWARD", "-j", "KUBE-FORWARD")
        ipt("iptables", "-F", "KUBE-FORWARD")
        ipt("iptables", "-X", "KUBE-FORWARD")


def test_sync_loop_enforces_what_the_api_says(lab: PolicyLab, lab_api_client: Any) -> None:
    """End to end: objects in the lab API → each node's PolicySync → iptables → traffic."""
    import kubernetes

    core: Any = kubernetes.client.CoreV1Api(lab_api_client)
    net: Any = kubernetes.client.NetworkingV1Api(lab_api_client)
    for namespace in ("prod", "dev"):
        core.create_namespace({"metadata": {"name": namespace}})
    for p in lab.pods.values():
        container = {"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53"}
        pod = {
            "metadata": {"name": p.name, "labels": {"app": p.app}},
            "spec": {"nodeName": p.node, "containers": [container]},
        }
        core.create_namespaced_pod(p.namespace, pod)
        core.patch_namespaced_pod_status(p.name, p.namespace, {"status": {"phase": "Running", "podIP": p.ip}})
    syncs = {node: PolicySync(node, lab_api_client, lab.applier(node)) for node in NODES}
    try:
        for ps in syncs.values():
            ps.start()
        assert all(ps.wait_applied(0, 15) for ps in syncs.values()), "no first sync"
        before = {node: ps.applied_count for node, ps in syncs.items()}
        start = time.monotonic()
        net.create_namespaced_network_policy("prod", DENY_PROD)
        assert all(ps.wait_applied(before[node], 15) for node, ps in syncs.items())
        elapsed = time.monotonic() - start
        last = syncs["w1"].last
        assert last is not None
        log.warning(
            "policy create -> enforced on both nodes: %.0f ms (w1: render %.1f ms, restore %.1f ms)",
            elapsed * 1000,
            last.render_seconds * 1000,
            last.apply_seconds * 1000,
        )
        assert lab.connect("other", "web") == "TIMEOUT"
        assert lab.connect("dns", "remote") == "TIMEOUT"
        before = {node: ps.applied_count for node, ps in syncs.items()}
        net.delete_namespaced_network_policy("deny-all", "prod")
        assert all(ps.wait_applied(before[node], 15) for node, ps in syncs.items())
        assert lab.connect("other", "web") == "OK"
    finally:
        for ps in syncs.values():
            ps.stop()


def test_cni_agent_policy_mode_enforces_and_keeps_rules_on_sigterm(
    lab: PolicyLab, lab_api: Any, tmp_path: Path
) -> None:
    """The wiring: ``cniagent`` with ``POLICY=enforce`` in the node netns, the API reached on
    the node's loopback (a listener made inside the netns, no root-namespace route)."""
    import signal

    import kubernetes

    from clusters.lab.api import write_kubeconfig
    from clusters.lab.netns import socket_in_netns

    w1 = lab.nets["w1"]
    sock = socket_in_netns(w1.netns)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    lab_api.add_listener(sock)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{sock.getsockname()[1]}")
    client: Any = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=lab_api.url))
    core: Any = kubernetes.client.CoreV1Api(client)
    net: Any = kubernetes.client.NetworkingV1Api(client)
    for namespace in ("prod", "dev"):
        core.create_namespace({"metadata": {"name": namespace}})
    for p in lab.pods.values():
        container = {"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53"}
        pod = {
            "metadata": {"name": p.name, "labels": {"app": p.app}},
            "spec": {"nodeName": p.node, "containers": [container]},
        }
        core.create_namespaced_pod(p.namespace, pod)
        core.patch_namespaced_pod_status(p.name, p.namespace, {"status": {"phase": "Running", "podIP": p.ip}})
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "NODE_NAME": "w1",
        "POD_CIDR": str(layout.node_pod_cidr(w1.index)),
        "PEERS": ",".join(f"{n.ip}={layout.node_pod_cidr(n.index)}" for n in lab.nets.values()),
        "KUBECONFIG": str(kubeconfig),
        "POLICY": "enforce",
    }
    argv = ["ip", "netns", "exec", w1.netns, sys.executable, "-m", "clusters.lab.programs.cniagent"]
    log_path = tmp_path / "agent.log"
    with open(log_path, "wb") as out:
        agent = subprocess.Popen(
            [*argv, "--conf-dir", str(tmp_path / "net.d")], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        net.create_namespaced_network_policy("prod", DENY_PROD)
        deadline = time.monotonic() + 20
        while not any(c.startswith("KNP-ING-") for c in lab.applier("w1").current().chains):
            assert agent.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the agent never applied the policy: " + log_path.read_text()
            time.sleep(0.05)
        assert lab.connect("other", "web") == "TIMEOUT"
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=10) == 0
        assert "policy mode: enforcing NetworkPolicy on node w1" in log_path.read_text()
        assert lab.connect("other", "web") == "TIMEOUT"  # the rules outlive the agent
    finally:
        if agent.poll() is None:
            agent.kill()
        agent.wait(timeout=10)
        client.close()  # the listener closes with the API server
