"""The conformance suite end to end on the embedded lab, as a user runs it: ``pytest suites/conformance
--cluster=lab`` in a subprocess. A healthy lab passes the whole suite once (pod network, Services,
DNS, NetworkPolicy, ingress, each module's evidence checked here), leaves reports and no lab
behind; a lab with one cross-node route deleted fails the pod-network module with the broken cells
marked. The other ``test_conformance_*_lab`` modules break one thing each on a lab of their own.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k

from clusters.kubeclient import api_client
from clusters.lab import claims, control
from clusters.lab.node.shell import shell_argv
from clusters.lab.node.underlay import root_links
from clusters.proc import run

from .conformance_harness import (
    BREAK_CONVERGE,
    CONFORMANCE,
    DNS,
    INGRESS,
    NETPOL,
    POD_NETWORK,
    SERVICES,
    assert_attached_lab_left_running,
    checks,
    checks_by_name,
    lab_root_fixture,
    outcomes,
    output,
    own_lab,
    prefix_leftovers,
    results,
    run_suite,
)

pytestmark = pytest.mark.lab
WHOLE_SUITE_TIMEOUT = 900.0
HEALTHY_ENV = {"KNETCHECK_NETPOL_EXAMPLES": "3"}
"""Fewer generated policies than a real run's 8: the generator is exercised, the run stays short.
No ``KNETCHECK_UPSTREAM_NAME``: the lab's upstream resolver answers the default, kubernetes.io."""
INGRESS_CHECKS = (
    "test_host_routing",
    "test_path_routing",
    "test_default_backend_for_unmatched_host",
    "test_missing_backend_service",
    "test_tls_from_secret",
    "test_tls_redirects_plain_http",
)

lab_root = lab_root_fixture("conf")


def test_suite_passes_on_a_healthy_lab_writes_reports_and_stops_the_lab(
    lab_root: Path, tmp_path: Path
) -> None:
    # The suite starts this lab itself, under its own prefix, so it runs beside any other lab.
    prefix = f"kncl-t-{secrets.token_hex(3)}-"
    try:
        result = run_suite(
            lab_root,
            tmp_path,
            CONFORMANCE,
            extra_env={**HEALTHY_ENV, claims.PREFIX_ENV: prefix},
            timeout=WHOLE_SUITE_TIMEOUT,
        )
        out = output(result)
        assert result.returncode == 0, f"suite failed (exit {result.returncode}):\n{out[-8000:]}"
        reports = tmp_path / "reports"
        for name in ("junit.xml", "results.json", "report.html"):
            assert (reports / name).is_file(), f"missing report {name}: {sorted(os.listdir(reports))}"
        doc = results(tmp_path)
        passed = [c["nodeid"] for c in doc["checks"] if c["outcome"] == "passed"]
        assert any(n.endswith("test_pod_to_pod_across_nodes") for n in passed), doc["counts"]
        assert all(c["outcome"] in ("passed", "skipped") for c in doc["checks"]), doc["counts"]
        assert re.search(r"\b\d+ passed\b", out) and " failed" not in out.splitlines()[-1]

        assert_services_and_dns_pass(tmp_path, out)
        assert_every_netpol_case_passes(tmp_path)
        assert_every_ingress_check_passes_with_evidence(tmp_path)

        assert not control.status(lab_root).running, "the lab the suite started must be down after it"
        assert prefix_leftovers(prefix) == [] and root_links(prefix) == []
        assert claims.owner(prefix) is None, "the suite's lab left its prefix claim"
    finally:
        control.down(lab_root, prefix=prefix)


def assert_services_and_dns_pass(tmp: Path, out: str) -> None:
    """Every Service and DNS check passes but SRV/PTR (skipped: not covered) and LoadBalancer,
    which runs where the provider declares ``load-balancer`` and else skips saying so."""
    services, dns = outcomes(tmp, SERVICES), outcomes(tmp, DNS)
    assert services and dns, (services, dns)
    skipped_services = {name for name, o in services.items() if o == "skipped"}
    skipped_dns = {name for name, o in dns.items() if o == "skipped"}
    assert {"test_srv_records", "test_ptr_records"} <= skipped_dns, dns
    assert skipped_dns <= {"test_srv_records", "test_ptr_records"}, dns
    assert skipped_services <= {"test_load_balancer"}, services
    if "test_load_balancer" in skipped_services:
        assert "lacks load-balancer" in out
    found = checks_by_name(tmp, DNS)
    for name in ("test_srv_records", "test_ptr_records"):
        assert "Skipped: not covered: " in found[name]["message"], (name, found[name]["message"])
    assert all(o in ("passed", "skipped") for o in (services | dns).values()), (services, dns)
    for name in (
        "test_cluster_ip",
        "test_node_port",
        "test_external_name",
        "test_headless",
        "test_session_affinity_client_ip",
        "test_endpoints_follow_readiness",
    ):
        assert services.get(name) == "passed", (name, services)
    for name in ("test_search_path_short_names", "test_upstream_forwarding", "test_nxdomain"):
        assert dns.get(name) == "passed", (name, dns)


