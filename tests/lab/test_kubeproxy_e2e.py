"""The lab kube-proxy for real: its iptables rules carry Service traffic between namespaces.

Topology (all under a unique ``kncl-t-<hex>-`` prefix, removed in teardown): an underlay with two
"nodes" (172.18.0.3 and .4, routes to each other's pod CIDR); node A holds a client pod
(10.244.1.10) and runs kube-proxy; node B holds two agnhost netexec backends (10.244.2.11/.12).
The test API server also listens on 127.0.0.1 *inside* node A (a socket made there and handed to
the server), so kube-proxy reaches it without any route from the host.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from clusters.lab.api import RunningApiServer, start_api_server, write_kubeconfig
from clusters.lab.controllers.client import Kube
from clusters.lab.netns import call_in_netns, list_netns, socket_in_netns
from clusters.lab.node.underlay import Underlay
from clusters.proc import run

pytestmark = pytest.mark.lab

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "configs" / "kube-proxy"
NODE_A, NODE_B = "knetcheck-lab-worker", "knetcheck-lab-worker2"
CLIENT_IP, B1_IP, B2_IP = "10.244.1.10", "10.244.2.11", "10.244.2.12"
NODE_A_IP = "172.18.0.3"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "iptables", "iptables-restore", "iptables-save"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not (REFERENCE / "config.conf.kind").exists():
        return "needs shared/reference/configs/kube-proxy"
    return None


def ip(*args: str) -> None:
    run(["ip", *args], timeout=15)


def http_get(netns: str, host: str, port: int, path: str, timeout: float = 2.0) -> str:
    """GET over a socket born in ``netns`` (no process per request); returns the body."""
    sock = socket_in_netns(netns)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1."), head[:80]
    return body.decode()


def poll(what: str, fn: Callable[[], Any], deadline: float = 20.0, every: float = 0.05) -> Any:
    """Call ``fn`` until it returns a truthy value; fail with ``what`` and the last error."""
    end = time.monotonic() + deadline
    last: object = None
    while time.monotonic() < end:
        try:
            value = fn()
            if value:
                return value
            last = value
        except (OSError, AssertionError) as err:
            last = err
        time.sleep(every)
    pytest.fail(f"{what} within {deadline:.0f}s (last: {last!r})")


@dataclass
class Env:
    prefix: str
    tmp: Path
    underlay: Underlay
    api: RunningApiServer
    kube: Kube
    node_a: str
    node_b: str
    client: str
    underlay_ns: str
    kubeconfig: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    proxy: subprocess.Popen[bytes] | None = None
    proxy_log: Path | None = None
    cluster_ip: str = ""
    node_port: int = 0

    # -- kube-proxy ------------------------------------------------------------------------------

    def write_config(self, **replace: str) -> Path:
        text = (REFERENCE / "config.conf.kind").read_text()
        text = text.replace("/var/lib/kube-proxy/kubeconfig.conf", str(self.kubeconfig))
        for old, new in replace.items():
            assert old in text
            text = text.replace(old, new)
        path = self.tmp / f"config-{secrets.token_hex(3)}.conf"
        path.write_text(text)
        return path

    def start_proxy(
        self, replace: dict[str, str] | None = None, *, wait: bool = True
    ) -> subprocess.Popen[bytes]:
        """(Re)start kube-proxy in node A; with ``wait``, return after its first successful sync."""
        self.stop_proxy()
        conf = self.write_config(**(replace or {}))
        self.proxy_log = self.tmp / f"kube-proxy-{secrets.token_hex(3)}.log"
        with self.proxy_log.open("wb") as log:
            self.proxy = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.node_a,
                    sys.executable,
                    "-m",
                    "clusters.lab.programs.kubeproxy",
                    f"--config={conf}",
                    f"--hostname-override={NODE_A}",
                    "--v=2",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.procs.append(self.proxy)
        if wait:
            poll("kube-proxy's first sync (healthz lastUpdated set)", self.synced)
        return self.proxy

    def synced(self) -> bool:
        code, body = self.healthz()
        return code == 200 and not str(body["lastUpdated"]).startswith("0001-")

    def stop_proxy(self) -> int | None:
        proc, self.proxy = self.proxy, None
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
            return None

    def proxy_stderr(self) -> str:
        return self.proxy_log.read_text() if self.proxy_log else ""

    def healthz(self) -> tuple[int, dict[str, Any]]:
        sock = socket_in_netns(self.node_a)
        try:
            sock.settimeout(2)
            sock.connect(("127.0.0.1", 10256))
            sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        finally:
            sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)

    def iptables_save(self, table: str) -> str:
        return run(["ip", "netns", "exec", self.node_a, "iptables-save", "-t", table], timeout=15).stdout

    # -- API objects -----------------------------------------------------------------------------

    def set_slice(self, addrs: list[str]) -> None:
        body: dict[str, Any] = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "web-abc",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": [a], "conditions": {"ready": True}, "nodeName": NODE_B} for a in addrs
            ],
        }
        try:
            current = self.kube.get(f"{SLICES}/web-abc")
        except Exception:
            self.kube.create(SLICES, body)
            return
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        self.kube.update(f"{SLICES}/web-abc", body)

    def delete_slice(self) -> None:
        self.kube.delete(f"{SLICES}/web-abc")

    def via_service(self, path: str) -> str:
        return http_get(self.client, self.cluster_ip, 80, path)


def _pod(node_ns: str, pod_ns: str, host_if: str, addr: str, gw: str) -> None:
    ip("netns", "add", pod_ns)
    ip("-n", node_ns, "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", pod_ns)
    ip("-n", node_ns, "link", "set", host_if, "master", "kncl-cni0", "up")
    ip("-n", pod_ns, "addr", "add", f"{addr}/24", "dev", "eth0")
    ip("-n", pod_ns, "link", "set", "eth0", "up")
    ip("-n", pod_ns, "link", "set", "lo", "up")
    ip("-n", pod_ns, "route", "add", "default", "via", gw)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    prefix = f"kncl-t-{secrets.token_hex(3)}-"
    tmp = tmp_path_factory.mktemp("kubeproxy")
    underlay = Underlay(prefix)
    api: RunningApiServer | None = None
    procs: list[subprocess.Popen[bytes]] = []
    e: Env | None = None
    try:
        underlay.create()
        a = underlay.add_node(NODE_A, 1)
        b = underlay.add_node(NODE_B, 2)
        for net, gw, peer_cidr, peer_ip in (
            (a, "10.244.1.1", "10.244.2.0/24", "172.18.0.4"),
            (b, "10.244.2.1", "10.244.1.0/24", "172.18.0.3"),
        ):
            ip("-n", net.netns, "link", "add", "kncl-cni0", "type", "bridge")
            ip("-n", net.netns, "addr", "add", f"{gw}/24", "dev", "kncl-cni0")
            ip("-n", net.netns, "link", "set", "kncl-cni0", "up")
            ip("-n", net.netns, "route", "add", peer_cidr, "via", peer_ip)
        client, b1, b2 = f"{prefix}pc", f"{prefix}pb1", f"{prefix}pb2"
        _pod(a.netns, client, "kncl-vc", CLIENT_IP, "10.244.1.1")
        _pod(b.netns, b1, "kncl-vb1", B1_IP, "10.244.2.1")
        _pod(b.netns, b2, "kncl-vb2", B2_IP, "10.244.2.1")
        for pod_ns, name in ((b1, "web-1"), (b2, "web-2")):
            procs.append(
                subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        pod_ns,
                        sys.executable,
                        "-m",
                        "clusters.lab.programs.agnhost",
                        "netexec",
                        "--http-port=8080",
                        "--udp-port=-1",
                    ],
                    env={**os.environ, "HOSTNAME": name},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        api = start_api_server(port=0)
        listener = socket_in_netns(a.netns)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        api.add_listener(listener)
        kubeconfig = write_kubeconfig(tmp / "kubeconfig", f"http://127.0.0.1:{listener.getsockname()[1]}")
        import kubernetes

        kube = Kube(kubernetes.client.ApiClient(kubernetes.client.Configuration(host=api.url)))
        svc = kube.create(
            "/api/v1/namespaces/default/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {
                    "type": "NodePort",
                    "selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
                },
            },
        )
        e = Env(
            prefix=prefix,
            tmp=tmp,
            underlay=underlay,
            api=api,
            kube=kube,
            node_a=a.netns,
            node_b=b.netns,
            client=client,
            underlay_ns=underlay.netns,
            kubeconfig=kubeconfig,
            procs=procs,
            cluster_ip=svc["spec"]["clusterIP"],
            node_port=int(svc["spec"]["ports"][0]["nodePort"]),
        )
        for addr, name in ((B1_IP, "web-1"), (B2_IP, "web-2")):
            poll(
                f"backend {name} answering pod-to-pod",
                functools.partial(http_get, client, addr, 8080, "/hostname"),
            )
        e.set_slice([B1_IP, B2_IP])
        yield e
    finally:
        if e is not None:
            e.stop_proxy()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        if api is not None:
            api.stop()
        for pod_ns in (f"{prefix}pc", f"{prefix}pb1", f"{prefix}pb2"):
            if pod_ns in list_netns():
                ip("netns", "del", pod_ns)
        underlay.destroy()
        left = [n for n in list_netns() if n.startswith(prefix)]
        assert not left, f"left behind: {left}"


def hostnames(e: Env, n: int) -> set[str]:
    return {e.via_service("/hostname").strip() for _ in range(n)}


def only(e: Env, name: str) -> bool:
    """Three new connections in a row all reach backend ``name``."""
    return hostnames(e, 3) == {name}


def test_cluster_ip_balances_and_keeps_the_client_ip(env: Env) -> None:
    env.start_proxy()
    poll("ClusterIP answering through kube-proxy's rules", lambda: env.via_service("/hostname"))
    seen = poll(
        "both backends answering the ClusterIP", lambda: (s := hostnames(env, 10)) == {"web-1", "web-2"} and s
    )
    assert seen == {"web-1", "web-2"}
    client = env.via_service("/clientip").strip()
    assert client.rsplit(":", 1)[0] == CLIENT_IP  # no SNAT for pod traffic with the right clusterCIDR
    nat = env.iptables_save("nat")
    assert '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in nat
    assert "--probability 0.50000000000" in nat  # iptables-save prints 11 decimals
    assert '--comment "default/web:http cluster IP"' in nat
    code, body = env.healthz()
    assert (
        code == 200 and set(body) == {"lastUpdated", "currentTime", "nodeEligible"} and body["nodeEligible"]
    )
    assert '"Using iptables Proxier"' in env.proxy_stderr()


def test_node_port_on_the_node_ip(env: Env) -> None:
    if env.proxy is None or env.proxy.poll() is not None:
        env.start_proxy()
    # from outside the cluster: the underlay itself (the "docker network" host side)
    body = poll(
        "NodePort answering on the node IP",
        lambda: http_get(env.underlay_ns, NODE_A_IP, env.node_port, "/clientip"),
    )
    assert body.strip().rsplit(":", 1)[0] == NODE_A_IP  # external traffic is masqueraded


def test_no_endpoints_rejects_fast(env: Env) -> None:
    if env.proxy is None or env.proxy.poll() is not None:
        env.start_proxy()
    poll("ClusterIP answering", lambda: env.via_service("/hostname"))
    env.delete_slice()
    try:

        def refused() -> bool:
            try:
                env.via_service("/hostname")
            except ConnectionRefusedError:
                return True
            return False

        poll("connection refused (REJECT) once the EndpointSlice is gone", refused)
        assert '--comment "default/web:http has no endpoints"' in env.iptables_save("filter")
    finally:
        env.set_slice([B1_IP, B2_IP])
    poll("ClusterIP answering again", lambda: env.via_service("/hostname"))


@pytest.mark.parametrize("min_sync", ["1s", "100ms"])
def test_sync_latency_from_endpointslice_change(
    env: Env, min_sync: str, record_property: Callable[[str, object], None]
) -> None:
    """p50 over 20 changes of "API write returns" → "new connections reach only the new backend".

    With kind's ``minSyncPeriod: 1s`` back-to-back changes are rate-limited to one sync a second
    after a burst of two (BoundedFrequencyRunner); 100ms shows the pipeline itself."""
    env.start_proxy({"  minSyncPeriod: 1s": f"  minSyncPeriod: {min_sync}"})
    poll("ClusterIP answering", lambda: env.via_service("/hostname"))
    samples = []
    for i in range(20):
        target_ip, target = (B1_IP, "web-1") if i % 2 == 0 else (B2_IP, "web-2")
        start = time.monotonic()
        env.set_slice([target_ip])
        poll(f"change {i} to {target}", functools.partial(only, env, target), every=0.01)
        samples.append(time.monotonic() - start)
    p50 = statistics.median(samples)
    record_property(f"kube_proxy_sync_p50_s[{min_sync}]", round(p50, 3))
    record_property(f"kube_proxy_sync_max_s[{min_sync}]", round(max(samples), 3))
    print(
        f"\nkube-proxy (minSyncPeriod {min_sync}) sync latency over {len(samples)} changes: "
        f"min={min(samples) * 1000:.0f}ms p50={p50 * 1000:.0f}ms "
        f"p90={statistics.quantiles(samples, n=10)[-1] * 1000:.0f}ms max={max(samples) * 1000:.0f}ms"
    )
    env.set_slice([B1_IP, B2_IP])
    poll("both backends again", lambda: hostnames(env, 10) == {"web-1", "web-2"})


def test_sigterm_exits_0_and_leaves_the_rules(env: Env) -> None:
    if env.proxy is None or env.proxy.poll() is not None:
        env.start_proxy()
    poll("ClusterIP answering", lambda: env.via_service("/hostname"))
    before = env.iptables_save("nat")
    assert env.stop_proxy() == 0
    assert "KUBE-SERVICES" in env.iptables_save("nat")
    assert env.iptables_save("nat").count("KUBE-SEP-") == before.count("KUBE-SEP-")
    assert env.via_service("/hostname").strip() in {"web-1", "web-2"}


def test_bad_config_restart_exits_1_and_keeps_the_last_rules(env: Env) -> None:
    if env.proxy is None or env.proxy.poll() is not None:
        env.start_proxy()
    poll("ClusterIP answering", lambda: env.via_service("/hostname"))
    env.stop_proxy()
    before = env.iptables_save("nat")
    proc = env.start_proxy({"mode: iptables": "mode: foo"}, wait=False)
    assert proc.wait(timeout=60) == 1
    assert 'Invalid value: \\"foo\\": must be iptables, ipvs, nftables or blank' in env.proxy_stderr()
    assert env.iptables_save("nat").count("KUBE-SEP-") == before.count("KUBE-SEP-")
    assert env.via_service("/hostname").strip() in {"web-1", "web-2"}
    # the rules are stale now: an endpoint change is not reflected
    env.set_slice([B1_IP])
    assert hostnames(env, 12) == {"web-1", "web-2"}
    env.set_slice([B1_IP, B2_IP])


def test_a_taken_healthz_port_is_logged_and_retried_while_rules_sync(env: Env) -> None:
    # As serveHealthz's wait.Until(…, 5s): a predecessor still holding 10256 does not stop kube-proxy.
    env.stop_proxy()
    holder = socket_in_netns(env.node_a)
    try:
        # SO_REUSEADDR as Go listeners set it: the last run's TIME_WAIT connections are no obstacle
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("0.0.0.0", 10256))
        holder.listen(1)
        proc = env.start_proxy(wait=False)
        poll(
            "the healthz bind error in kube-proxy's log",
            lambda: '"Healthz server failed"' in env.proxy_stderr(),
        )
        env.set_slice([B1_IP])
        poll("an endpoint change programmed while healthz cannot bind", lambda: only(env, "web-1"))
        assert proc.poll() is None, env.proxy_stderr()[-2000:]
    finally:
        holder.close()
    assert (
        'err="failed to start proxier healthz on 0.0.0.0:10256: '
        'listen tcp 0.0.0.0:10256: bind: address already in use"'
    ) in env.proxy_stderr()
    poll("healthz served once the port is free (retried every 5 s)", env.synced)
    env.set_slice([B1_IP, B2_IP])
    poll("both backends again", lambda: hostnames(env, 10) == {"web-1", "web-2"})


def test_wrong_cluster_cidr_masquerades_pod_traffic(env: Env) -> None:
    env.start_proxy({"clusterCIDR: 10.244.0.0/16": "clusterCIDR: 10.99.0.0/16"})
    poll("masquerade rule for the wrong clusterCIDR", lambda: "! -s 10.99.0.0/16" in env.iptables_save("nat"))
    seen = env.via_service("/clientip").strip().rsplit(":", 1)[0]
    assert seen == NODE_A_IP  # the backend sees the node, not the client pod
    env.start_proxy()
    poll(
        "client IP preserved again",
        lambda: env.via_service("/clientip").strip().rsplit(":", 1)[0] == CLIENT_IP,
    )


def test_ipvs_mode_runs_on_the_iptables_layout_with_the_real_lines(env: Env) -> None:
    env.start_proxy({"mode: iptables": "mode: ipvs"})
    poll(
        "first sync in ipvs mode",
        lambda: '"Caches are synced" controller="endpoint slice config"' in env.proxy_stderr(),
    )
    poll("ClusterIP answering in ipvs mode", lambda: env.via_service("/hostname"))
    log = env.proxy_stderr()
    assert '] "Using ipvs Proxier"' in log
    assert (
        '] "The ipvs proxier is now deprecated and may be removed in a future release. '
        "Please use 'nftables' instead.\"" in log
    )
    route_localnet = call_in_netns(
        env.node_a, lambda: Path("/proc/sys/net/ipv4/conf/all/route_localnet").read_text()
    )
    assert route_localnet.strip() == "1"
    env.start_proxy()
    poll("ClusterIP answering in iptables mode", lambda: env.via_service("/hostname"))
