"""The Services and DNS conformance modules end to end on the embedded lab, as a user runs them:
``pytest suites/conformance/test_services.py suites/conformance/test_dns.py --cluster=lab`` in a
subprocess. A healthy lab passes them (SRV/PTR skip as not covered; LoadBalancer runs where the
provider declares ``load-balancer``); a node whose kube-proxy is gone and whose
``KUBE-SERVICES`` chain was flushed fails the Services module with that node's rows marked.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k

from clusters.kubeclient import api_client
from clusters.lab import control
from clusters.lab.netns import list_netns
from clusters.lab.node.shell import shell_argv
from clusters.lab.node.underlay import owned_by
from clusters.proc import CommandResult, run
from tests.lab.test_conformance_lab import default_lab_leftovers

pytestmark = pytest.mark.lab
SUITE_TIMEOUT = 600.0
SERVICES = "suites/conformance/test_services.py"
DNS = "suites/conformance/test_dns.py"
UPSTREAM = {"KNETCHECK_UPSTREAM_NAME": "upstream.lab.test"}
"""The one name the lab's upstream resolver answers (the default, kubernetes.io, is NXDOMAIN there)."""


def run_suite(root: Path, tmp: Path, *targets: str, extra_env: dict[str, str] | None = None) -> CommandResult:
    env = {key: v for key, v in os.environ.items() if not key.startswith(("PYTEST_", "KNETCHECK_"))}
    env.update({"KNETCHECK_LAB_DIR": str(root), "KNETCHECK_STATE_DIR": str(tmp / "state")})
    env.update(extra_env or {})
    argv = [
        sys.executable,
        "-m",
        "pytest",
        *targets,
        "--cluster=lab",
        f"--reports-dir={tmp / 'reports'}",
        "-p",
        "no:cacheprovider",
        "--durations=0",
        "-rA",
    ]
    result = run(argv, timeout=SUITE_TIMEOUT, env=env, check=False)
    (tmp / "pytest.out").write_text(result.stdout + result.stderr)
    return result


@pytest.fixture
def lab_root(tmp_path: Path) -> Iterator[Path]:
    """A fresh lab root under /run; its logs are kept in ``tmp_path/lab-logs`` for a post-mortem."""
    root = Path(tempfile.mkdtemp(prefix="knetcheck-svcdns-", dir="/run"))
    try:
        yield root
    finally:
        if (root / "logs").is_dir():
            shutil.copytree(root / "logs", tmp_path / "lab-logs", dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)


def outcomes(tmp: Path) -> dict[str, str]:
    doc = json.loads((tmp / "reports" / "results.json").read_text())
    return {c["nodeid"].split("::", 1)[1]: c["outcome"] for c in doc["checks"] if "::" in c["nodeid"]}


def test_services_and_dns_pass_on_a_healthy_lab(lab_root: Path, tmp_path: Path) -> None:
    if default_lab_leftovers():
        pytest.skip("a lab with the default prefix is running on this machine; this test starts its own")
    try:
        result = run_suite(lab_root, tmp_path, SERVICES, DNS, extra_env=UPSTREAM)
        out = result.stdout + result.stderr
        assert result.returncode == 0, f"modules failed (exit {result.returncode}):\n{out[-8000:]}"
        got = outcomes(tmp_path)
        skipped = {name for name, o in got.items() if o == "skipped"}
        # LoadBalancer runs where the provider declares load-balancer, else skips saying so
        assert {"test_srv_records", "test_ptr_records"} <= skipped, got
        assert skipped <= {"test_load_balancer", "test_srv_records", "test_ptr_records"}, got
        if "test_load_balancer" in skipped:
            assert "lacks load-balancer" in out
        assert all(o in ("passed", "skipped") for o in got.values()), got
        for name in (
            "test_cluster_ip",
            "test_node_port",
            "test_external_name",
            "test_headless",
            "test_session_affinity_client_ip",
            "test_endpoints_follow_readiness",
            "test_search_path_short_names",
            "test_upstream_forwarding",
            "test_nxdomain",
        ):
            assert got.get(name) == "passed", (name, got)
        assert not control.status(lab_root).running, "the lab the suite started must be down after it"
        assert default_lab_leftovers() == []
    finally:
        control.down(lab_root)


def wait_until(what: str, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.5)


