"""The node data plane for real: namespaces on an underlay, real CNI plugins, containerd's rules.

One session fixture builds an underlay with two nodes under a unique ``kncl-t-<hex>-`` prefix,
runs the lab CNI agent on each node (host-gw) through the node shell, and starts a runtime per
node. Teardown removes everything and then asserts nothing of ours is left.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clusters.lab import layout
from clusters.lab.netns import list_netns
from clusters.lab.node.nodefs import create_node_fs, node_path
from clusters.lab.node.runtime import NETWORK_NOT_READY, LabNodeRuntime
from clusters.lab.node.shell import shell_argv
from clusters.lab.node.underlay import NodeNet, Underlay, processes_in_netns, root_links, sweep
from clusters.lab.runtime import ProcessSpec, Sandbox, SandboxError
from clusters.proc import run

pytestmark = pytest.mark.lab
log = logging.getLogger(__name__)

NODES = ("w1", "w2")
HOST_CNI_DIR_EXISTED = Path("/etc/cni").exists()


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "bridge", "iptables"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not Path("/usr/lib/cni/bridge").exists():
        return "needs Debian's containernetworking-plugins in /usr/lib/cni"
    return None


@dataclass
class NodeLab:
    root: Path
    lab: layout.LabLayout
    prefix: str
    nets: dict[str, NodeNet]
    runtimes: dict[str, LabNodeRuntime]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    sandboxes: list[tuple[str, str]] = field(default_factory=list)
    create_times: list[float] = field(default_factory=list)

    def sandbox(self, node: str, name: str) -> Sandbox:
        uid = str(uuid.uuid4())
        self.sandboxes.append((node, uid))
        start = time.monotonic()
        sb = self.runtimes[node].run_pod_sandbox(uid, "default", name)
        self.create_times.append(time.monotonic() - start)
        return sb

    def conf_dir(self, node: str) -> Path:
        return node_path(self.lab, node, "/etc/cni/net.d")

    def start(self, node: str, sandbox: Sandbox | None, code: str, log_name: str) -> int:
        spec = ProcessSpec(
            argv=(sys.executable, "-c", code),
            env={},
            cwd=Path("/"),
            log_path=self.root / "logs" / log_name,
            host_network=sandbox is None,
        )
        return self.runtimes[node].start_process(sandbox, spec)


SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {port}))
s.listen()
while True:
    c, addr = s.accept()
    c.sendall(b"hello " + addr[0].encode())
    c.close()
"""

CLIENT = """
import socket, sys, time
deadline = time.monotonic() + 10
while True:
    try:
        s = socket.create_connection(("{ip}", {port}), timeout=3)
        break
    except ConnectionRefusedError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
print(s.recv(100).decode())
"""


def connect(lab: NodeLab, node: str, sandbox: Sandbox | None, ip: str, port: int) -> str:
    """Run a TCP client in ``sandbox`` on ``node``; return what the server said."""
    name = f"client-{secrets.token_hex(3)}.log"
    pid = lab.start(node, sandbox, CLIENT.format(ip=ip, port=port), name)
    code = lab.runtimes[node].wait_process(pid, 20)
    output = (lab.root / "logs" / name).read_text()
    assert code == 0, f"client to {ip}:{port} exited {code}: {output}"
    return output.strip()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="session")