def assert_every_netpol_case_passes(tmp: Path) -> None:
    """Every upstream case and the generated policies pass on the policy-enforcing lab CNI."""
    found = checks_by_name(tmp, NETPOL)
    got = {name: c["outcome"] for name, c in found.items()}
    assert got["test_case[deny-all-then-allow-one-pair]"] == "passed"
    assert got["test_generated_policies"] == "passed"
    assert len(got) >= 21 and set(got.values()) == {"passed"}, got
    deny = found["test_case[deny-all-ingress]"]
    assert {m["name"] for m in deny["matrices"]} >= {"deny-all-ingress: 80/TCP", "deny-all-ingress: 81/UDP"}


def answers(check: dict[str, Any]) -> list[dict[str, Any]]:
    """The curl replies (suites.curlprobe.Reply as JSON) behind a check's only matrix."""
    (matrix,) = check["matrices"]
    return [json.loads(cell["output"]) for row in matrix["probes"].values() for cell in row.values()]


def assert_every_ingress_check_passes_with_evidence(tmp: Path) -> None:
    """The lab's ingress-nginx passes every ingress check, the TLS redirect included, and the report
    carries one matrix per check whose cells are curl through the pod proxy."""
    found = checks_by_name(tmp, INGRESS)
    assert {name: c["outcome"] for name, c in found.items()} == dict.fromkeys(INGRESS_CHECKS, "passed")
    for name in INGRESS_CHECKS:
        (matrix,) = found[name]["matrices"]
        assert matrix["ok"], (name, matrix["summary"])
        cells = [cell for row in matrix["probes"].values() for cell in row.values()]
        assert cells and all(
            "kubectl" in c["command"] and "/proxy/shell?cmd=curl" in c["command"] for c in cells
        ), cells[:2]
    tls = answers(found["test_tls_from_secret"])
    assert all(a["status"] == 200 and a["subject"].replace(" ", "").startswith("CN=tls.") for a in tls), tls
    redirect = answers(found["test_tls_redirects_plain_http"])
    assert all(a["status"] == 308 and a["location"].startswith("https://tls.") for a in redirect), redirect


def pod_cidr(kubeconfig: Path, node: str) -> str:
    api: Any = api_client(kubeconfig)
    try:
        spec = k.CoreV1Api(api).read_node(node).spec
        assert spec is not None and spec.pod_cidr, f"node {node} has no podCIDR"
        return str(spec.pod_cidr)
    finally:
        api.close()


def test_a_deleted_cross_node_route_fails_the_pod_network_module_with_the_cells_marked(
    tmp_path: Path,
) -> None:
    with own_lab("conf", tmp_path) as lab:
        worker, worker2 = (n for n in lab.nodes if "control-plane" not in n)
        cidr = pod_cidr(lab.kubeconfig, worker2)
        run(shell_argv(lab.root, worker, ["ip", "route", "del", cidr], lab.prefix), timeout=20)

        result = run_suite(lab.root, tmp_path, POD_NETWORK, extra_env=BREAK_CONVERGE)
        out = output(result)
        assert result.returncode == 1, f"the module should fail (exit {result.returncode}):\n{out[-4000:]}"
        assert f"FAILED {POD_NETWORK}::test_pod_to_pod_across_nodes" in out
        assert f"PASSED {POD_NETWORK}::test_pod_to_pod_same_node" in out

        block = out.split("pod->pod all pairs, TCP/8080: 8/16 right, 8 wrong, 0 unknown\n", 1)
        assert len(block) == 2, f"no all-pairs matrix with 8 wrong cells in:\n{out[-4000:]}"
        lines = block[1].splitlines()
        observed = lines[lines.index("observed:") + 1 : lines.index("observed:") + 6]
        assert [row.split() for row in observed] == [
            ["-", "worker/a", "worker/b", "worker2/a", "worker2/b"],
            ["worker/a", ".", ".", "X", "X"],
            ["worker/b", ".", ".", "X", "X"],
            ["worker2/a", "X", "X", ".", "."],
            ["worker2/b", "X", "X", ".", "."],
        ]
        assert "worker/a -> worker2/a: expected allowed, observed BLOCKED" in out
        assert re.search(
            r"reproduce: kubectl --kubeconfig=\S+ get --raw "
            r"'/api/v1/namespaces/kc-\S+/pods/pod-worker-a:8080/proxy/",
            out,
        )

        check = next(c for c in checks(tmp_path) if c["nodeid"].endswith("::test_pod_to_pod_across_nodes"))
        wrong = {(m["src"], m["dst"]) for m in check["matrices"][0]["wrong"]}
        assert wrong == {(s, d) for s in ("worker/a", "worker/b") for d in ("worker2/a", "worker2/b")} | {
            (s, d) for s in ("worker2/a", "worker2/b") for d in ("worker/a", "worker/b")
        }
        html = (tmp_path / "reports" / "report.html").read_text()
        assert html.count('class="cell wrong"') >= 8
        assert_attached_lab_left_running(lab.root)
