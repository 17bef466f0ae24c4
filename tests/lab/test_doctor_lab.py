"""The doctor against a real (embedded lab) cluster: healthy → nothing; each injected fault → its
finding on the right subject; reverted → nothing again. One lab for the module, its own root and
name prefix; every fault is reverted in ``finally``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clusters.capabilities import Capability
from clusters.handle import Cluster
from clusters.labels import new_run_id
from clusters.recipes import load_recipe
from faults.doctor import diagnose
from faults.doctor.render import text
from faults.findings import Finding, FindingId

from .labkit import Lab, started_lab, wait_for

pytestmark = pytest.mark.lab

log = logging.getLogger(__name__)
DETECT_TIMEOUT = 180.0
"""Generous: a diagnosis is a few seconds on an idle machine, much more on a loaded CI runner."""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with started_lab("doctor") as running:
        yield running


@pytest.fixture(scope="module")
def cluster(lab: Lab) -> Cluster:
    from clusters.lab.provider import LabNodeChannel

    recipe = load_recipe("lab")
    return Cluster(
        name="knetcheck-lab", provider="lab", kubeconfig=lab.status.kubeconfig, context=None, cni=recipe,
        capabilities=frozenset(recipe.capabilities | {Capability.NODE_ACCESS}),
        node_channel=LabNodeChannel(lab.root, lab.prefix), run_id=new_run_id(),
    )


Check = Callable[[list[Finding]], bool]


def until(cluster: Cluster, what: str, done: Check, *, probes: bool = False) -> tuple[list[Finding], float]:
    """Diagnose until ``done(findings)`` or the deadline; returns the findings and the seconds taken."""
    started = time.monotonic()
    found: list[Finding] = []
    while time.monotonic() - started < DETECT_TIMEOUT:
        found = diagnose(cluster, probes=probes, timeout=60)
        if done(found):
            elapsed = time.monotonic() - started
            log.warning("doctor: %s after %.1fs", what, elapsed)
            return found, elapsed
        time.sleep(0.5)
    raise AssertionError(
        f"timed out after {DETECT_TIMEOUT:.0f}s waiting for {what}; last findings:\n{text(found)}"
    )


def has(fid: FindingId, subject: str | None = None) -> Check:
    def check(found: list[Finding]) -> bool:
        return any(f.id is fid and (subject is None or f.subject == subject) for f in found)

    return check


def healthy(found: list[Finding]) -> bool:
    return not found


def test_healthy_lab_has_no_findings_with_probes(cluster: Cluster) -> None:
    found, _ = until(cluster, "no findings (probes)", healthy, probes=True)
    assert found == []
    leftover = [n for n in _namespaces(cluster) if n.endswith("-doctor")]
    assert not leftover, "the probe namespace must be deleted"


def _namespaces(cluster: Cluster) -> list[str]:
    from kubernetes import client

    items = client.CoreV1Api(cluster.api_client).list_namespace().items
    return [str(ns.metadata.name) for ns in items
            if ns.metadata is not None and (ns.status is None or ns.status.phase != "Terminating")]


def test_malformed_conflist_is_cni_config_invalid(lab: Lab, cluster: Cluster) -> None:
    worker = lab.workers[0]
    bad = "/etc/cni/net.d/00-bad.conflist"
    try:
        lab.channel.exec(worker, ["tee", bad], '{"cniVersion": "1.0.0", "name": "bad", ', 30)
        found, _ = until(cluster, "cni-config-invalid", has(FindingId.CNI_CONFIG_INVALID, f"node/{worker}"))
        f = next(f for f in found if f.id is FindingId.CNI_CONFIG_INVALID)
        assert any("00-bad.conflist" in e for e in f.evidence)
        assert any("NetworkPluginNotReady" in e for e in f.evidence)
        assert FindingId.CNI_CONFIG_MISSING not in {x.id for x in found}
    finally:
        lab.channel.exec(worker, ["rm", "-f", bad], None, 30)
    until(cluster, "no findings after removing the bad conflist", healthy)


def test_coredns_scaled_to_zero_and_the_cli(lab: Lab, cluster: Cluster) -> None:
    env = {**os.environ, "KNETCHECK_LAB_DIR": str(lab.root), "KUBECONFIG": str(lab.status.kubeconfig)}
    argv = [str(Path(sys.executable).parent / "knetcheck"), "doctor", "--json", "--no-probes"]
    ok = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["findings"] == []
    try:
        lab.kubectl("-n", "kube-system", "scale", "deploy/coredns", "--replicas=0")
        found, _ = until(cluster, "coredns-unavailable", has(FindingId.COREDNS_UNAVAILABLE))
        assert {f.id for f in found} == {FindingId.COREDNS_UNAVAILABLE}, text(found)
        bad = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert bad.returncode == 1, bad.stderr
        assert [f["id"] for f in json.loads(bad.stdout)["findings"]] == ["coredns-unavailable"]
    finally:
        # Deleted pods terminate gracefully (CoreDNS's lameduck): scaling back while they are
        # still Terminating would let the scheduler's anti-affinity place the new replicas
        # away from them, and later tests assume the lab's usual CoreDNS placement.
        wait_for(
            "the scaled-down CoreDNS pods gone",
            lambda: not lab.core.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns").items,
            timeout=60,
        )
        lab.kubectl("-n", "kube-system", "scale", "deploy/coredns", "--replicas=2")
    until(cluster, "no findings after scaling coredns back", healthy)


def test_kube_dns_selector_is_dns_service_no_endpoints(lab: Lab, cluster: Cluster) -> None:
    try:
        patch = '{"spec":{"selector":{"k8s-app":"nope"}}}'
        lab.kubectl("-n", "kube-system", "patch", "svc", "kube-dns", "-p", patch)
        found, _ = until(cluster, "dns-service-no-endpoints", has(FindingId.DNS_SERVICE_NO_ENDPOINTS))
        assert {f.id for f in found} == {FindingId.DNS_SERVICE_NO_ENDPOINTS}, text(found)
    finally:
        lab.kubectl("-n", "kube-system", "patch", "svc", "kube-dns", "--type=json", "-p",
                    '[{"op":"replace","path":"/spec/selector","value":{"k8s-app":"kube-dns"}}]')
    until(cluster, "no findings after restoring the selector", healthy)


def _node_cidr(lab: Lab, node: str) -> str:
    spec = lab.core.read_node(node).spec
    assert spec is not None and spec.pod_cidr, f"node {node} has no podCIDR"
    return str(spec.pod_cidr)


def test_deleted_host_gw_route_is_node_route_missing(lab: Lab, cluster: Cluster) -> None:
    worker, peer = lab.workers[0], lab.workers[1]
    cidr, via = _node_cidr(lab, peer), lab.node_ip(peer)
    routes = lab.channel.exec(worker, ["ip", "-4", "route", "show", cidr], None, 30).stdout
    assert f"via {via}" in routes, f"the lab should route {cidr} via {via} on {worker}: {routes!r}"
    try:
        lab.channel.exec(worker, ["ip", "route", "del", cidr], None, 30)
        want = has(FindingId.NODE_ROUTE_MISSING, f"node/{worker}")
        found, _ = until(cluster, "node-route-missing (probes)", want, probes=True)
        f = next(f for f in found if f.id is FindingId.NODE_ROUTE_MISSING)
        assert f"ip route add {cidr} via {via}" in f.fix
        assert {x.id for x in found} == {FindingId.NODE_ROUTE_MISSING}, text(found)
    finally:
        lab.channel.exec(worker, ["ip", "route", "replace", cidr, "via", via, "dev", "eth0"], None, 30)
    until(cluster, "no findings (probes) after restoring the route", healthy, probes=True)


def test_root_namespace_untouched(lab: Lab) -> None:
    """The doctor reads; the lab's addresses never appear in the root namespace's routes."""
    argv = ["ip", "-4", "route", "show"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True)
    assert "10.244." not in out.stdout
    assert Path(lab.root).is_dir()
