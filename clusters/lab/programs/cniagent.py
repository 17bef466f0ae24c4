"""The lab CNI agent: what kindnetd/flanneld do on a node, for the lab's CNI DaemonSet pod.

It runs with hostNetwork in the node context (node netns + node view, so ``/etc/cni/net.d`` is
the node's). It writes ``/etc/cni/net.d/10-lab.conflist`` (``bridge`` on ``cni0`` + ``host-local``
on the node's podCIDR + ``portmap``) and programs the route to every other node's podCIDR:
``host-gw`` (a route via the peer's node IP, like kindnet) or ``vxlan`` (device ``vxlan.1``, VNI 1,
UDP 8472, static fdb/neighbour entries, like flannel).

Inputs (env first): ``NODE_NAME``; ``POD_CIDR`` (else the Node's ``spec.podCIDR`` read through
``KUBECONFIG``); ``MODE`` = ``host-gw`` | ``vxlan``; ``PEERS`` = ``nodeIP=podCIDR,…`` (else all
Nodes from the API, watched for changes). ``NODE_IP`` overrides the address read from ``eth0``.
``POLICY`` = ``off`` (default) | ``enforce``: enforce NetworkPolicy on this node with iptables
(:mod:`clusters.lab.netpol`), reading the API through ``KUBECONFIG`` or the in-cluster env.

Kindnet semantics, on purpose: the conflist is written (``.temp`` + rename) only when its inputs
change (podCIDR, MTU), compared in memory. **A deleted or corrupted conflist is not restored
until the agent restarts** (delete its pod) or its inputs change — the recovery step a fault test
must perform (reference §1.4, §3.1). On SIGTERM the agent exits 0 and leaves its routes in place,
like a real CNI agent, so running pods keep their network while it is down.
"""

from __future__ import annotations

import argparse
import enum
import importlib
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from clusters.errors import UsageProblem
from clusters.lab.programs import masq
from clusters.proc import run

log = logging.getLogger("cniagent")

CONF_NAME = "10-lab.conflist"
NETWORK_NAME = "lab"
BRIDGE = "cni0"
VXLAN_DEV = "vxlan.1"
VXLAN_ID = 1
VXLAN_PORT = 8472
VXLAN_OVERHEAD = 50
CMD_TIMEOUT = 15.0


class Mode(enum.Enum):
    HOST_GW = "host-gw"
    VXLAN = "vxlan"


@dataclass(frozen=True)
class Peer:
    ip: ipaddress.IPv4Address
    pod_cidr: ipaddress.IPv4Network
    name: str = ""


POD_SUBNET = ipaddress.IPv4Network("10.244.0.0/16")


@dataclass(frozen=True)
class AgentConfig:
    node_name: str
    mode: Mode
    conf_dir: Path
    pod_cidr: ipaddress.IPv4Network | None
    peers: tuple[Peer, ...] | None
    """None: discover from the API."""
    kubeconfig: str | None
    node_ip: ipaddress.IPv4Address | None
    policy: bool = False
    """POLICY=enforce: run the NetworkPolicy sync loop (clusters.lab.netpol.sync)."""
    pod_subnet: ipaddress.IPv4Network = POD_SUBNET
    """The cluster's pod subnet (POD_SUBNET): traffic leaving it is masqueraded, as kindnet does."""


def parse_peers(text: str) -> tuple[Peer, ...]:
    peers = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        ip, sep, cidr = item.partition("=")
        if not sep:
            raise UsageProblem(f"PEERS entry {item!r} is not nodeIP=podCIDR (e.g. 172.18.0.3=10.244.1.0/24)")
        try:
            peers.append(Peer(ipaddress.IPv4Address(ip.strip()), ipaddress.IPv4Network(cidr.strip())))
        except ValueError as exc:
            raise UsageProblem(f"PEERS entry {item!r}: {exc}") from None
    return tuple(peers)