def stop_kube_proxy_on(kubeconfig: Path, node: str) -> None:
    """Keep the kube-proxy DaemonSet off ``node`` (its rules stay, as a dead kube-proxy's do), and wait
    for the rollout the template change starts on the other nodes to finish."""
    api: Any = api_client(kubeconfig)
    try:
        apps, core = k.AppsV1Api(api), k.CoreV1Api(api)
        away = {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": [node]}
        patch = {
            "spec": {
                "template": {
                    "spec": {
                        "affinity": {
                            "nodeAffinity": {
                                "requiredDuringSchedulingIgnoredDuringExecution": {
                                    "nodeSelectorTerms": [{"matchExpressions": [away]}]
                                }
                            }
                        }
                    }
                }
            }
        }
        apps.patch_namespaced_daemon_set("kube-proxy", "kube-system", patch)

        def gone() -> bool:
            pods = core.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-proxy").items
            return not any(p.spec is not None and p.spec.node_name == node for p in pods)

        wait_until(f"no kube-proxy pod on {node}", gone)

        def rolled_out() -> bool:
            # The template change rolls kube-proxy on every other node too; until the new pods are
            # Ready there, those nodes miss rules for Services created meanwhile (seen in CI).
            ds = apps.read_namespaced_daemon_set("kube-proxy", "kube-system")
            st = ds.status
            return bool(
                st is not None
                and (st.observed_generation or 0) >= (ds.metadata.generation or 0)
                and st.desired_number_scheduled > 0
                and st.updated_number_scheduled == st.desired_number_scheduled
                and st.number_ready == st.desired_number_scheduled
                and st.number_available == st.desired_number_scheduled
            )

        wait_until("the kube-proxy rollout on the other nodes", rolled_out, timeout=120)
    finally:
        api.close()


def test_a_node_without_service_rules_fails_the_services_module_with_its_rows_marked(
    lab_root: Path, tmp_path: Path
) -> None:
    prefix = f"kncl-t-{secrets.token_hex(3)}-"
    try:
        lab = control.up(control.LabConfig(root=lab_root, nodes=3, prefix=prefix))
        worker = next(n for n in lab.nodes if n.endswith("-worker"))
        stop_kube_proxy_on(lab.kubeconfig, worker)
        run(
            shell_argv(lab_root, worker, ["iptables", "-t", "nat", "-F", "KUBE-SERVICES"], prefix), timeout=20
        )

        result = run_suite(
            lab_root, tmp_path, SERVICES, extra_env={**UPSTREAM, "KNETCHECK_CONVERGE_TIMEOUT": "5"}
        )
        out = result.stdout + result.stderr
        assert result.returncode == 1, f"the module should fail (exit {result.returncode}):\n{out[-6000:]}"
        assert f"FAILED {SERVICES}::test_cluster_ip" in out, out[-6000:]
        assert f"FAILED {SERVICES}::test_node_port" in out, out[-6000:]

        block = out.split("ClusterIP web: answered by a ready backend", 1)
        assert len(block) == 2, f"no ClusterIP matrix in:\n{out[-6000:]}"
        lines = block[1].splitlines()
        start = lines.index("observed:") + 1
        observed = {row.split()[0]: row.split()[1] for row in lines[start + 1 : start + 6]}
        assert observed == {
            "worker/a": "X",
            "worker/node": "X",
            "worker2/a": ".",
            "worker2/node": ".",
            "control-plane/node": ".",
        }, "\n".join(lines[start - 1 : start + 6])
        assert "worker/a -> web 10.96." in out and "expected allowed, observed BLOCKED" in out

        got = outcomes(tmp_path)
        assert got["test_cluster_ip"] == "failed" and got["test_node_port"] == "failed", got
        doc = json.loads((tmp_path / "reports" / "results.json").read_text())
        check = next(c for c in doc["checks"] if c["nodeid"].endswith("::test_cluster_ip"))
        wrong = {m["src"] for m in check["matrices"][0]["wrong"]}
        assert wrong == {"worker/a", "worker/node"}, check["matrices"][0]["wrong"]
        assert control.status(lab_root).running, "a lab the suite attached to must be left running"
    finally:
        control.down(lab_root, prefix=prefix)
    assert [n for n in list_netns() if owned_by(prefix, n)] == []
