"""kube-proxy for the lab: ``python -m clusters.lab.programs.kubeproxy --config=… --hostname-override=…``.

Run by the kube-proxy DaemonSet (hostNetwork: in the node's netns, the node's files at the real
paths; ``/var/lib/kube-proxy`` is the ConfigMap). It follows ``cmd/kube-proxy/app``: read the
config once, default and validate it (failures exit 1 with klog's ``"command failed" err="…"``
line, **before** any rule is touched, so the node keeps its last rules), build the API client
(``stat <path>: no such file or directory`` for a missing kubeconfig; in-cluster env when the
path is empty), then program iptables in kube-proxy's chain layout and keep it in sync.

Fidelity notes (lab differences, on purpose or by necessity):

* The config file is read once and **not watched**. On a real node the fsnotify watch never fires
  either (kubelet swaps ConfigMap files through a symlink), so an edit needs a pod restart both
  ways; the lab just never exits with ``content of the proxy server's configuration file was
  updated``.
* ``mode: ipvs`` logs ``Using ipvs Proxier`` and the real deprecation error line, then programs the
  **iptables** layout (no IPVS virtual servers or ipsets) and says so in an info line.
* ``mode: nftables`` logs ``Using nftables Proxier`` and exits 1 with a lab-difference message:
  the lab does not write kube-proxy's ``table ip kube-proxy`` layout.
* Conntrack sysctls (``nf_conntrack_max`` …) are not written: they are read-only outside the
  host's namespace, which is why kind sets ``maxPerCore: 0``.
* Safety: the program refuses to touch iptables or sysctls unless it runs inside a ``kncl-``
  named network namespace (a lab node or a test's): never in the machine's own.
* ``syncPeriod`` is the full-resync interval (the real one re-syncs at least hourly and uses
  syncPeriod for retries and its canary check); UDP conntrack entries are not flushed on endpoint
  changes; IPv4 only.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from clusters.lab.kubelet.klog import format_line
from clusters.lab.programs.container import container_path
from clusters.lab.programs.kubeproxy.config import (
    API_VERSION,
    KIND,
    ConfigError,
    KubeProxyConfig,
    LocalMode,
    ProxyMode,
)
from clusters.lab.programs.kubeproxy.config import build as build_config
from clusters.lab.programs.kubeproxy.config import load as load_config

log = logging.getLogger("kube-proxy")

ROUTE_LOCALNET = "/proc/sys/net/ipv4/conf/all/route_localnet"
IPVS_DEPRECATED = (
    "The ipvs proxier is now deprecated and may be removed in a future release. "
    "Please use 'nftables' instead."
)
LOCALNET_MESSAGE = (
    "Setting route_localnet=1 to allow node-ports on localhost; to change this either disable "
    "iptables.localhostNodePorts (--iptables-localhost-nodeports) or set nodePortAddresses "
    "(--nodeport-addresses) to filter loopback addresses"
)


class KlogHandler(logging.Handler):
    """Python log records as klog text lines on stderr: ``I1123 13:45:01.123456 pid f.go:N] "msg" k="v"``."""

    def emit(self, record: logging.LogRecord) -> None:
        sev = "E" if record.levelno >= logging.ERROR else "W" if record.levelno >= logging.WARNING else "I"
        source = getattr(record, "source", None) or f"{record.module}.py:{record.lineno}"
        kv: dict[str, Any] = dict(getattr(record, "kv", {}) or {})
        try:
            line = format_line(sev, source, record.getMessage(), datetime.now(UTC), os.getpid(), **kv)
            sys.stderr.write(line)
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _klog(level: int, source: str, message: str, **kv: object) -> None:
    log.log(level, "%s", message, extra={"source": source, "kv": kv})


def info(source: str, message: str, **kv: object) -> None:
    _klog(logging.INFO, source, message, **kv)


def error(source: str, message: str, **kv: object) -> None:
    _klog(logging.ERROR, source, message, **kv)


class CommandFailed(Exception):
    """Ends the program like component-base's cli.Run: ``"command failed" err="…"``, exit 1."""


# -- flags -------------------------------------------------------------------------------------


def parse_flags(argv: Sequence[str]) -> argparse.Namespace:
    """kube-proxy's flags we act on; every other ``--flag[=value]`` is accepted and ignored."""
    p = argparse.ArgumentParser(prog="kube-proxy", add_help=True, allow_abbrev=False)
    p.add_argument("--config", default="")
    p.add_argument("--hostname-override", default="")
    p.add_argument("--cluster-cidr", default=None)
    p.add_argument("--proxy-mode", default=None)
    p.add_argument("--kubeconfig", default="")
    p.add_argument("--master", default="")
    p.add_argument("--v", "-v", default="0")
    ns, rest = p.parse_known_args(list(argv))
    ns.ignored = [a for a in rest if a.startswith("-")]
    return ns


