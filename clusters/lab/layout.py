"""Where the lab keeps things and how it names them: one place, so a sweep can find it all.

Every network namespace, link and process title the lab creates starts with :data:`PREFIX`;
every file lives under :attr:`LabLayout.root`. Addresses follow a default kind cluster.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

PREFIX = "kncl-"
"""Name prefix of every lab netns and host-side link ("knetcheck lab")."""

CLUSTER_NAME = "knetcheck-lab"
POD_SUBNET = ipaddress.ip_network("10.244.0.0/16")
SERVICE_SUBNET = ipaddress.ip_network("10.96.0.0/16")
NODE_SUBNET = ipaddress.ip_network("172.18.0.0/16")
"""The node underlay, like kind's Docker network; it exists only inside lab namespaces."""
UNDERLAY_NETNS = f"{PREFIX}underlay"
DNS_SERVICE_IP = ipaddress.ip_address("10.96.0.10")
LB_POOL = ipaddress.ip_network("172.18.255.0/24")
"""LoadBalancer addresses, carved from the underlay as MetalLB would from kind's network."""


def default_root() -> Path:
    """``/run``: the lab's namespaces (``/run/netns``) do not survive a reboot, so neither should
    its state; and the node view overlays ``/etc``, ``/opt`` and ``/var/lib``, which therefore
    cannot hold the node file trees (see :func:`clusters.lab.node.nodefs.check_root`)."""
    return Path(os.environ.get("KNETCHECK_LAB_DIR", "/run/knetcheck-lab"))


def node_names(count: int) -> list[str]:
    """kind's naming: ``<cluster>-control-plane``, ``<cluster>-worker``, ``<cluster>-worker2``, …"""
    names = [f"{CLUSTER_NAME}-control-plane"]
    for i in range(1, count):
        names.append(f"{CLUSTER_NAME}-worker" + ("" if i == 1 else str(i)))
    return names


def node_pod_cidr(index: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"10.244.{index}.0/24")


def node_ip(index: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(f"172.18.0.{index + 2}")


def node_netns(node: str, prefix: str = PREFIX) -> str:
    """The node's network namespace name (``kncl-n-<node>``, capped for IFNAMSIZ-style limits).

    ``prefix`` lets tests run beside a live lab under their own names (``kncl-t-<random>-``)."""
    return f"{prefix}n-{node.removeprefix(CLUSTER_NAME + '-')}"


def pod_netns(uid: str, prefix: str = PREFIX) -> str:
    return f"{prefix}p-{uid[:13]}"


def underlay_netns(prefix: str = PREFIX) -> str:
    """The underlay's namespace; equals :data:`UNDERLAY_NETNS` for the default prefix."""
    return f"{prefix}underlay"


@dataclass(frozen=True)
class LabLayout:
    root: Path

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def api_state(self) -> Path:
        return self.root / "api"

    @property
    def pid_file(self) -> Path:
        return self.root / "lab.pid"

    def node_dir(self, node: str) -> Path:
        return self.root / "nodes" / node

    def node_fs(self, node: str) -> Path:
        """The node's file tree: ``<node_fs>/etc/cni/net.d`` is the node's ``/etc/cni/net.d``."""
        return self.node_dir(node) / "fs"

    def pod_dir(self, uid: str) -> Path:
        return self.root / "pods" / uid

    def log_dir(self) -> Path:
        return self.root / "logs"
