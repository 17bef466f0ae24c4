"""Chaos Toolkit probes: did the doctor name the fault, and is the cluster back to its steady state?

Every probe polls until its condition holds or ``timeout`` passes, and returns a bool, so one
probe serves both ends of an experiment: before the method it answers at once on a healthy
cluster; after the fix it waits for recovery, and the moment it returns is the recovery time the
journal records. Probes that need a client inside the pod network (DNS, Services) use an agnhost
prober pod in the run's chaos namespace, asked through the API server's pod proxy exactly as the
conformance suites do (:mod:`suites.probe`).

:func:`doctor_finds` also keeps the finding it matched (:func:`last_match`), so the pytest runner
can report the evidence without diagnosing twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clusters.handle import Cluster
from faults import context, workspace
from faults.findings import Finding, FindingId
from suites.probe import PodRef, ProbeJob, Prober
from suites.verdict import Verdict

__all__ = [
    "all_nodes_ready",
    "dns_resolves",
    "doctor_clears",
    "doctor_finds",
    "kube_system_available",
    "service_answers",
]

log = logging.getLogger(__name__)

PROBER = "prober"
DIAGNOSE_TIMEOUT = 30.0
"""Bound on one diagnosis (its probe pods' wait); the probe's own ``timeout`` bounds the polling."""
API_TIMEOUT = 30.0
_lock = threading.Lock()
_matches: dict[str, Finding] = {}


def last_match(finding_id: str) -> Finding | None:
    """The finding :func:`doctor_finds` last matched for ``finding_id`` in this process."""
    with _lock:
        return _matches.get(finding_id)


def clear_matches() -> None:
    with _lock:
        _matches.clear()


def _poll(what: str, check: Callable[[], bool], timeout: float, interval: float) -> bool:
    """``check()`` until True or ``timeout``; an exception counts as "not yet" (logged)."""
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        try:
            if check():
                return True
        except Exception as exc:  # the API may be restarting pods under us: keep asking
            log.info("%s: not yet (%s)", what, exc)
        if time.monotonic() >= deadline:
            log.info("%s: still false after %.0fs", what, timeout)
            return False
        time.sleep(interval)


@dataclass(frozen=True)
class _Want:
    finding: FindingId
    subject: str | None
    subject_contains: str | None

    def matches(self, found: Finding) -> bool:
        return (found.id is self.finding and (self.subject is None or found.subject == self.subject)
                and (self.subject_contains is None or self.subject_contains in found.subject))

    def first(self, findings: list[Finding]) -> Finding | None:
        return next((f for f in findings if self.matches(f)), None)


def _want(cluster: Cluster, finding_id: str, subject: str | None, subject_contains: str | None) -> _Want:
    """What to look for; ``@workerN`` in ``subject`` becomes that node's name (as the actions do)."""
    wanted = FindingId(finding_id)  # an unknown id is a mistake in the experiment, not "not found"
    if subject and "@" in subject:
        from faults.actions._support import resolve_node

        kind, _, node = subject.partition("/")
        subject = f"{kind}/{resolve_node(cluster, node)}" if node.startswith("@") else subject
    return _Want(wanted, subject, subject_contains)


def _diagnose(cluster: Cluster, probes: bool, timeout: float) -> list[Finding]:
    from faults import doctor

    return doctor.diagnose(cluster, probes=probes, timeout=timeout)


def doctor_finds(
    finding_id: str,
    subject: str | None = None,
    subject_contains: str | None = None,
    timeout: float = 120.0,
    interval: float = 2.0,
    probes: bool = False,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> bool:
    """True once ``knetcheck doctor`` reports ``finding_id`` (e.g. ``coredns-forward-loop``), about
    ``subject`` (exactly; ``node/@worker1`` allowed) and with a subject containing
    ``subject_contains`` if given; False if it has not within ``timeout``.
    ``probes`` lets the doctor run its probe-pattern rules too (slower; needed for data-plane
    faults it can only see by probing)."""
    cluster = context.cluster_for(configuration)
    want = _want(cluster, finding_id, subject, subject_contains)

    def check() -> bool:
        found = want.first(_diagnose(cluster, probes, DIAGNOSE_TIMEOUT))
        if found is None:
            return False
        with _lock:
            _matches[finding_id] = found
        log.info("doctor found %s on %s: %s | evidence: %s", found.id, found.subject, found.summary,
                 " | ".join(found.evidence))
        return True

    return _poll(f"doctor finds {finding_id}", check, timeout, interval)


def doctor_clears(
    finding_id: str,
    subject: str | None = None,
    subject_contains: str | None = None,
    timeout: float = 120.0,
    interval: float = 2.0,
    probes: bool = False,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> bool:
    """True once the doctor no longer reports ``finding_id`` (the fault is gone, as it sees it)."""
    cluster = context.cluster_for(configuration)
    want = _want(cluster, finding_id, subject, subject_contains)
    return _poll(f"doctor clears {finding_id}",
                 lambda: want.first(_diagnose(cluster, probes, DIAGNOSE_TIMEOUT)) is None, timeout, interval)


def _node_ready(node: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


def all_nodes_ready(
    timeout: float = 60.0,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> bool:
    """True once every node reports Ready=True."""
    from kubernetes import client

    cluster = context.cluster_for(configuration)
    core: Any = client.CoreV1Api(cluster.api_client)

    def check() -> bool:
        nodes = core.list_node(_request_timeout=API_TIMEOUT).items
        return bool(nodes) and all(_node_ready(n) for n in nodes)

    return _poll("all nodes Ready", check, timeout, 1.0)


def _deployment_done(d: Any) -> bool:
    want = d.spec.replicas if d.spec.replicas is not None else 1
    st = d.status
    return bool((st.observed_generation or 0) >= (d.metadata.generation or 0)
                and (st.updated_replicas or 0) >= want and (st.available_replicas or 0) >= want
                and (st.replicas or 0) == want)


def _daemonset_done(ds: Any) -> bool:
    st = ds.status
    want = st.desired_number_scheduled or 0
    return bool((st.observed_generation or 0) >= (ds.metadata.generation or 0)
                and (st.updated_number_scheduled or 0) >= want and (st.number_available or 0) >= want)


def kube_system_available(
    namespace: str = "kube-system",
    timeout: float = 90.0,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> bool:
    """True once every Deployment and DaemonSet in ``namespace`` is fully rolled out and available
    (observed generation current, every replica updated and available)."""
    from kubernetes import client

    cluster = context.cluster_for(configuration)
    apps: Any = client.AppsV1Api(cluster.api_client)

    def check() -> bool:
        deployments = apps.list_namespaced_deployment(namespace, _request_timeout=API_TIMEOUT).items
        daemonsets = apps.list_namespaced_daemon_set(namespace, _request_timeout=API_TIMEOUT).items
        late = [f"deploy/{d.metadata.name}" for d in deployments if not _deployment_done(d)]
        late += [f"ds/{d.metadata.name}" for d in daemonsets if not _daemonset_done(d)]
        if late:
            log.debug("%s not available yet: %s", namespace, ", ".join(late))
        return not late

    return _poll(f"{namespace} workloads available", check, timeout, 1.0)


def _prober(cluster: Cluster, timeout: float) -> PodRef | None:
    """The run's prober pod, created on first use; None if it is not Ready within ``timeout``."""
    run = context.run_id()
    namespace = workspace.ensure_namespace(cluster, run)
    workspace.ensure_pod(cluster, namespace, workspace.agnhost_pod(PROBER, run, "prober"))
    if workspace.wait_pod_ready(cluster, namespace, PROBER, timeout) is None:
        return None
    return PodRef(namespace, PROBER, "agnhost")


def _connect(cluster: Cluster, host: str, port: int, timeout: float) -> Verdict:
    source = _prober(cluster, max(timeout, 60.0))
    if source is None:
        return Verdict.PROBE_ERROR
    with Prober.through_proxy(cluster, max_workers=1) as prober:
        result = prober.probe(ProbeJob(source, host, port, timeout=2.0))
    log.info("probe %s:%s from %s: %s %s", host, port, source, result.verdict, result.detail)
    return result.verdict


def dns_resolves(
    name: str = "kubernetes.default.svc.cluster.local",
    port: int = 443,
    timeout: float = 90.0,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> bool:
    """True once a pod resolves ``name`` through cluster DNS (``agnhost connect name:port`` from
    the prober pod gives anything but a DNS error: the name resolved, whatever the port said)."""
    cluster = context.cluster_for(configuration)

    def check() -> bool:
        verdict = _connect(cluster, name, port, timeout)
        return verdict not in (Verdict.DNS_ERROR, Verdict.PROBE_ERROR)

    return _poll(f"DNS resolves {name}", check, timeout, 1.0)


def service_answers(
    host: str = "kubernetes.default.svc.cluster.local",
    port: int = 443,
    timeout: float = 90.0,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> bool:
    """True once the prober pod connects to ``host:port`` (a Service name or ClusterIP)."""
    cluster = context.cluster_for(configuration)
    return _poll(f"{host}:{port} answers",
                 lambda: _connect(cluster, host, port, timeout) is Verdict.CONNECTED, timeout, 1.0)
