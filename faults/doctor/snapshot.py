"""One read-only snapshot of the cluster per diagnosis, so every rule sees the same moment.

Rules are pure functions of a :class:`Snapshot` (the API's own JSON, plain dicts at this edge) and
of :class:`NodeReads` (what the node channel said), which makes each rule testable with fixture
objects shaped like the real API's answers. Only the reads that feed a rule are taken: pod logs of
the CoreDNS and kube-proxy pods (``previous`` only after a restart), kube-system's ConfigMaps, and
only the Secrets an Ingress names for TLS.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clusters.capabilities import Capability
from clusters.errors import KnetcheckError
from clusters.handle import Cluster
from clusters.recipes import CniRecipe

log = logging.getLogger(__name__)

Obj = Mapping[str, Any]
SYSTEM_NS = "kube-system"
DNS_SERVICE = "kube-dns"
DNS_DEPLOYMENT = "coredns"
DNS_POD_LABEL = ("k8s-app", "kube-dns")
PROXY_DAEMONSET = "kube-proxy"
PROXY_CONFIGMAP = "kube-proxy"
PROXY_POD_LABEL = ("k8s-app", "kube-proxy")
CNI_CONF_DIR = "/etc/cni/net.d"
CNI_BIN_DIR = "/opt/cni/bin"
CNI_CONF_EXTENSIONS = (".conf", ".conflist", ".json")
"""What go-cni loads from the conf dir (reference §3.1); other files are ignored."""
LOG_TAIL_LINES = 200
API_TIMEOUT = 30.0


@dataclass(frozen=True)
class NodeFiles:
    """What one node's channel said. ``None`` fields were not readable (the reason is in ``errors``)."""

    conf_files: tuple[str, ...] | None = None
    """Files in /etc/cni/net.d that containerd would consider, sorted as containerd sorts them."""
    first_conf: str | None = None
    """The content of the first of them."""
    bin_files: tuple[str, ...] | None = None
    routes: tuple[str, ...] | None = None
    """``ip route`` lines (IPv4 main table)."""
    uplink: tuple[str, int] | None = None
    """The node's default-route interface and its MTU (``ip -o link show dev <dev>``)."""
    kubelet_cni_lines: tuple[str, ...] = ()
    """The last kubelet log lines mentioning CNI (``journalctl -u kubelet | grep CNI``)."""
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeReads:
    """Node channel reads per node; ``available`` is False without node access (API evidence only)."""

    available: bool
    nodes: Mapping[str, NodeFiles] = field(default_factory=dict)
    why_unavailable: str = ""

    def get(self, node: str) -> NodeFiles | None:
        return self.nodes.get(node) if self.available else None


@dataclass(frozen=True)
class Snapshot:
    """The cluster's objects as the API returned them (camelCase JSON)."""

    now: datetime
    nodes: tuple[Obj, ...] = ()
    pods: tuple[Obj, ...] = ()
    events: tuple[Obj, ...] = ()
    daemonsets: tuple[Obj, ...] = ()
    deployments: tuple[Obj, ...] = ()
    services: tuple[Obj, ...] = ()
    endpointslices: tuple[Obj, ...] = ()
    configmaps: tuple[Obj, ...] = ()
    """kube-system's only."""
    ingresses: tuple[Obj, ...] = ()
    ingressclasses: tuple[Obj, ...] = ()
    secrets: tuple[Obj, ...] = ()
    """Only the Secrets an Ingress names under spec.tls."""
    logs: Mapping[str, str] = field(default_factory=dict)
    """Container logs keyed by :func:`log_key`."""

    # ---- lookups the rules share --------------------------------------------------------------

    def find(self, kind: str, namespace: str, name: str) -> Obj | None:
        items: Iterable[Obj] = getattr(self, kind)
        for obj in items:
            meta = obj.get("metadata") or {}
            if meta.get("name") == name and (meta.get("namespace") or "") == namespace:
                return obj
        return None

    def pods_labelled(self, namespace: str, labels: Mapping[str, str]) -> list[Obj]:
        return [p for p in self.pods if ns_of(p) == namespace and selects(labels, labels_of(p))]

    def slices_of(self, namespace: str, service: str) -> list[Obj]:
        return [
            s
            for s in self.endpointslices
            if ns_of(s) == namespace and labels_of(s).get("kubernetes.io/service-name") == service
        ]

    def log(self, pod: Obj, container: str, previous: bool) -> str:
        return self.logs.get(log_key(ns_of(pod), name_of(pod), container, previous), "")


