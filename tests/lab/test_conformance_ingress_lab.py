"""The ingress conformance module end to end on the embedded lab, as a user runs it: ``pytest
suites/conformance/test_ingress.py --cluster=lab`` in a subprocess. The lab runs ingress-nginx
(class ``nginx``, default; a LoadBalancer address from 172.18.255.0/24), so every check passes,
the TLS redirect included, and the report carries one matrix per check. With the controller
scaled to zero, an Ingress never gets an address: the check FAILS with the evidence.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k

from clusters.kubeclient import api_client
from clusters.lab import control
from clusters.lab.netns import list_netns
from clusters.lab.node.underlay import owned_by
from clusters.proc import CommandResult, run

pytestmark = pytest.mark.lab
SUITE_TIMEOUT = 600.0
INGRESS = "suites/conformance/test_ingress.py"
CHECKS = (
    "test_host_routing",
    "test_path_routing",
    "test_default_backend_for_unmatched_host",
    "test_missing_backend_service",
    "test_tls_from_secret",
    "test_tls_redirects_plain_http",
)


def run_suite(root: Path, tmp: Path, *targets: str, extra_env: dict[str, str] | None = None) -> CommandResult:
    env = {key: v for key, v in os.environ.items() if not key.startswith(("PYTEST_", "KNETCHECK_"))}
    env.update({"KNETCHECK_LAB_DIR": str(root), "KNETCHECK_STATE_DIR": str(tmp / "state")})
    env.update(extra_env or {})
    argv = [sys.executable, "-m", "pytest", *targets, "--cluster=lab", f"--reports-dir={tmp / 'reports'}",
            "-p", "no:cacheprovider", "--durations=0", "-rA"]
    result = run(argv, timeout=SUITE_TIMEOUT, env=env, check=False)
    (tmp / "pytest.out").write_text(result.stdout + result.stderr)
    return result


@dataclass(frozen=True)
class Lab:
    root: Path
    prefix: str
    kubeconfig: Path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab for the module, of its own (``kncl-t-`` prefix, root under /run): the suite attaches
    to it, so it runs beside a developer's default-prefix lab instead of skipping. Its logs are
    kept for a post-mortem; everything it made must be gone after ``down``."""
    root = Path(tempfile.mkdtemp(prefix="knetcheck-ingress-", dir="/run"))
    prefix = f"kncl-t-{secrets.token_hex(3)}-"
    try:
        status = control.up(control.LabConfig(root=root, nodes=3, prefix=prefix))
        yield Lab(root, prefix, status.kubeconfig)
    finally:
        try:
            control.down(root, prefix=prefix)
        finally:
            if (root / "logs").is_dir():
                shutil.copytree(root / "logs", tmp_path_factory.mktemp("lab-logs"), dirs_exist_ok=True)
            shutil.rmtree(root, ignore_errors=True)
    assert [n for n in list_netns() if owned_by(prefix, n)] == []


def answers(check: dict[str, Any]) -> list[dict[str, Any]]:
    """The curl replies (suites.curlprobe.Reply as JSON) behind a check's only matrix."""
    (matrix,) = check["matrices"]
    return [json.loads(cell["output"]) for row in matrix["probes"].values() for cell in row.values()]


def test_ingress_module_passes_on_a_healthy_lab(lab: Lab, tmp_path: Path) -> None:
    result = run_suite(lab.root, tmp_path, INGRESS)
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"module failed (exit {result.returncode}):\n{out[-8000:]}"
    doc = json.loads((tmp_path / "reports" / "results.json").read_text())
    checks = {c["nodeid"].split("::", 1)[1]: c for c in doc["checks"] if "::" in c["nodeid"]}
    assert {name: c["outcome"] for name, c in checks.items()} == dict.fromkeys(CHECKS, "passed")
    for name in CHECKS:
        (matrix,) = checks[name]["matrices"]
        assert matrix["ok"], (name, matrix["summary"])
        cells = [cell for row in matrix["probes"].values() for cell in row.values()]
        assert cells and all("kubectl" in c["command"] and "/proxy/shell?cmd=curl" in c["command"]
                             for c in cells), cells[:2]
    tls = answers(checks["test_tls_from_secret"])
    assert all(a["status"] == 200 and a["subject"].replace(" ", "").startswith("CN=tls.") for a in tls), tls
    redirect = answers(checks["test_tls_redirects_plain_http"])
    assert all(a["status"] == 308 and a["location"].startswith("https://tls.") for a in redirect), redirect
    assert control.status(lab.root).running, "a lab the suite attached to must be left running"


def stop_ingress_controller(kubeconfig: Path, timeout: float = 60.0) -> None:
    """Scale ingress-nginx to 0 and wait until its pod is gone: nothing publishes addresses."""
    api: Any = api_client(kubeconfig)
    try:
        apps, core = k.AppsV1Api(api), k.CoreV1Api(api)
        scale = {"spec": {"replicas": 0}}
        apps.patch_namespaced_deployment("ingress-nginx-controller", "ingress-nginx", scale)
        deadline = time.monotonic() + timeout
        while core.list_namespaced_pod("ingress-nginx").items:
            assert time.monotonic() < deadline, f"ingress-nginx pods still there after {timeout:.0f}s"
            time.sleep(0.5)
    finally:
        api.close()


def test_an_ingress_without_address_fails_with_the_evidence(lab: Lab, tmp_path: Path) -> None:
    """Runs after the healthy module (it stops the lab's controller): not a skip, a finding."""
    stop_ingress_controller(lab.kubeconfig)
    result = run_suite(lab.root, tmp_path, f"{INGRESS}::test_host_routing",
                       extra_env={"KNETCHECK_INGRESS_TIMEOUT": "5"})
    out = result.stdout + result.stderr
    assert result.returncode == 1, f"the check should fail (exit {result.returncode}):\n{out[-6000:]}"
    assert f"FAILED {INGRESS}::test_host_routing" in out, out[-6000:]
    assert re.search(r"Ingress kc-\S+/hosts \(class nginx, controller k8s\.io/ingress-nginx\) has no "
                     r"status\.loadBalancer\.ingress after 5s", out), out[-6000:]
    assert re.search(r"look: kubectl --kubeconfig=\S+ -n kc-\S+ describe ingress hosts", out), out[-6000:]