def config_from_env(env: Mapping[str, str], conf_dir: Path = Path("/etc/cni/net.d")) -> AgentConfig:
    node = env.get("NODE_NAME", "")
    if not node:
        raise UsageProblem("NODE_NAME is not set: pass it from the pod spec (fieldRef spec.nodeName)")
    mode_text = env.get("MODE", Mode.HOST_GW.value)
    try:
        mode = Mode(mode_text)
    except ValueError:
        raise UsageProblem(f"MODE={mode_text!r} is not supported: use host-gw or vxlan") from None
    kubeconfig = env.get("KUBECONFIG") or None
    cidr = ipaddress.IPv4Network(env["POD_CIDR"]) if env.get("POD_CIDR") else None
    peers = parse_peers(env["PEERS"]) if "PEERS" in env else None
    if (cidr is None or peers is None) and kubeconfig is None:
        raise UsageProblem("set POD_CIDR and PEERS, or KUBECONFIG so the agent can read Nodes from the API")
    node_ip = ipaddress.IPv4Address(env["NODE_IP"]) if env.get("NODE_IP") else None
    policy_text = env.get("POLICY", "off")
    if policy_text not in ("off", "enforce"):
        raise UsageProblem(f"POLICY={policy_text!r} is not supported: use off or enforce")
    try:
        pod_subnet = ipaddress.IPv4Network(env.get("POD_SUBNET", str(POD_SUBNET)))
    except ValueError as exc:
        raise UsageProblem(f"POD_SUBNET: {exc}") from None
    policy = policy_text == "enforce"
    return AgentConfig(node, mode, conf_dir, cidr, peers, kubeconfig, node_ip, policy, pod_subnet)


# ---- the conflist ----------------------------------------------------------------------------


def render_conflist(pod_cidr: ipaddress.IPv4Network, mtu: int) -> str:
    """The lab's conflist: kindnet's shape with ``bridge`` instead of ``ptp`` (cniVersion 1.0.0,
    which Debian's plugins 1.1.x speak)."""
    conf = {
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "mtu": mtu,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(pod_cidr)}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(conf, indent=2) + "\n"


class ConfWriter:
    """kindnet's ``CNIConfigWriter``: write only when the inputs differ from the last write."""

    def __init__(self, conf_dir: Path):
        self.conf_dir = conf_dir
        self._last: tuple[ipaddress.IPv4Network, int] | None = None

    def write(self, pod_cidr: ipaddress.IPv4Network, mtu: int) -> bool:
        inputs = (pod_cidr, mtu)
        if inputs == self._last:
            return False
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        target = self.conf_dir / CONF_NAME
        tmp = target.with_name(CONF_NAME + ".temp")
        tmp.write_text(render_conflist(pod_cidr, mtu))
        tmp.replace(target)
        self._last = inputs
        log.info("wrote %s for podCIDR %s, mtu %d", target, pod_cidr, mtu)
        return True


# ---- the node's own interfaces ---------------------------------------------------------------


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = run(["ip", "-j", *args], timeout=CMD_TIMEOUT).stdout
    data = json.loads(out or "[]")
    return data if isinstance(data, list) else []


def eth0_address() -> ipaddress.IPv4Address:
    for link in _ip_json("-4", "addr", "show", "dev", "eth0"):
        for addr in link.get("addr_info", []):
            return ipaddress.IPv4Address(addr["local"])
    raise UsageProblem("eth0 has no IPv4 address: is the agent running in the node's network namespace?")


def eth0_mtu() -> int:
    links = _ip_json("link", "show", "dev", "eth0")
    return int(links[0]["mtu"]) if links else 1500


def vtep_mac(node_ip: ipaddress.IPv4Address) -> str:
    """A VTEP MAC derived from the node IP (``0a:58:`` + IP, as the bridge plugin derives MACs), so
    peers need no discovery to fill their fdb."""
    return "0a:58:" + ":".join(f"{b:02x}" for b in node_ip.packed)


# ---- routes ----------------------------------------------------------------------------------