# ---- small accessors for API JSON ----------------------------------------------------------------


def name_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def ns_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")


def labels_of(obj: Obj) -> dict[str, str]:
    return {str(k): str(v) for k, v in ((obj.get("metadata") or {}).get("labels") or {}).items()}


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """A Service-style equality selector; an empty one selects nothing (as for Services)."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def log_key(namespace: str, pod: str, container: str, previous: bool) -> str:
    return f"{namespace}/{pod}/{container}" + (":previous" if previous else "")


def parse_time(value: object) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def pod_ready(pod: Obj) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def node_ready(node: Obj) -> tuple[bool, Obj]:
    """(Ready?, the Ready condition) — a node without one counts as not Ready."""
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True", cond
    return False, {}


def restarts(pod: Obj) -> int:
    return sum(
        int(cs.get("restartCount") or 0) for cs in (pod.get("status") or {}).get("containerStatuses") or []
    )


# ---- taking it ----------------------------------------------------------------------------------


def _raw(call: Any, *args: Any, **kwargs: Any) -> list[Obj]:
    """A list call's items as the API's JSON (no client model round trip)."""
    response = call(*args, _preload_content=False, _request_timeout=API_TIMEOUT, **kwargs)
    doc = json.loads(response.data or b"{}")
    return list(doc.get("items") or [])


def take(cluster: Cluster) -> Snapshot:
    """Read everything the rules need, once."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(cluster.api_client)
    apps = client.AppsV1Api(cluster.api_client)
    disc = client.DiscoveryV1Api(cluster.api_client)
    net = client.NetworkingV1Api(cluster.api_client)

    def optional(call: Any, *args: Any) -> list[Obj]:
        try:
            return _raw(call, *args)
        except ApiException as exc:  # a cluster without the resource (or RBAC for it) has none
            log.info(
                "doctor: %s unreadable (%s); treated as none", getattr(call, "__name__", call), exc.status
            )
            return []

    pods = _raw(core.list_pod_for_all_namespaces)
    ingresses = optional(net.list_ingress_for_all_namespaces)
    snap = Snapshot(
        now=datetime.now(UTC),
        nodes=tuple(_raw(core.list_node)),
        pods=tuple(pods),
        events=tuple(optional(core.list_event_for_all_namespaces)),
        daemonsets=tuple(_raw(apps.list_daemon_set_for_all_namespaces)),
        deployments=tuple(_raw(apps.list_deployment_for_all_namespaces)),
        services=tuple(_raw(core.list_service_for_all_namespaces)),
        endpointslices=tuple(optional(disc.list_endpoint_slice_for_all_namespaces)),
        configmaps=tuple(optional(core.list_namespaced_config_map, SYSTEM_NS)),
        ingresses=tuple(ingresses),
        ingressclasses=tuple(optional(net.list_ingress_class)),
        secrets=tuple(_tls_secrets(core, ingresses)),
        logs=_logs(core, pods),
    )
    return snap