def node_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeLab]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    prefix = f"kncl-t-{secrets.token_hex(3)}-"
    root = tmp_path_factory.mktemp("nodelab")
    lab = layout.LabLayout(root)
    underlay = Underlay(prefix)
    state = NodeLab(root=root, lab=lab, prefix=prefix, nets={}, runtimes={})
    try:
        underlay.create()
        for i, node in enumerate(NODES, start=1):
            state.nets[node] = underlay.add_node(node, i)
            create_node_fs(lab, node)
        peers = ",".join(f"{n.ip}={layout.node_pod_cidr(n.index)}" for n in state.nets.values())
        for node, net in state.nets.items():
            env = {
                "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                "NODE_NAME": node,
                "POD_CIDR": str(layout.node_pod_cidr(net.index)),
                "PEERS": peers,
                "MODE": "host-gw",
            }
            argv = [sys.executable, "-m", "clusters.lab.programs.cniagent", "--once"]
            run(shell_argv(root, node, argv, prefix), timeout=60, env=env)
            rt = LabNodeRuntime(lab, node, prefix=prefix)
            rt.start()
            state.runtimes[node] = rt
        yield state
    finally:
        for proc in state.procs:
            proc.kill()
            proc.wait(timeout=10)
        for node, uid in state.sandboxes:
            if node in state.runtimes:
                state.runtimes[node].remove_sandbox_unclean(uid)
        for rt in state.runtimes.values():
            rt.close()
        underlay.destroy()
        sweep(prefix)
        if state.create_times:
            log.warning(
                "sandbox create: n=%d p50=%.3fs max=%.3fs",
                len(state.create_times),
                statistics.median(state.create_times),
                max(state.create_times),
            )
        assert [n for n in list_netns() if n.startswith(prefix)] == []
        assert root_links(layout.PREFIX) == []
        assert Path("/etc/cni").exists() == HOST_CNI_DIR_EXISTED


def test_node_shell_sees_the_node_files_and_network(node_lab: NodeLab) -> None:
    (node_lab.conf_dir("w1") / "marker.txt").write_text("w1 only")
    try:
        out = run(
            shell_argv(
                node_lab.root,
                "w1",
                ["sh", "-c", "ls /etc/cni/net.d; ip -4 -o addr show dev eth0"],
                node_lab.prefix,
            ),
            timeout=20,
        ).stdout
        assert "10-lab.conflist" in out and "marker.txt" in out
        assert f"inet {node_lab.nets['w1'].ip}/16" in out
        other = run(
            shell_argv(node_lab.root, "w2", ["ls", "/etc/cni/net.d"], node_lab.prefix), timeout=20
        ).stdout
        assert "marker.txt" not in other
        assert Path("/etc/cni").exists() == HOST_CNI_DIR_EXISTED  # the host's /etc is untouched
    finally:
        (node_lab.conf_dir("w1") / "marker.txt").unlink()


def test_sandbox_ips_come_from_the_node_pod_cidr(node_lab: NodeLab) -> None:
    for node, net in node_lab.nets.items():
        sb = node_lab.sandbox(node, f"ipcheck-{node}")
        assert len(sb.sandbox_id) == 64 and int(sb.sandbox_id, 16) >= 0
        assert sb.netns in list_netns()
        assert len(sb.ips) == 1
        assert ipaddress.IPv4Address(sb.ips[0]) in layout.node_pod_cidr(net.index)


def test_pod_to_pod_across_nodes_and_on_one_node(node_lab: NodeLab) -> None:
    a = node_lab.sandbox("w1", "a")
    b = node_lab.sandbox("w2", "b")
    c = node_lab.sandbox("w2", "c")
    node_lab.start("w2", b, SERVER.format(port=8080), "server-b.log")
    # cross-node: host-gw route w1 -> w2; the server sees the pod IP (no masquerade)
    assert connect(node_lab, "w1", a, b.ips[0], 8080) == f"hello {a.ips[0]}"
    # same node, through the cni0 bridge
    assert connect(node_lab, "w2", c, b.ips[0], 8080) == f"hello {c.ips[0]}"
    # node -> pod from the node context (hostNetwork)
    assert connect(node_lab, "w1", None, b.ips[0], 8080) == f"hello {node_lab.nets['w1'].ip}"


