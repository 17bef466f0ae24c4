"""The conformance suite end to end on the embedded lab, as a user runs it: ``pytest suites/conformance
--cluster=lab`` in a subprocess. A healthy lab passes and leaves reports and no lab behind; a lab
with one cross-node route deleted fails the pod-network module with the broken cells marked.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k

from clusters.kubeclient import api_client
from clusters.lab import control, layout
from clusters.lab.netns import list_netns
from clusters.lab.node.shell import shell_argv
from clusters.lab.node.underlay import owned_by, root_links
from clusters.proc import CommandResult, run

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
SUITE_TIMEOUT = 300.0
POD_NETWORK = "suites/conformance/test_pod_network.py"


def default_lab_leftovers() -> list[str]:
    """Netns and links of a lab with the default prefix (other tests' ``kncl-t-…`` labs excluded)."""
    return [n for n in list_netns() if owned_by(layout.PREFIX, n)] + root_links(layout.PREFIX)


def run_suite(
    root: Path, tmp: Path, *targets: str, extra_env: dict[str, str] | None = None
) -> CommandResult:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KNETCHECK_"))}
    env.update({"KNETCHECK_LAB_DIR": str(root), "KNETCHECK_STATE_DIR": str(tmp / "state")})
    env.update(extra_env or {})
    argv = [sys.executable, "-m", "pytest", *targets, "--cluster=lab", f"--reports-dir={tmp / 'reports'}",
            "-p", "no:cacheprovider", "--durations=0", "-rA"]
    result = run(argv, timeout=SUITE_TIMEOUT, env=env, check=False)
    (tmp / "pytest.out").write_text(result.stdout + result.stderr)
    return result


@pytest.fixture
def lab_root(tmp_path: Path) -> Iterator[Path]:
    """A fresh lab root under /run (never /etc, /opt or /var/lib: the node view overlays those);
    its logs are kept in ``tmp_path/lab-logs`` for a post-mortem."""
    root = Path(tempfile.mkdtemp(prefix="knetcheck-conf-", dir="/run"))
    try:
        yield root
    finally:
        if (root / "logs").is_dir():
            shutil.copytree(root / "logs", tmp_path / "lab-logs", dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)


def test_suite_passes_on_a_healthy_lab_writes_reports_and_stops_the_lab(
    lab_root: Path, tmp_path: Path
) -> None:
    if default_lab_leftovers():
        pytest.skip("a lab with the default prefix is running on this machine; this test starts its own")
    try:
        result = run_suite(lab_root, tmp_path, "suites/conformance")
        out = result.stdout + result.stderr
        assert result.returncode == 0, f"suite failed (exit {result.returncode}):\n{out[-6000:]}"
        reports = tmp_path / "reports"
        for name in ("junit.xml", "results.json", "report.html"):
            assert (reports / name).is_file(), f"missing report {name}: {sorted(os.listdir(reports))}"
        doc = json.loads((reports / "results.json").read_text())
        passed = [c["nodeid"] for c in doc["checks"] if c["outcome"] == "passed"]
        assert any(n.endswith("test_pod_to_pod_across_nodes") for n in passed), doc["counts"]
        assert all(c["outcome"] in ("passed", "skipped") for c in doc["checks"]), doc["counts"]
        assert re.search(r"\b\d+ passed\b", out) and " failed" not in out.splitlines()[-1]
        assert not control.status(lab_root).running, "the lab the suite started must be down after it"
        assert default_lab_leftovers() == []
    finally:
        control.down(lab_root)


def pod_cidr(kubeconfig: Path, node: str) -> str:
    api: Any = api_client(kubeconfig)
    try:
        spec = k.CoreV1Api(api).read_node(node).spec
        assert spec is not None and spec.pod_cidr, f"node {node} has no podCIDR"
        return str(spec.pod_cidr)
    finally:
        api.close()


def test_a_deleted_cross_node_route_fails_the_pod_network_module_with_the_cells_marked(
    lab_root: Path, tmp_path: Path
) -> None:
    prefix = f"kncl-t-{secrets.token_hex(3)}-"
    try:
        lab = control.up(control.LabConfig(root=lab_root, nodes=3, prefix=prefix))
        worker, worker2 = (n for n in lab.nodes if "control-plane" not in n)
        cidr = pod_cidr(lab.kubeconfig, worker2)
        run(shell_argv(lab_root, worker, ["ip", "route", "del", cidr], prefix), timeout=20)

        result = run_suite(lab_root, tmp_path, POD_NETWORK, extra_env={"KNETCHECK_CONVERGE_TIMEOUT": "5"})
        out = result.stdout + result.stderr
        assert result.returncode == 1, f"the module should fail (exit {result.returncode}):\n{out[-4000:]}"
        assert "FAILED suites/conformance/test_pod_network.py::test_pod_to_pod_across_nodes" in out
        assert "PASSED suites/conformance/test_pod_network.py::test_pod_to_pod_same_node" in out

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

        doc = json.loads((tmp_path / "reports" / "results.json").read_text())
        check = next(c for c in doc["checks"] if c["nodeid"].endswith("::test_pod_to_pod_across_nodes"))
        wrong = {(m["src"], m["dst"]) for m in check["matrices"][0]["wrong"]}
        assert wrong == {(s, d) for s in ("worker/a", "worker/b") for d in ("worker2/a", "worker2/b")} | {
            (s, d) for s in ("worker2/a", "worker2/b") for d in ("worker/a", "worker/b")
        }
        html = (tmp_path / "reports" / "report.html").read_text()
        assert html.count('class="cell wrong"') >= 8
        assert control.status(lab_root).running, "a lab the suite attached to must be left running"
    finally:
        control.down(lab_root, prefix=prefix)
    assert [n for n in list_netns() if owned_by(prefix, n)] == []