def _tls_secrets(core: Any, ingresses: list[Obj]) -> list[Obj]:
    from kubernetes.client.exceptions import ApiException

    wanted = sorted(
        {
            (ns_of(ing), str(tls["secretName"]))
            for ing in ingresses
            for tls in (ing.get("spec") or {}).get("tls") or []
            if tls.get("secretName")
        }
    )
    found: list[Obj] = []
    for namespace, name in wanted:
        try:
            response = core.read_namespaced_secret(
                name, namespace, _preload_content=False, _request_timeout=API_TIMEOUT
            )
        except ApiException as exc:
            if exc.status not in (403, 404):
                raise
            continue
        found.append(json.loads(response.data))
    return found


def _logs(core: Any, pods: list[Obj]) -> dict[str, str]:
    """Current (and, after a restart, previous) logs of the CoreDNS and kube-proxy pods."""
    from kubernetes.client.exceptions import ApiException

    labels = (dict([DNS_POD_LABEL]), dict([PROXY_POD_LABEL]))
    out: dict[str, str] = {}
    for pod in pods:
        if ns_of(pod) != SYSTEM_NS or not any(selects(sel, labels_of(pod)) for sel in labels):
            continue
        statuses = {
            str(cs.get("name")): cs for cs in (pod.get("status") or {}).get("containerStatuses") or []
        }
        for container in (pod.get("spec") or {}).get("containers") or []:
            cname = str(container.get("name"))
            cs = statuses.get(cname) or {}
            wants = [False] + ([True] if int(cs.get("restartCount") or 0) > 0 else [])
            for previous in wants:
                try:
                    text = core.read_namespaced_pod_log(
                        name_of(pod),
                        SYSTEM_NS,
                        container=cname,
                        previous=previous,
                        tail_lines=LOG_TAIL_LINES,
                        _request_timeout=API_TIMEOUT,
                    )
                except ApiException as exc:  # not started yet / no previous container
                    log.debug("doctor: no log for %s/%s (%s)", name_of(pod), cname, exc.status)
                    continue
                out[log_key(SYSTEM_NS, name_of(pod), cname, previous)] = str(text or "")
    return out


# ---- node reads ----------------------------------------------------------------------------------


def read_nodes(
    cluster: Cluster, nodes: Iterable[str], timeout: float = 15.0, journal_for: Collection[str] = ()
) -> NodeReads:
    """The node files the CNI and routing rules need, through the node channel (when there is one).

    Three commands per node (a node shell can cost a process start each); the kubelet journal only
    for the nodes in ``journal_for`` (those whose network is not ready).
    """
    if not cluster.has(Capability.NODE_ACCESS):
        return NodeReads(False, {}, cluster.missing(Capability.NODE_ACCESS) or "no node access")
    names = list(nodes)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(names))), thread_name_prefix="doctor-node") as pool:
        files = list(pool.map(lambda node: _read_node(cluster, node, timeout, node in journal_for), names))
    return NodeReads(True, dict(zip(names, files, strict=True)))