class Router:
    """Programs routes to peers' podCIDRs; remembers what it added to remove departed peers."""

    def __init__(self, mode: Mode, self_ip: ipaddress.IPv4Address, self_cidr: ipaddress.IPv4Network):
        self.mode = mode
        self.self_ip = self_ip
        self.self_cidr = self_cidr
        self._programmed: dict[ipaddress.IPv4Network, Peer] = {}

    def sync(self, peers: Sequence[Peer]) -> None:
        wanted = {p.pod_cidr: p for p in peers if p.ip != self.self_ip and p.pod_cidr != self.self_cidr}
        if self.mode is Mode.VXLAN:
            self._ensure_vxlan()
        for cidr, peer in wanted.items():
            if self._programmed.get(cidr) != peer:
                self._add(peer)
        for cidr, peer in list(self._programmed.items()):
            if cidr not in wanted:
                self._remove(peer)
        self._programmed = dict(wanted)

    def _ensure_vxlan(self) -> None:
        if any(link.get("ifname") == VXLAN_DEV for link in _ip_json("link", "show", "type", "vxlan")):
            return
        mtu = eth0_mtu() - VXLAN_OVERHEAD
        run(
            [
                "ip",
                "link",
                "add",
                VXLAN_DEV,
                "type",
                "vxlan",
                "id",
                str(VXLAN_ID),
                "dstport",
                str(VXLAN_PORT),
                "local",
                str(self.self_ip),
                "dev",
                "eth0",
                "nolearning",
            ],
            timeout=CMD_TIMEOUT,
        )
        run(
            ["ip", "link", "set", VXLAN_DEV, "address", vtep_mac(self.self_ip), "mtu", str(mtu), "up"],
            timeout=CMD_TIMEOUT,
        )
        run(
            ["ip", "addr", "replace", f"{self.self_cidr.network_address}/32", "dev", VXLAN_DEV],
            timeout=CMD_TIMEOUT,
        )

    def _add(self, peer: Peer) -> None:
        if self.mode is Mode.HOST_GW:
            run(
                ["ip", "route", "replace", str(peer.pod_cidr), "via", str(peer.ip), "dev", "eth0"],
                timeout=CMD_TIMEOUT,
            )
        else:
            vtep = str(peer.pod_cidr.network_address)
            mac = vtep_mac(peer.ip)
            run(
                ["ip", "neigh", "replace", vtep, "lladdr", mac, "dev", VXLAN_DEV, "nud", "permanent"],
                timeout=CMD_TIMEOUT,
            )
            run(
                ["bridge", "fdb", "replace", mac, "dev", VXLAN_DEV, "dst", str(peer.ip), "self", "permanent"],
                timeout=CMD_TIMEOUT,
            )
            run(
                ["ip", "route", "replace", str(peer.pod_cidr), "via", vtep, "dev", VXLAN_DEV, "onlink"],
                timeout=CMD_TIMEOUT,
            )
        log.info("route %s via %s (%s)", peer.pod_cidr, peer.ip, self.mode.value)

    def _remove(self, peer: Peer) -> None:
        run(["ip", "route", "del", str(peer.pod_cidr)], timeout=CMD_TIMEOUT, check=False)
        if self.mode is Mode.VXLAN:
            vtep, mac = str(peer.pod_cidr.network_address), vtep_mac(peer.ip)
            run(["ip", "neigh", "del", vtep, "dev", VXLAN_DEV], timeout=CMD_TIMEOUT, check=False)
            run(
                ["bridge", "fdb", "del", mac, "dev", VXLAN_DEV, "dst", str(peer.ip), "self"],
                timeout=CMD_TIMEOUT,
                check=False,
            )
        log.info("removed route %s via %s", peer.pod_cidr, peer.ip)


# ---- API discovery ---------------------------------------------------------------------------


def _peers_from_nodes(items: Sequence[Any]) -> dict[str, Peer]:
    """Nodes with a podCIDR and an InternalIP, by name."""
    out = {}
    for node in items:
        cidr = getattr(node.spec, "pod_cidr", None)
        addrs = (
            [a.address for a in (node.status.addresses or []) if a.type == "InternalIP"]
            if node.status
            else []
        )
        if cidr and addrs:
            try:
                out[node.metadata.name] = Peer(
                    ipaddress.IPv4Address(addrs[0]), ipaddress.IPv4Network(cidr), node.metadata.name
                )
            except ValueError:
                log.warning("node %s: unusable podCIDR %r or address %r", node.metadata.name, cidr, addrs[0])
    return out