def flags_document(ns: argparse.Namespace) -> dict[str, Any]:
    """No --config: the configuration comes from flags over v1alpha1 defaults."""
    doc: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND}
    if ns.cluster_cidr is not None:
        doc["clusterCIDR"] = ns.cluster_cidr
    if ns.proxy_mode is not None:
        doc["mode"] = ns.proxy_mode
    if ns.kubeconfig:
        doc["clientConnection"] = {"kubeconfig": ns.kubeconfig}
    return doc


# -- the server --------------------------------------------------------------------------------


def complete_and_validate(ns: argparse.Namespace) -> KubeProxyConfig:
    """Options.Complete + Validate: read the file once, decode strictly then leniently, default,
    validate. Raises CommandFailed with the real err text."""
    if not ns.config:
        return build_config(flags_document(ns))
    path = container_path(ns.config)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CommandFailed(f"failed complete: open {ns.config}: no such file or directory") from None
    except OSError as err:
        raise CommandFailed(f"failed complete: open {ns.config}: {err.strerror}") from None
    try:
        decoded = load_config(text)
    except ConfigError as err:
        text_err = str(err)
        if text_err.startswith("failed validate: ") and _mode_blank(text):
            info("server_linux.go:66", "Using iptables proxy")
        raise CommandFailed(text_err) from None
    if decoded.strict_error:
        info("options.go:359", "Using lenient decoding as strict decoding failed", err=decoded.strict_error)
    if decoded.config.mode_was_blank:
        info("server_linux.go:66", "Using iptables proxy")
    return decoded.config


def _mode_blank(text: str) -> bool:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(doc, dict) and not doc.get("mode")


def lab_netns_name() -> str | None:
    """The ``kncl-`` named namespace this process runs in, or None (e.g. the machine's own).

    A positive check on purpose: iptables and sysctls are only ever written inside a namespace
    the lab (or a test) created and named, never in one we merely failed to recognise."""
    from clusters.lab.layout import PREFIX
    from clusters.lab.netns import list_netns, netns_path

    try:
        me = os.stat("/proc/self/ns/net")
    except OSError:
        return None
    for name in list_netns():
        if not name.startswith(PREFIX):
            continue
        try:
            st = os.stat(netns_path(name))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (me.st_dev, me.st_ino):
            return name
    return None


def make_client(cfg: KubeProxyConfig, ns: argparse.Namespace) -> Any:
    """createClient: an explicit kubeconfig must exist (stat error verbatim), else in-cluster."""
    from clusters.lab.programs.container import api_client

    kubeconfig = ns.kubeconfig if (ns.kubeconfig and not ns.config) else cfg.kubeconfig
    if kubeconfig:
        try:
            os.stat(container_path(kubeconfig))
        except FileNotFoundError:
            raise CommandFailed(f"stat {kubeconfig}: no such file or directory") from None
        except OSError as err:
            raise CommandFailed(
                f"stat {kubeconfig}: {err.strerror.lower() if err.strerror else err}"
            ) from None
        return api_client(kubeconfig)
    try:
        return api_client(None)
    except RuntimeError:
        raise CommandFailed(
            "unable to load in-cluster configuration, "
            "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined"
        ) from None


def node_ip(kube: Any, hostname: str) -> str:
    """The Node's InternalIP (server.go getNodeIPs), else loopback as the real one assumes."""
    try:
        node = kube.get(f"/api/v1/nodes/{hostname}")
        for addr in (node.get("status") or {}).get("addresses") or []:
            if addr.get("type") == "InternalIP" and addr.get("address"):
                info("server.go:228", "Successfully retrieved NodeIPs", NodeIPs=f'["{addr["address"]}"]')
                return str(addr["address"])
    except Exception as err:
        log.debug("node %s: %s", hostname, err)
    info(
        "server.go:212",
        "Can't determine this node's IP, assuming loopback; "
        "if this is incorrect, please set the --bind-address flag",
    )
    return "127.0.0.1"


def local_detector(cfg: KubeProxyConfig) -> Any:
    from clusters.lab.programs.kubeproxy.options import LocalDetector

    if cfg.detect_local_mode is LocalMode.CLUSTER_CIDR:
        v4 = [c for c in cfg.cluster_cidrs if c.version == 4]
        if v4:
            return LocalDetector.by_cidr(str(v4[0]))
        info(
            "server_linux.go:170",
            "Detect-local-mode set to ClusterCIDR, but no cluster CIDR specified for primary IP family",
            ipFamily="IPv4",
            clusterCIDRs="[" + " ".join(str(c) for c in cfg.cluster_cidrs) + "]",
        )
        return LocalDetector()
    if cfg.detect_local_mode is LocalMode.BRIDGE_INTERFACE and cfg.bridge_interface:
        return LocalDetector.by_interface(cfg.bridge_interface)
    if cfg.detect_local_mode is LocalMode.INTERFACE_NAME_PREFIX and cfg.interface_name_prefix:
        return LocalDetector.by_interface(cfg.interface_name_prefix + "+")
    return LocalDetector()