def parse_ls(stdout: str, dirs: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``ls -1 -A DIR1 DIR2`` output -> entries per directory (a missing directory is absent)."""
    out: dict[str, list[str]] = {}
    current: str | None = None
    for line in stdout.splitlines():
        if line.endswith(":") and line[:-1] in dirs:
            current = line[:-1]
            out[current] = []
        elif line and current is not None:
            out[current].append(line)
    return {d: tuple(entries) for d, entries in out.items()}


def _read_node(cluster: Cluster, node: str, timeout: float, journal: bool) -> NodeFiles:
    errors: list[str] = []

    def call(*argv: str, tolerate: bool = False) -> str | None:
        try:
            result = cluster.node_exec(node, list(argv), timeout=timeout)
        except KnetcheckError as exc:
            errors.append(str(exc))
            return None
        if not result.ok:
            errors.append(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()[-200:]}")
            if not tolerate:
                return None
        return result.stdout

    listing = call("ls", "-1", "-A", CNI_CONF_DIR, CNI_BIN_DIR, tolerate=True)
    dirs = parse_ls(listing or "", (CNI_CONF_DIR, CNI_BIN_DIR))
    conf_files: tuple[str, ...] | None = None
    if listing is not None:
        conf_files = tuple(sorted(f for f in dirs.get(CNI_CONF_DIR, ()) if f.endswith(CNI_CONF_EXTENSIONS)))
    first = call("cat", f"{CNI_CONF_DIR}/{conf_files[0]}") if conf_files else None
    routes = call("ip", "-4", "route", "show")
    uplink = _uplink(call, routes or "")
    return NodeFiles(
        conf_files=conf_files,
        first_conf=first,
        bin_files=dirs.get(CNI_BIN_DIR) if listing is not None and CNI_BIN_DIR in dirs else None,
        routes=None if routes is None else tuple(ln.strip() for ln in routes.splitlines() if ln.strip()),
        kubelet_cni_lines=_kubelet_cni_lines(cluster, node, timeout) if journal else (),
        uplink=uplink,
        errors=tuple(errors),
    )


def _uplink(call: Any, routes: str) -> tuple[str, int] | None:
    """The default route's device and its MTU: what every packet leaving the node goes through."""
    dev = next(
        (
            ln.split(" dev ", 1)[1].split()[0]
            for ln in routes.splitlines()
            if ln.startswith("default ") and " dev " in ln
        ),
        None,
    )
    if dev is None:
        return None
    out = call("ip", "-o", "link", "show", "dev", dev) or ""
    words = out.split()
    if "mtu" not in words or words.index("mtu") + 1 >= len(words):
        return None
    value = words[words.index("mtu") + 1]
    return (dev, int(value)) if value.isdigit() else None


def _kubelet_cni_lines(cluster: Cluster, node: str, timeout: float) -> tuple[str, ...]:
    """The runbook's ``journalctl -u kubelet | grep CNI``; a node without a journal has a log file."""
    for argv in (
        ["journalctl", "-u", "kubelet", "--no-pager", "-n", "300", "-o", "cat"],
        ["tail", "-n", "300", "/var/log/kubelet.log"],
    ):
        try:
            result = cluster.node_exec(node, argv, timeout=timeout)
        except KnetcheckError:
            continue
        lines = [ln for ln in result.stdout.splitlines() if "cni" in ln.lower()]
        if result.ok and lines:
            return tuple(lines[-3:])
    return ()


RECENT_EVENTS = 900.0
"""Seconds an event counts as current: kubelet repeats sandbox failures every few seconds while
they last, so older ones belong to a fault that is gone."""


def event_time(event: Obj) -> datetime | None:
    series = event.get("series") or {}
    for value in (
        series.get("lastObservedTime"),
        event.get("lastTimestamp"),
        event.get("eventTime"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    ):
        when = parse_time(value)
        if when is not None:
            return when
    return None


@dataclass(frozen=True)
class Facts:
    """Everything a rule may look at: the snapshot, the node reads and the CNI's recipe."""

    snapshot: Snapshot
    node_reads: NodeReads
    recipe: CniRecipe

    def recent_pod_events(self, reason: str) -> list[tuple[Obj, Obj | None]]:
        """Recent events with ``reason`` about pods, with the pod if it still exists and is not
        Running (a pod that got its sandbox since has nothing left to diagnose)."""
        out: list[tuple[Obj, Obj | None]] = []
        snap = self.snapshot
        for ev in snap.events:
            involved = ev.get("involvedObject") or ev.get("regarding") or {}
            if ev.get("reason") != reason or involved.get("kind") != "Pod":
                continue
            when = event_time(ev)
            if when is not None and (snap.now - when).total_seconds() > RECENT_EVENTS:
                continue
            pod = snap.find("pods", str(involved.get("namespace") or ""), str(involved.get("name") or ""))
            if pod is not None and (pod.get("status") or {}).get("phase") in (
                "Running",
                "Succeeded",
                "Failed",
            ):
                continue
            if pod is None:
                continue
            out.append((ev, pod))
        return out
