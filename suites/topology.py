"""Probe topologies: agnhost netexec pods pinned to nodes, so every pair a check needs exists.

A topology has, per schedulable node, a few ordinary pods (netexec on :8080 TCP and :8081 UDP) and,
per node it may run on, one hostNetwork netexec pod standing for the node itself (node->pod and
pod->node traffic). hostNetwork pods listen on the node's ports, so they use :18080/:18081: the
pod ports could be taken there by anything, and a node port clash would fail only at run time.

Pods are pinned the way upstream e2e pins them, with required node affinity on ``metadata.name``
rather than ``spec.nodeName``: the scheduler still checks taints and cordons, so a pod that
cannot run there stays Pending with the scheduler's reason instead of failing obscurely.

Manifests are plain dicts built by pure functions (validated against the real schemas in the
project's tests); :func:`deploy` creates them and waits for Ready with a deadline.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clusters.handle import Cluster
from clusters.labels import run_labels
from suites.probe import PodRef, ProbeJob, ProxyChannel
from suites.progress import Progress
from suites.verdict import ProbeResult

log = logging.getLogger(__name__)

AGNHOST_IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
CONTAINER = "netexec"
POD_HTTP_PORT = 8080
POD_UDP_PORT = 8081
HOST_HTTP_PORT = 18080
HOST_UDP_PORT = 18081
ROLE_LABEL = "knetcheck.io/probe-role"
NODE_LABEL = "knetcheck.io/probe-node"
POD_ROLE = "pod"
HOST_ROLE = "host"
HOST_TOLERATED_TAINTS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
"""Taints the node stand-ins tolerate: the control plane is a node whose traffic counts too."""
READY_TIMEOUT = 240.0
API_TIMEOUT = 30.0
POLL_INTERVAL = 0.5
_NAME_ROOM = 40


@dataclass(frozen=True)
class Taint:
    key: str
    effect: str
    value: str = ""


@dataclass(frozen=True)
class NodeInfo:
    name: str
    label: str
    """Short name for matrices: the node name without the prefix all nodes share."""
    ip: str
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False

    def admits(self, tolerated: Sequence[str] = ()) -> bool:
        """Whether a pod tolerating ``tolerated`` (keys, any effect) may be scheduled here."""
        if self.unschedulable:
            return False
        return all(t.effect == "PreferNoSchedule" or t.key in tolerated for t in self.taints)


@dataclass(frozen=True)
class ProbePod:
    name: str
    node: NodeInfo
    host_network: bool
    http_port: int
    udp_port: int
    key: str
    """The pod's row/column name in matrices: ``<node label>/<letter>`` or ``<node label>/node``."""


@dataclass(frozen=True)
class Plan:
    """What to create: every pod with its node, in a namespace labelled with the run id."""

    namespace: str
    run_id: str
    pods: tuple[ProbePod, ...]
    image: str = AGNHOST_IMAGE

    def manifests(self) -> list[dict[str, Any]]:
        return [pod_manifest(self, p) for p in self.pods]


@dataclass(frozen=True)
class Placed:
    """A probe pod that is Ready, with its IP (the node's IP for a hostNetwork pod)."""

    pod: ProbePod
    ip: str
    namespace: str

    @property
    def ref(self) -> PodRef:
        return PodRef(self.namespace, self.pod.name, CONTAINER)


@dataclass(frozen=True)
class Topology:
    """A deployed plan: every pod Ready with its IP."""

    plan: Plan
    placed: tuple[Placed, ...]

    @property
    def namespace(self) -> str:
        return self.plan.namespace

    @property
    def pods(self) -> list[Placed]:
        """The ordinary (pod-network) probe pods, node by node."""
        return [p for p in self.placed if not p.pod.host_network]

    @property
    def hosts(self) -> list[Placed]:
        """The hostNetwork stand-ins, one per node they may run on."""
        return [p for p in self.placed if p.pod.host_network]

    @property
    def one_per_node(self) -> list[Placed]:
        """The first ordinary probe pod of each node: a check's clients, one per node."""
        first: dict[str, Placed] = {}
        for p in self.pods:
            first.setdefault(p.pod.node.name, p)
        return list(first.values())

    @property
    def pod_nodes(self) -> list[str]:
        return list(dict.fromkeys(p.pod.node.name for p in self.pods))

    def by_key(self, key: str) -> Placed:
        for p in self.placed:
            if p.pod.key == key:
                return p
        raise KeyError(f"no probe pod {key!r} in this topology")

    def host_of(self, pod: Placed) -> Placed | None:
        """The hostNetwork stand-in of ``pod``'s node, if that node has one."""
        return next((h for h in self.hosts if h.pod.node.name == pod.pod.node.name), None)