class ApiSource:
    """Lists and watches Nodes (the lab API or a real one) through the official client."""

    def __init__(self, kubeconfig: str):
        # Imported late: the agent must start (static PEERS) without the client; Any because the
        # client's own type hints are partial.
        self._client: Any = importlib.import_module("kubernetes.client")
        self._watch: Any = importlib.import_module("kubernetes.watch")
        config: Any = importlib.import_module("kubernetes.config")
        config.load_kube_config(config_file=kubeconfig)
        self._v1: Any = self._client.CoreV1Api()
        self.resource_version = ""

    def list(self) -> dict[str, Peer]:
        nodes = self._v1.list_node()
        self.resource_version = nodes.metadata.resource_version or ""
        return _peers_from_nodes(nodes.items)

    def wait_for_change(self, timeout_seconds: int = 30) -> bool:
        """Block until a Node changes (True) or the watch times out (False)."""
        w = self._watch.Watch()
        try:
            for event in w.stream(
                self._v1.list_node, resource_version=self.resource_version, timeout_seconds=timeout_seconds
            ):
                obj = event.get("object")
                rv = getattr(getattr(obj, "metadata", None), "resource_version", None)
                if rv:
                    self.resource_version = rv
                return True
        finally:
            w.stop()
        return False


# ---- main loop -------------------------------------------------------------------------------


class _Stop(Exception):
    pass


def sync_once(
    cfg: AgentConfig, writer: ConfWriter, router: Router | None, api: ApiSource | None
) -> tuple[Router, ipaddress.IPv4Network]:
    """One reconcile: resolve inputs, write the conflist if they changed, program routes."""
    api_peers = api.list() if api is not None else {}
    cidr = cfg.pod_cidr
    if cidr is None:
        me = api_peers.get(cfg.node_name)
        if me is None:
            raise UsageProblem(f"node {cfg.node_name!r} has no spec.podCIDR/InternalIP in the API yet")
        cidr = me.pod_cidr
    peers = cfg.peers if cfg.peers is not None else tuple(api_peers.values())
    self_ip = cfg.node_ip or eth0_address()
    mtu = eth0_mtu() - (VXLAN_OVERHEAD if cfg.mode is Mode.VXLAN else 0)
    writer.write(cidr, mtu)
    masq.ensure(cfg.pod_subnet)
    if router is None or router.self_cidr != cidr:
        router = Router(cfg.mode, self_ip, cidr)
    router.sync(peers)
    return router, cidr


def run_agent(cfg: AgentConfig, *, once: bool = False, resync_seconds: int = 30) -> None:
    writer = ConfWriter(cfg.conf_dir)
    api = (
        ApiSource(cfg.kubeconfig) if cfg.kubeconfig and (cfg.peers is None or cfg.pod_cidr is None) else None
    )
    router: Router | None = None
    stop = threading.Event()
    if cfg.policy and not once:
        start_policy(cfg)
    while not stop.is_set():
        router, _ = sync_once(cfg, writer, router, api)
        if once:
            return
        if api is not None:
            api.wait_for_change(resync_seconds)
        else:
            stop.wait(resync_seconds)


# ---- policy mode -----------------------------------------------------------------------------


def start_policy(cfg: AgentConfig) -> None:
    """POLICY=enforce: the NetworkPolicy controller on daemon threads (rules survive SIGTERM)."""
    from clusters.lab.netpol.sync import PolicySync
    from clusters.lab.programs.container import api_client

    try:
        client = api_client(cfg.kubeconfig)
    except RuntimeError as exc:
        raise UsageProblem(f"POLICY=enforce needs the API: {exc}; set KUBECONFIG") from None
    PolicySync(cfg.node_name, client).start()
    log.info("policy mode: enforcing NetworkPolicy on node %s", cfg.node_name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cniagent", description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="write the conflist and routes, then exit")
    parser.add_argument(
        "--conf-dir", type=Path, default=Path(os.environ.get("CNI_CONF_DIR", "/etc/cni/net.d"))
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Stop()

    signal.signal(signal.SIGTERM, on_term)
    try:
        cfg = config_from_env(os.environ, args.conf_dir)
        run_agent(cfg, once=args.once)
    except _Stop:
        log.info("SIGTERM: exiting, routes left in place")
        return 0
    except UsageProblem as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
