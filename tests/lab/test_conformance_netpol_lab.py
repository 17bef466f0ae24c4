"""The NetworkPolicy module end to end on the embedded lab, as a user runs it: ``pytest
suites/conformance/test_netpol.py --cluster=lab`` in a subprocess, attached to a lab this test starts
under its own root and ``kncl-t-…`` prefix (so a lab someone else runs, default or not, is never
touched). A policy-enforcing lab passes every case; ``lab-nopolicy`` skips the whole module with
the CNI and the missing capability named; and a deny-all policy nobody expects, slipped in through
the module's self-test hook, fails a case with exactly the cells it blocks marked wrong.
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

from clusters.lab import control
from clusters.lab.netns import list_netns
from clusters.lab.node.underlay import owned_by
from clusters.proc import CommandResult, run

pytestmark = pytest.mark.lab
MODULE = "suites/conformance/test_netpol.py"
SUITE_TIMEOUT = 900.0
PODS = [f"{ns}/{p}" for ns in "xyz" for p in "abc"]


def run_suite(root: Path, out: Path, *args: str, env_extra: dict[str, str] | None = None) -> CommandResult:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KNETCHECK_"))}
    env.update({"KNETCHECK_LAB_DIR": str(root), "KNETCHECK_STATE_DIR": str(out / "state")})
    env.update(env_extra or {})
    argv = [
        sys.executable,
        "-m",
        "pytest",
        MODULE,
        "--cluster=lab",
        f"--reports-dir={out / 'reports'}",
        "-p",
        "no:cacheprovider",
        "-rA",
        "--durations=5",
        *args,
    ]
    result = run(argv, timeout=SUITE_TIMEOUT, env=env, check=False)
    (out / "pytest.out").write_text(result.stdout + result.stderr)
    return result


def start_lab(cni: str) -> tuple[Path, str]:
    root = Path(tempfile.mkdtemp(prefix="knetcheck-np-", dir="/run"))
    prefix = f"kncl-t-{secrets.token_hex(3)}-"
    try:
        control.up(control.LabConfig(root=root, nodes=3, cni=cni, prefix=prefix))
    except BaseException:
        control.down(root, prefix=prefix)
        shutil.rmtree(root, ignore_errors=True)
        raise
    return root, prefix


def stop_lab(root: Path, prefix: str, keep_logs: Path) -> None:
    try:
        control.down(root, prefix=prefix)
    finally:
        if (root / "logs").is_dir():
            shutil.copytree(root / "logs", keep_logs / "lab-logs", dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
    assert [n for n in list_netns() if owned_by(prefix, n)] == [], "the lab left network namespaces"


@pytest.fixture(scope="module")
def policy_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One policy-enforcing lab (cni=lab) for the passing run and the break-it run."""
    root, prefix = start_lab("lab")
    try:
        yield root
    finally:
        stop_lab(root, prefix, tmp_path_factory.mktemp("policy-lab"))


def checks(out: Path) -> list[dict[str, Any]]:
    doc = json.loads((out / "reports" / "results.json").read_text())
    return list(doc["checks"])


def test_every_case_and_generated_policy_passes_on_a_policy_enforcing_lab(
    policy_lab: Path, tmp_path: Path
) -> None:
    result = run_suite(policy_lab, tmp_path, env_extra={"KNETCHECK_NETPOL_EXAMPLES": "3"})
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"netpol module failed (exit {result.returncode}):\n{out[-8000:]}"
    found = checks(tmp_path)
    outcomes = {c["nodeid"].split("::", 1)[1]: c["outcome"] for c in found}
    assert outcomes["test_case[deny-all-then-allow-one-pair]"] == "passed"
    assert outcomes["test_generated_policies"] == "passed"
    assert len(outcomes) >= 21 and set(outcomes.values()) == {"passed"}, outcomes
    deny = next(c for c in found if c["nodeid"].endswith("test_case[deny-all-ingress]"))
    assert {m["name"] for m in deny["matrices"]} >= {"deny-all-ingress: 80/TCP", "deny-all-ingress: 81/UDP"}
    assert control.status(policy_lab).running, "a lab the suite attached to must be left running"


def test_a_policy_nobody_expects_fails_the_case_with_its_cells_marked(
    policy_lab: Path, tmp_path: Path
) -> None:
    inject = tmp_path / "deny-y.yaml"
    inject.write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: injected-deny, namespace: y}\n"
        "spec: {podSelector: {}, policyTypes: [Ingress]}\n"
    )
    result = run_suite(
        policy_lab,
        tmp_path,
        "-k",
        "test_case and deny-all-ingress",
        env_extra={"KNETCHECK_INJECT_POLICY": str(inject), "KNETCHECK_CONVERGE_TIMEOUT": "4"},
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, f"the case should fail (exit {result.returncode}):\n{out[-6000:]}"
    assert "FAILED suites/conformance/test_netpol.py::test_case[deny-all-ingress]" in out
    assert re.search(
        r"other policies in the model namespaces, not in the expectation: y-\S+/injected-deny", out
    )
    assert "x/a -> y/b: expected allowed, observed BLOCKED" in out
    assert re.search(
        r"reproduce: kubectl --kubeconfig=\S+ get --raw '/api/v1/namespaces/x-\S+/pods/a:8080/", out
    )
    assert "deny-all-ingress: 80/TCP: 57/81 right, 24 wrong, 0 unknown" in out

    case = next(c for c in checks(tmp_path) if c["nodeid"].endswith("test_case[deny-all-ingress]"))
    expected_wrong = {(s, d) for s in PODS for d in ("y/a", "y/b", "y/c") if s != d}
    for matrix in case["matrices"]:
        if "after deleting" in matrix["name"]:
            continue
        wrong = {(m["src"], m["dst"]) for m in matrix["wrong"]}
        assert wrong == expected_wrong, f"{matrix['name']}: wrong cells {sorted(wrong)}"
        assert all(m["expected"] is True and m["observed"] is False for m in matrix["wrong"])


def test_the_module_skips_on_a_cni_without_network_policy(tmp_path: Path) -> None:
    root, prefix = start_lab("lab-nopolicy")
    try:
        result = run_suite(root, tmp_path, "--cni=lab-nopolicy")
        out = result.stdout + result.stderr
        assert result.returncode == 0, f"exit {result.returncode}:\n{out[-4000:]}"
        found = checks(tmp_path)
        assert len(found) >= 21 and {c["outcome"] for c in found} == {"skipped"}, found
        reason = "cni=lab-nopolicy on lab cluster 'knetcheck-lab' lacks network-policy"
        assert all(reason in c["message"] for c in found), [c["message"] for c in found]
        assert re.search(r"\b2\d skipped\b", out) and " passed" not in out.splitlines()[-1]
    finally:
        stop_lab(root, prefix, tmp_path)