# ---- nodes -----------------------------------------------------------------------------------


def node_infos(nodes: Sequence[Mapping[str, Any]]) -> list[NodeInfo]:
    """NodeInfos from Node objects (API JSON), sorted by name, with short labels for matrices."""
    names = sorted(str(n["metadata"]["name"]) for n in nodes)
    labels = dict(zip(names, short_names(names), strict=True))
    out = []
    for n in sorted(nodes, key=lambda n: str(n["metadata"]["name"])):
        spec = n.get("spec") or {}
        addresses = (n.get("status") or {}).get("addresses") or []
        ip = next((str(a["address"]) for a in addresses if a.get("type") == "InternalIP"), "")
        taints = tuple(
            Taint(str(t["key"]), str(t.get("effect", "")), str(t.get("value") or ""))
            for t in spec.get("taints") or []
        )
        name = str(n["metadata"]["name"])
        out.append(NodeInfo(name, labels[name], ip, taints, bool(spec.get("unschedulable"))))
    return out


def short_names(names: Sequence[str]) -> list[str]:
    """Names without the dash-ended prefix they all share (``kind-worker2`` -> ``worker2``)."""
    if len(names) < 2:
        return list(names)
    common = ""
    first = names[0]
    for i in range(len(first)):
        if all(len(n) > i and n[i] == first[i] for n in names):
            common += first[i]
        else:
            break
    cut = common.rfind("-") + 1
    shorts = [n[cut:] for n in names]
    return shorts if all(shorts) and len(set(shorts)) == len(shorts) else list(names)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:_NAME_ROOM].rstrip("-") or "node"


# ---- planning and manifests --------------------------------------------------------------------


def plan(namespace: str, run_id: str, nodes: Sequence[NodeInfo], pods_per_node: int = 2,
         image: str = AGNHOST_IMAGE) -> Plan:
    """``pods_per_node`` ordinary pods on every node they may run on (two give a same-node pair),
    and a hostNetwork stand-in on every node that only has control-plane taints."""
    if not 1 <= pods_per_node <= 26:
        raise ValueError("pods_per_node must be between 1 and 26 (pods are lettered a, b, …)")
    pods: list[ProbePod] = []
    used: set[str] = set()
    for node in nodes:
        slug = _slug(node.label)
        if slug in used:
            slug = f"{slug[:_NAME_ROOM - 4]}-{len(used)}"
        used.add(slug)
        if node.admits():
            for i in range(pods_per_node):
                letter = chr(ord("a") + i)
                pods.append(ProbePod(f"pod-{slug}-{letter}", node, False, POD_HTTP_PORT, POD_UDP_PORT,
                                     f"{node.label}/{letter}"))
        if node.admits(HOST_TOLERATED_TAINTS):
            pods.append(ProbePod(f"host-{slug}", node, True, HOST_HTTP_PORT, HOST_UDP_PORT,
                                 f"{node.label}/node"))
    return Plan(namespace, run_id, tuple(pods), image)


def pod_manifest(plan: Plan, pod: ProbePod) -> dict[str, Any]:
    role = HOST_ROLE if pod.host_network else POD_ROLE
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": plan.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["netexec", f"--http-port={pod.http_port}", f"--udp-port={pod.udp_port}"],
        "ports": [
            {"containerPort": pod.http_port, "name": "http", "protocol": "TCP"},
            {"containerPort": pod.udp_port, "name": "udp", "protocol": "UDP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": pod.http_port},
            "periodSeconds": 1,
            "failureThreshold": 3,
        },
    }
    pin = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [pod.node.name]}]}
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 0,
        "containers": [container],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [pin]
                }
            }
        },
    }
    if pod.host_network:
        spec["hostNetwork"] = True
        spec["tolerations"] = [
            {"key": key, "operator": "Exists", "effect": "NoSchedule"} for key in HOST_TOLERATED_TAINTS
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": plan.namespace,
            "labels": {**run_labels(plan.run_id), ROLE_LABEL: role, NODE_LABEL: _slug(pod.node.label)},
        },
        "spec": spec,
    }


# ---- deploying -------------------------------------------------------------------------------


class TopologyNotReady(AssertionError):
    """Probe pods did not become Ready in time; the message says which and why."""


def list_nodes(cluster: Cluster) -> list[NodeInfo]:
    from kubernetes import client

    api: Any = client.CoreV1Api(cluster.api_client)
    listing = api.list_node(_request_timeout=API_TIMEOUT)
    return node_infos([_as_dict(cluster, n) for n in listing.items])