def test_broken_first_conflist_breaks_new_sandboxes_but_not_running_pods(node_lab: NodeLab) -> None:
    rt = node_lab.runtimes["w1"]
    running = node_lab.sandbox("w1", "running")
    node_lab.start("w1", running, SERVER.format(port=8081), "server-running.log")
    client = node_lab.sandbox("w2", "client")
    assert connect(node_lab, "w2", client, running.ips[0], 8081).startswith("hello")
    bad = node_lab.conf_dir("w1") / "00-bad.conflist"
    try:
        with open(bad, "w") as f:  # echo '{bad' > …  (Create + Write)
            f.write("{bad")
        wait_until(lambda: not rt.network_status().ready, "network not ready after the Write")
        assert rt.network_status().message == "Network plugin returns error: cni plugin not initialized"
        assert rt.last_load_error == (
            "cni config load failed: failed to load CNI config list file /etc/cni/net.d/00-bad.conflist: "
            "error parsing configuration list: invalid character 'b' looking for beginning of object key "
            "string: invalid cni config: failed to load cni config"
        )
        with pytest.raises(SandboxError) as err:
            node_lab.sandbox("w1", "new")
        assert err.value.reason == "NetworkNotReady"
        assert str(err.value) == NETWORK_NOT_READY
        assert connect(node_lab, "w2", client, running.ips[0], 8081).startswith("hello")  # still answers
    finally:
        bad.unlink(missing_ok=True)
    wait_until(lambda: rt.network_status().ready, "recovery after removing the bad file")
    assert node_lab.sandbox("w1", "after").ips


def test_mv_into_the_conf_dir_does_not_reload(node_lab: NodeLab) -> None:
    rt = node_lab.runtimes["w1"]
    watcher = rt.watcher
    assert watcher is not None and rt.network_status().ready
    staged = node_lab.root / "staged.conflist"
    staged.write_text("{bad")
    moved = node_lab.conf_dir("w1") / "00-moved.conflist"
    note = node_lab.conf_dir("w1") / "zz-note.txt"
    try:
        os.rename(staged, moved)  # mv /tmp/x.conflist /etc/cni/net.d/
        wait_until(lambda: any(e.name == moved.name for e in watcher.history), "the watcher to see the mv")
        assert rt.network_status().ready  # Create is ignored: still the old config
        note.write_text("any write in the dir")  # a later Write reloads and finds the broken file
        wait_until(lambda: not rt.network_status().ready, "reload on the later Write")
        assert "00-moved.conflist" in rt.last_load_error
    finally:
        moved.unlink(missing_ok=True)
        note.unlink(missing_ok=True)
    wait_until(lambda: rt.network_status().ready, "recovery after removing the moved file")


def test_missing_plugin_binary(node_lab: NodeLab) -> None:
    binary = node_path(node_lab.lab, "w1", "/opt/cni/bin/bridge")
    saved = node_lab.root / "bridge.saved"
    shutil.copy2(binary, saved)
    binary.unlink()
    before = set(list_netns())
    try:
        with pytest.raises(SandboxError) as err:
            node_lab.sandbox("w1", "nobridge")
        assert err.value.reason == "FailedCreatePodSandBox"
        assert (
            re.fullmatch(
                r"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for "
                r'sandbox "[0-9a-f]{64}": plugin type="bridge" failed \(add\): '
                r'failed to find plugin "bridge" in path \[/opt/cni/bin\]',
                str(err.value),
            )
            is not None
        ), str(err.value)
        assert Path("/usr/lib/cni/bridge").exists()  # the host's binary is not the node's
        assert set(list_netns()) == before  # the failed sandbox's netns was cleaned up
        assert node_lab.runtimes["w1"].network_status().ready  # config is fine; only ADD fails
    finally:
        shutil.copy2(saved, binary)
    assert node_lab.sandbox("w1", "bridge-back").ips


def test_stop_releases_the_ip_and_the_netns(node_lab: NodeLab) -> None:
    rt = node_lab.runtimes["w2"]
    sb = node_lab.sandbox("w2", "short")
    lease = node_path(node_lab.lab, "w2", f"/var/lib/cni/networks/lab/{sb.ips[0]}")
    assert lease.exists() and lease.read_text().startswith(sb.sandbox_id)
    rt.stop_pod_sandbox(sb.pod_uid)
    assert not lease.exists()
    assert sb.netns not in list_netns()
    rt.stop_pod_sandbox(sb.pod_uid)  # idempotent


