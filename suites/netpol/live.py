"""The netpol model on a live cluster: deploy it, apply policies, and measure the matrix against the oracle.

The expectation is always the oracle's, computed from what the API server holds: the namespaces
and their labels, the pods with their IPs and named container ports, and the policies a step
applied as the API returned them. Policies the step did not apply are not in its expectation; the
probe-channel companion policies are computed from EVERY policy in the model namespaces, because
the control channel must stay open whoever isolated a pod (and they change no matrix cell).

A step (:func:`run_step`) probes every cell of every port/protocol in one concurrent sweep,
re-probes the wrong cells until the deadline, then confirms with one more full sweep (or, when
the step failed, probes its right cells once more): a cell that was right before the policy was
programmed (an over-blocking rule that lands late) would otherwise pass unseen, or be missing from
a failing step's matrix. Loopback cells are not probed (CNIs differ there, kubernetes #95879).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clusters.handle import Cluster
from suites.connectivity import Check, Outcome, recheck_right_cells, run_checks
from suites.netpol.model import PROBE_CHANNEL_POLICY, Model, probe_channel_policies
from suites.netpol.oracle import NamespaceInfo, Oracle, PodInfo
from suites.probe import ProbeChannel
from suites.progress import Progress
from suites.topology import pod_ready_ip, why_not_ready
from suites.truthtable import PortProtocol, TruthTable

log = logging.getLogger(__name__)

API_TIMEOUT = 30.0
POLL_INTERVAL = 0.5
READY_TIMEOUT = 180.0


class ModelNotReady(Exception):
    """The model's pods did not become Ready in time; the message names each and why."""


def _json(response: Any) -> Any:
    return json.loads(response.data)


@dataclass(frozen=True)
class Live:
    cluster: Cluster
    model: Model
    pod_ips: Mapping[str, str]
    """Model key (``x/a``) -> pod IP."""


# ---- the model's objects ---------------------------------------------------------------------


def deploy(cluster: Cluster, model: Model, progress: Progress, timeout: float = READY_TIMEOUT) -> Live:
    """Create the namespaces, pods and Services, and wait until every pod is Ready (or raise why not)."""
    from kubernetes import client

    core: Any = client.CoreV1Api(cluster.api_client)
    for obj in model.manifests():
        kind, ns = obj["kind"], obj["metadata"].get("namespace")
        if kind == "Namespace":
            core.create_namespace(obj, _request_timeout=API_TIMEOUT)
        elif kind == "Pod":
            core.create_namespaced_pod(ns, obj, _request_timeout=API_TIMEOUT)
        else:
            core.create_namespaced_service(ns, obj, _request_timeout=API_TIMEOUT)
    keys = model.pod_keys()
    ready: dict[str, str] = {}
    last: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    with progress.step(f"netpol model pods Ready (run {model.run_id})", total=len(keys)) as step:
        while True:
            for pod in live_pods(cluster, model):
                key = model.model_key(f"{pod['metadata']['namespace']}/{pod['metadata']['name']}")
                last[key] = pod
                ip = pod_ready_ip(pod)
                if ip and key not in ready:
                    ready[key] = ip
                    step.advance()
            if len(ready) == len(keys):
                return Live(cluster, model, ready)
            if time.monotonic() >= deadline:
                waiting = [k for k in keys if k not in ready]
                lines = [f"{len(waiting)} of {len(keys)} netpol model pods not Ready after {timeout:.0f}s:"]
                lines += [f"  {model.cluster_key(k)}: {why_not_ready(last.get(k))}" for k in waiting]
                raise ModelNotReady("\n".join(lines))
            time.sleep(POLL_INTERVAL)


def delete(cluster: Cluster, model: Model) -> list[str]:
    """Delete the model's namespaces (their pods, Services and policies go with them)."""
    from suites import namespaces

    return [n for n in (model.ns_name(ns) for ns in model.namespaces) if namespaces.delete(cluster, n)]


def live_pods(cluster: Cluster, model: Model) -> list[dict[str, Any]]:
    from kubernetes import client

    core: Any = client.CoreV1Api(cluster.api_client)
    out: list[dict[str, Any]] = []
    for ns in model.namespaces:
        listing = core.list_namespaced_pod(
            model.ns_name(ns), _request_timeout=API_TIMEOUT, _preload_content=False
        )
        out += _json(listing).get("items") or []
    return out


def named_ports(pod: Mapping[str, Any]) -> dict[str, tuple[int, str]]:
    """The pod's named container ports, as a named-port rule resolves them."""
    out: dict[str, tuple[int, str]] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        for p in container.get("ports") or []:
            if p.get("name"):
                out[str(p["name"])] = (int(p["containerPort"]), str(p.get("protocol") or "TCP"))
    return out


