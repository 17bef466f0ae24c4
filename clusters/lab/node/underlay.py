"""The node underlay: kind's Docker network, rebuilt from network namespaces.

One namespace holds a plain bridge (the "docker network"); each node is a namespace with an
``eth0`` veth into that bridge and the node IP from :mod:`clusters.lab.layout`. Nothing is ever
created in the root namespace: the host end of every veth is born inside the underlay namespace.
:func:`sweep` finds leftovers of a crashed run by name prefix and kills what still runs in them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from clusters.lab import layout
from clusters.lab.netns import call_in_netns, list_netns, netns_path
from clusters.proc import run

log = logging.getLogger(__name__)

IP_TIMEOUT = 15.0
BRIDGE = f"{layout.PREFIX}br0"
"""The underlay bridge, inside the underlay namespace (like kind's Docker bridge)."""
GATEWAY = ipaddress.IPv4Interface(f"{layout.NODE_SUBNET.network_address + 1}/{layout.NODE_SUBNET.prefixlen}")
"""The "Docker gateway" 172.18.0.1: nodes get a default route to it as on kind; the underlay
namespace does not forward, so nothing leaves the lab through it."""


@dataclass(frozen=True)
class NodeNet:
    """One node's place on the underlay."""

    node: str
    index: int
    netns: str
    ip: ipaddress.IPv4Address
    veth: str
    """Host-side veth name, inside the underlay namespace."""


def _ip(*args: str, stdin: str | None = None) -> None:
    run(["ip", *args], timeout=IP_TIMEOUT, stdin=stdin)


def _sysctl_in(netns: str, key: str, value: str) -> None:
    """Write a per-netns sysctl: /proc/sys/net resolves against the writing thread's namespace."""
    path = Path("/proc/sys") / key.replace(".", "/")

    def write() -> None:
        if path.exists():
            path.write_text(value)
        else:
            log.debug("sysctl %s absent in %s", key, netns)

    call_in_netns(netns, write)


class Underlay:
    """The underlay namespace plus the nodes attached to it; :meth:`destroy` removes all of it."""

    def __init__(self, prefix: str = layout.PREFIX):
        if not prefix.startswith(layout.PREFIX):
            raise ValueError(f"prefix {prefix!r} must start with {layout.PREFIX!r} so sweep() can find it")
        self.prefix = prefix
        self.netns = layout.underlay_netns(prefix)
        self.nodes: dict[str, NodeNet] = {}

    def create(self) -> None:
        if self.netns not in list_netns():
            _ip("netns", "add", self.netns)
        _ip(
            "-n",
            self.netns,
            "-batch",
            "-",
            stdin=(
                "link set lo up\n"
                f"link add {BRIDGE} type bridge\n"
                f"addr add {GATEWAY} dev {BRIDGE}\n"
                f"link set {BRIDGE} up\n"
            ),
        )
        # Underlay frames must not be seen by the underlay's (empty) iptables; the bridge is a wire.
        _sysctl_in(self.netns, "net.bridge.bridge-nf-call-iptables", "0")
        _sysctl_in(self.netns, "net.ipv4.ip_forward", "0")

    def add_node(self, node: str, index: int) -> NodeNet:
        """Create the node namespace with ``eth0`` on the underlay, lo up and forwarding on."""
        netns = layout.node_netns(node, self.prefix)
        ip = layout.node_ip(index)
        veth = f"{layout.PREFIX}v{index}"
        if netns not in list_netns():
            _ip("netns", "add", netns)
        _ip(
            "-n",
            self.netns,
            "-batch",
            "-",
            stdin=(
                f"link add {veth} type veth peer name eth0 netns {netns}\n"
                f"link set {veth} master {BRIDGE}\n"
                f"link set {veth} up\n"
            ),
        )
        _ip(
            "-n",
            netns,
            "-batch",
            "-",
            stdin=(
                "link set lo up\n"
                f"addr add {ip}/{layout.NODE_SUBNET.prefixlen} dev eth0\n"
                "link set eth0 up\n"
                f"route add default via {GATEWAY.ip} dev eth0\n"
            ),
        )
        _sysctl_in(netns, "net.ipv4.ip_forward", "1")
        # kube-proxy's Service rules must see bridged pod-to-pod traffic (same as kind nodes).
        _sysctl_in(netns, "net.bridge.bridge-nf-call-iptables", "1")
        net = NodeNet(node=node, index=index, netns=netns, ip=ip, veth=veth)
        self.nodes[node] = net
        return net

    def remove_node(self, node: str) -> None:
        net = self.nodes.pop(node, None)
        netns = net.netns if net else layout.node_netns(node, self.prefix)
        kill_netns_processes(netns)
        if netns in list_netns():
            _ip("netns", "del", netns)  # the veth pair dies with its node end

    def destroy(self) -> None:
        for node in list(self.nodes):
            self.remove_node(node)
        kill_netns_processes(self.netns)
        if self.netns in list_netns():
            _ip("netns", "del", self.netns)


def _netns_inode(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def processes_in_netns(name: str) -> list[int]:
    """Pids whose network namespace is ``name`` (compares /proc/<pid>/ns/net with the netns file)."""
    target = _netns_inode(netns_path(name))
    if target is None:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        if _netns_inode(entry / "ns" / "net") == target:
            pids.append(int(entry.name))
    return pids


def kill_netns_processes(name: str, grace: float = 2.0) -> list[int]:
    """SIGTERM then SIGKILL everything running in netns ``name``; returns the pids found."""
    pids = [p for p in processes_in_netns(name) if p != os.getpid()]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    return pids


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie holds no namespace)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass(frozen=True)
class SweepReport:
    netns: tuple[str, ...]
    links: tuple[str, ...]
    pids: tuple[int, ...]


def root_links(prefix: str = layout.PREFIX) -> list[str]:
    out = run(["ip", "-o", "link", "show"], timeout=IP_TIMEOUT).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            name = parts[1].strip().split("@", 1)[0]
            if owned_by(prefix, name):
                names.append(name)
    return names


def owned_by(prefix: str, name: str) -> bool:
    """Whether ``name`` belongs to the lab with ``prefix``: its pods, nodes, underlay or links.

    Not a bare ``startswith``: the default lab's prefix ``kncl-`` is a prefix of every test lab's
    (``kncl-t-<hex>-``), and sweeping the default lab must never tear down a test lab running
    beside it.
    """
    return name.startswith((prefix + "p-", prefix + "n-", prefix + "underlay", prefix + "v", prefix + "br"))


def sweep(prefix: str = layout.PREFIX) -> SweepReport:
    """Remove every netns and root-namespace link of the lab with ``prefix`` and kill what runs in
    them. Pods first, then nodes, then the underlay, so no process is left holding a half-torn node.
    """
    if not prefix.startswith(layout.PREFIX):
        raise ValueError(f"refusing to sweep {prefix!r}: only names starting with {layout.PREFIX!r}")
    names = [n for n in list_netns() if owned_by(prefix, n)]
    underlay = layout.underlay_netns(prefix)

    def rank(name: str) -> int:
        return 2 if name == underlay else 1 if name.startswith(prefix + "n-") else 0

    names.sort(key=rank)
    pids: list[int] = []
    for name in names:
        pids.extend(kill_netns_processes(name))
        run(["ip", "netns", "del", name], timeout=IP_TIMEOUT, check=False)
    links = root_links(prefix)
    for link in links:
        run(["ip", "link", "del", link], timeout=IP_TIMEOUT, check=False)
    if names or links:
        log.info("sweep removed netns %s, links %s, killed %s", names, links, pids)
    return SweepReport(netns=tuple(names), links=tuple(links), pids=tuple(pids))