def test_sweep_removes_leftovers_of_a_crash(node_lab: NodeLab) -> None:
    prefix = f"kncl-t-{secrets.token_hex(3)}-"
    crashed = Underlay(prefix)
    proc: subprocess.Popen[bytes] | None = None
    try:
        crashed.create()
        net = crashed.add_node("c1", 1)
        pod_ns = layout.pod_netns("deadbeef" * 4, prefix)
        run(["ip", "netns", "add", pod_ns], timeout=10)
        proc = subprocess.Popen(["ip", "netns", "exec", net.netns, "sleep", "300"])
        wait_until(lambda: processes_in_netns(net.netns) != [], "the sleeper to enter the node netns")
        # the "crash": nothing is torn down; a later run sweeps by prefix
        report = sweep(prefix)
        assert set(report.netns) == {pod_ns, net.netns, crashed.netns}
        assert proc.pid in report.pids
        assert proc.wait(timeout=10) != 0
        assert [n for n in list_netns() if n.startswith(prefix)] == []
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        sweep(prefix)


def test_concurrent_sandboxes_get_distinct_ips(node_lab: NodeLab) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4) as pool:
        boxes = list(pool.map(lambda i: node_lab.sandbox("w2", f"par-{i}"), range(4)))
    ips = [sb.ips[0] for sb in boxes]
    assert len(set(ips)) == 4


def run_agent_once(node_lab: NodeLab, mode: str) -> None:
    peers = ",".join(f"{n.ip}={layout.node_pod_cidr(n.index)}" for n in node_lab.nets.values())
    for node, net in node_lab.nets.items():
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "NODE_NAME": node,
            "POD_CIDR": str(layout.node_pod_cidr(net.index)),
            "PEERS": peers,
            "MODE": mode,
        }
        argv = node_lab.runtimes[node].node_exec_argv(
            [sys.executable, "-m", "clusters.lab.programs.cniagent", "--once"]
        )
        run(argv, timeout=60, env=env)


def test_vxlan_overlay_carries_cross_node_traffic(node_lab: NodeLab) -> None:
    try:
        run_agent_once(node_lab, "vxlan")
        w1 = node_lab.nets["w1"].netns
        routes = run(["ip", "-n", w1, "route", "show", str(layout.node_pod_cidr(2))], timeout=10).stdout
        assert "dev vxlan.1" in routes
        details = run(["ip", "-n", w1, "-d", "link", "show", "vxlan.1"], timeout=10).stdout
        assert "vxlan id 1" in details and "dstport 8472" in details
        a = node_lab.sandbox("w1", "vx-a")
        b = node_lab.sandbox("w2", "vx-b")
        node_lab.start("w2", b, SERVER.format(port=8082), "server-vx.log")
        assert connect(node_lab, "w1", a, b.ips[0], 8082) == f"hello {a.ips[0]}"
    finally:
        run_agent_once(node_lab, "host-gw")
    routes = run(["ip", "-n", node_lab.nets["w1"].netns, "route"], timeout=10).stdout
    assert f"{layout.node_pod_cidr(2)} via {node_lab.nets['w2'].ip} dev eth0" in routes


def test_agent_exits_cleanly_on_sigterm_and_keeps_routes(node_lab: NodeLab) -> None:
    import signal

    rt = node_lab.runtimes["w1"]
    peers = ",".join(f"{n.ip}={layout.node_pod_cidr(n.index)}" for n in node_lab.nets.values())
    log_path = node_lab.root / "logs" / "agent-w1.log"
    spec = ProcessSpec(
        argv=(sys.executable, "-m", "clusters.lab.programs.cniagent"),
        env={"NODE_NAME": "w1", "POD_CIDR": str(layout.node_pod_cidr(1)), "PEERS": peers, "MODE": "host-gw"},
        cwd=Path("/"),
        log_path=log_path,
        host_network=True,
    )
    pid = rt.start_process(None, spec)
    wait_until(
        lambda: "route " in (log_path.read_text() if log_path.exists() else ""), "the agent's first sync"
    )
    assert "wrote /etc/cni/net.d/10-lab.conflist" in log_path.read_text()  # the node path, via the node view
    rt.kill_process(pid, signal.SIGTERM)
    assert rt.wait_process(pid, 10) == 0
    assert "SIGTERM" in log_path.read_text()
    routes = run(["ip", "-n", node_lab.nets["w1"].netns, "route"], timeout=10).stdout
    assert f"{layout.node_pod_cidr(2)} via {node_lab.nets['w2'].ip}" in routes