def _as_dict(cluster: Cluster, obj: object) -> dict[str, Any]:
    """A client model as the API's JSON (camelCase keys), for the pure functions here."""
    serialize: Any = cluster.api_client.sanitize_for_serialization
    doc: dict[str, Any] = serialize(obj)
    return doc


def deploy(cluster: Cluster, plan: Plan, progress: Progress, timeout: float = READY_TIMEOUT) -> Topology:
    """Create the plan's pods and wait until every one is Ready (or raise with why not)."""
    from kubernetes import client

    api: Any = client.CoreV1Api(cluster.api_client)
    for body in plan.manifests():
        api.create_namespaced_pod(plan.namespace, body, _request_timeout=API_TIMEOUT)
    names = {p.name for p in plan.pods}
    ready: dict[str, str] = {}
    last: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    with progress.step(f"probe pods Ready in {plan.namespace}", total=len(names)) as step:
        while True:
            listing = api.list_namespaced_pod(plan.namespace, _request_timeout=API_TIMEOUT)
            for obj in listing.items:
                doc = _as_dict(cluster, obj)
                name = str(doc["metadata"]["name"])
                if name not in names:
                    continue
                last[name] = doc
                ip = pod_ready_ip(doc)
                if ip and name not in ready:
                    ready[name] = ip
                    step.advance()
            if len(ready) == len(names):
                break
            if time.monotonic() >= deadline:
                raise TopologyNotReady(not_ready_message(plan, last, ready, timeout))
            time.sleep(POLL_INTERVAL)
    placed = tuple(Placed(p, ready[p.name], plan.namespace) for p in plan.pods)
    return Topology(plan, placed)


def pod_ready_ip(pod: Mapping[str, Any]) -> str | None:
    """The pod IP once the pod is Running and Ready, else None."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or not status.get("podIP"):
        return None
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return str(status["podIP"]) if ready else None


def why_not_ready(pod: Mapping[str, Any] | None) -> str:
    """The pod's own account: phase, the scheduler's or kubelet's reason, container states."""
    if pod is None:
        return "not found"
    status = pod.get("status") or {}
    parts = [str(status.get("phase") or "no phase")]
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True" and (cond.get("reason") or cond.get("message")):
            why = f"{cond.get('reason') or ''} {cond.get('message') or ''}".strip()
            parts.append(f"{cond.get('type')}: {why}")
    for cs in status.get("containerStatuses") or []:
        for state, info in (cs.get("state") or {}).items():
            if state != "running" and info:
                parts.append(f"{cs.get('name')} {state}: {info.get('reason') or ''} "
                             f"{info.get('message') or ''}".strip())
    return "; ".join(parts)


def not_ready_message(plan: Plan, last: Mapping[str, Mapping[str, Any]], ready: Mapping[str, str],
                      timeout: float) -> str:
    waiting = [p for p in plan.pods if p.name not in ready]
    lines = [f"{len(waiting)} of {len(plan.pods)} probe pods in namespace {plan.namespace} not Ready "
             f"after {timeout:.0f}s:"]
    lines += [f"  {p.name} on {p.node.name}: {why_not_ready(last.get(p.name))}" for p in waiting]
    return "\n".join(lines)


def delete(cluster: Cluster, plan: Plan) -> None:
    """Delete the plan's pods (the namespace goes with the fixture; this frees the node ports now)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CoreV1Api(cluster.api_client)
    for pod in plan.pods:
        try:
            api.delete_namespaced_pod(pod.name, plan.namespace, grace_period_seconds=0,
                                      _request_timeout=API_TIMEOUT)
        except ApiException as exc:
            if exc.status != 404:
                raise


# ---- probing from the topology ---------------------------------------------------------------


class TopologyChannel:
    """Probes through the pod proxy, to each source pod's own netexec port (8080 or 18080).

    One :class:`~suites.probe.ProxyChannel` per control port, so a step may mix pod and node
    sources and still run as one concurrent sweep.
    """

    def __init__(self, cluster: Cluster, topology: Topology, pool_size: int) -> None:
        self._ports = {p.ref: p.pod.http_port for p in topology.placed}
        self._channels = {
            port: ProxyChannel(cluster, control_port=port, pool_size=pool_size)
            for port in sorted(set(self._ports.values()))
        }

    def run(self, job: ProbeJob) -> ProbeResult:
        port = self._ports.get(job.source)
        if port is None:
            raise KeyError(f"{job.source} is not a probe pod of this topology")
        return self._channels[port].run(job)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