def run(cfg: KubeProxyConfig, ns: argparse.Namespace, stop: threading.Event) -> None:
    from clusters.lab.controllers.client import Kube
    from clusters.lab.programs.kubeproxy.options import RenderOptions
    from clusters.lab.programs.kubeproxy.serving import RetryingServer, go_listen_error
    from clusters.lab.programs.kubeproxy.sync import Proxier, health_routes, metrics_routes

    kube = Kube(make_client(cfg, ns))
    hostname = (ns.hostname_override or cfg.hostname_override or socket.gethostname()).strip().lower()
    ip = node_ip(kube, hostname)
    detector = local_detector(cfg)
    if cfg.mode is ProxyMode.IPTABLES:
        info("server_linux.go:147", "Using iptables Proxier")
    elif cfg.mode is ProxyMode.IPVS:
        info("server_linux.go:194", "Using ipvs Proxier")
        error("server_linux.go:196", IPVS_DEPRECATED)
        info("server_linux.go:197", "Lab difference: ipvs mode is served by the iptables rule layout")
    else:
        info("server_linux.go:231", "Using nftables Proxier")
        raise CommandFailed(
            "unable to create proxier: lab difference: the lab kube-proxy implements the iptables layout "
            "only; use mode: iptables (or blank) on the lab"
        )
    if lab_netns_name() is None:
        raise CommandFailed(
            "unable to create proxier: lab safety: this process is not in a kncl- lab network namespace; "
            "the lab kube-proxy programs iptables only inside a lab node (ip netns exec kncl-…)"
        )
    if cfg.localhost_node_ports and not cfg.node_port_addresses:
        info("proxier.go:243", LOCALNET_MESSAGE, ipFamily="IPv4")
        with open(ROUTE_LOCALNET, "w") as fh:
            fh.write("1")
    options = RenderOptions(
        node_name=hostname,
        node_ip=ip,
        masquerade_mark=cfg.masquerade_mark,
        masquerade_all=cfg.masquerade_all,
        local_detector=detector,
        localhost_node_ports=cfg.localhost_node_ports and not cfg.node_port_addresses,
        node_port_ips=None if not cfg.node_port_addresses else _node_port_ips(cfg, ip),
    )
    proxier = Proxier(
        kube, options, mode=cfg.mode.value, min_sync_period=cfg.min_sync_period, sync_period=cfg.sync_period
    )
    healthz_addr, metrics_addr = cfg.healthz_bind_address, cfg.metrics_bind_address

    def healthz_failed(err: OSError) -> None:
        failed = f"failed to start proxier healthz on {healthz_addr}: {go_listen_error(healthz_addr, err)}"
        error("server.go:588", "Healthz server failed", err=failed)

    def metrics_failed(err: OSError) -> None:
        failed = f"starting metrics server failed: {go_listen_error(metrics_addr, err)}"
        error("server.go:634", "Unhandled Error", err=failed, logger="UnhandledError")

    servers = [
        RetryingServer(healthz_addr, health_routes(proxier.health), "healthz", healthz_failed),
        RetryingServer(metrics_addr, metrics_routes(proxier), "metrics", metrics_failed),
    ]
    info("server.go:539", "Version info", version="v1.36.1-lab")
    try:
        proxier.start()
        stop.wait()
    finally:
        proxier.stop()
        for srv in servers:
            srv.shutdown()


def _node_port_ips(cfg: KubeProxyConfig, ip: str) -> tuple[str, ...]:
    """nodePortAddresses: ``primary`` → the node IP; CIDRs → the node IP when it falls inside."""
    import ipaddress

    if cfg.node_port_addresses == ("primary",):
        return (ip,)
    addr = ipaddress.ip_address(ip)
    hits = [c for c in cfg.node_port_addresses if addr in ipaddress.ip_network(c, strict=False)]
    return (ip,) if hits else ()


def main(argv: Sequence[str] | None = None) -> int:
    handler = KlogHandler()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    ns = parse_flags(sys.argv[1:] if argv is None else argv)
    if ns.ignored:
        log.debug("ignoring flags %s", ns.ignored)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cfg = complete_and_validate(ns)
        run(cfg, ns, stop)
    except CommandFailed as err:
        error("run.go:72", "command failed", err=str(err))
        return 1
    return 0