def live_oracle(live: Live, policies: Iterable[Mapping[str, Any]]) -> Oracle:
    """The oracle over the live namespaces and pods of the model, with ``policies``."""
    from kubernetes import client

    core: Any = client.CoreV1Api(live.cluster.api_client)
    namespaces = []
    for ns in live.model.namespaces:
        doc = _json(
            core.read_namespace(live.model.ns_name(ns), _request_timeout=API_TIMEOUT, _preload_content=False)
        )
        namespaces.append(NamespaceInfo(doc["metadata"]["name"], doc["metadata"].get("labels") or {}))
    pods = [
        PodInfo(
            p["metadata"]["namespace"],
            p["metadata"]["name"],
            p["metadata"].get("labels") or {},
            str((p.get("status") or {}).get("podIP") or ""),
            named_ports(p),
        )
        for p in live_pods(live.cluster, live.model)
    ]
    return Oracle(namespaces, pods, policies)


# ---- policies --------------------------------------------------------------------------------


def _netapi(cluster: Cluster) -> Any:
    from kubernetes import client

    return client.NetworkingV1Api(cluster.api_client)


def create_policies(cluster: Cluster, policies: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Create each policy; returns them as the API server returned them (defaults applied)."""
    api = _netapi(cluster)
    created = []
    for pol in policies:
        ns = pol["metadata"]["namespace"]
        response = api.create_namespaced_network_policy(
            ns, dict(pol), _request_timeout=API_TIMEOUT, _preload_content=False
        )
        created.append(_json(response))
    return created


def delete_policies(cluster: Cluster, policies: Iterable[Mapping[str, Any]]) -> None:
    """Delete each policy; one already gone is fine (cleanup must be safe to repeat)."""
    from kubernetes.client.exceptions import ApiException

    api = _netapi(cluster)
    for pol in policies:
        meta = pol["metadata"]
        try:
            api.delete_namespaced_network_policy(
                meta["name"], meta["namespace"], _request_timeout=API_TIMEOUT
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


def live_policies(live: Live) -> list[dict[str, Any]]:
    api = _netapi(live.cluster)
    out: list[dict[str, Any]] = []
    for ns in live.model.namespaces:
        listing = api.list_namespaced_network_policy(
            live.model.ns_name(ns), _request_timeout=API_TIMEOUT, _preload_content=False
        )
        out += _json(listing).get("items") or []
    return out


def sync_probe_channel(live: Live) -> list[dict[str, Any]]:
    """Make the companion policies match every policy now in the model namespaces; returns them."""
    from kubernetes.client.exceptions import ApiException

    others = [p for p in live_policies(live) if p["metadata"]["name"] != PROBE_CHANNEL_POLICY]
    wanted = {
        p["metadata"]["namespace"]: p for p in probe_channel_policies(live.model, live_oracle(live, others))
    }
    api = _netapi(live.cluster)
    for ns in (live.model.ns_name(n) for n in live.model.namespaces):
        body = wanted.get(ns)
        try:
            if body is None:
                api.delete_namespaced_network_policy(PROBE_CHANNEL_POLICY, ns, _request_timeout=API_TIMEOUT)
                continue
            try:
                api.replace_namespaced_network_policy(
                    PROBE_CHANNEL_POLICY, ns, body, _request_timeout=API_TIMEOUT
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
                api.create_namespaced_network_policy(ns, body, _request_timeout=API_TIMEOUT)
        except ApiException as exc:
            if exc.status != 404:
                raise
    return list(wanted.values())


# ---- a step ----------------------------------------------------------------------------------


def checks(
    live: Live, title: str, expected: Mapping[PortProtocol, TruthTable], timeout: float
) -> list[Check]:
    """One check per port/protocol: every non-loopback cell, probed from the source pod to the target's IP."""
    jobs = live.model.jobs(live.pod_ips, timeout=timeout)
    return [
        Check(
            f"{title}: {pp}",
            table,
            {(s, d): job for (p, s, d), job in jobs.items() if p == pp and s != d},
        )
        for pp, table in expected.items()
    ]


@dataclass(frozen=True)
class StepResult:
    outcomes: tuple[Outcome, ...]
    timings: Mapping[str, float] = field(default_factory=dict)
    """Seconds per phase: first (sweep + converge), then confirm (one more full sweep) when right
    or recheck (the right cells again) when wrong."""

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def probes(self) -> int:
        return sum(len(o.check.jobs) for o in self.outcomes)


def measure(
    channel: ProbeChannel,
    step_checks: Sequence[Check],
    *,
    deadline: float,
    progress: Progress,
    max_workers: int,
    confirm: bool = True,
) -> StepResult:
    """Sweep, re-probe wrong cells until ``deadline`` seconds, then (with ``confirm``) confirm with a
    full sweep if right, or probe the right cells once more if wrong, so a failing step's matrix
    also shows the cells a late rule broke."""
    started = time.monotonic()
    first = run_checks(channel, step_checks, timeout=deadline, progress=progress, max_workers=max_workers)
    timings = {"first": time.monotonic() - started}
    if not confirm:
        return StepResult(tuple(first), timings)
    if not all(o.ok for o in first):
        mark = time.monotonic()
        settled = recheck_right_cells(
            channel, first, timeout=deadline, progress=progress, max_workers=max_workers
        )
        timings["recheck"] = time.monotonic() - mark
        return StepResult(tuple(settled), timings)
    mark = time.monotonic()
    again = run_checks(channel, step_checks, timeout=deadline, progress=progress, max_workers=max_workers)
    timings["confirm"] = time.monotonic() - mark
    return StepResult(tuple(again), timings)
