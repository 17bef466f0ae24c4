"""The NetworkPolicy module broken on the embedded lab, as a user runs it: ``pytest
suites/conformance/test_netpol.py --cluster=lab`` in a subprocess, attached to a lab this test starts
under its own root and ``kncl-t-…`` prefix (so a lab someone else runs, default or not, is never
touched). A deny-all policy nobody expects, slipped in through the module's self-test hook, fails
a case with exactly the cells it blocks marked wrong (and the lab is left running); ``lab-nopolicy``
skips the whole module with the CNI and the missing capability named. Every case passing on a
policy-enforcing lab is checked by the whole-suite run in ``test_conformance_lab``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conformance_harness import (
    BREAK_CONVERGE,
    NETPOL,
    assert_attached_lab_left_running,
    checks,
    output,
    own_lab,
    run_suite,
)

pytestmark = pytest.mark.lab
SUITE_TIMEOUT = 900.0
PODS = [f"{ns}/{p}" for ns in "xyz" for p in "abc"]


def test_a_policy_nobody_expects_fails_the_case_with_its_cells_marked(tmp_path: Path) -> None:
    inject = tmp_path / "deny-y.yaml"
    inject.write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: injected-deny, namespace: y}\n"
        "spec: {podSelector: {}, policyTypes: [Ingress]}\n"
    )
    with own_lab("np", tmp_path, cni="lab") as lab:
        result = run_suite(
            lab.root,
            tmp_path,
            NETPOL,
            "-k",
            "test_case and deny-all-ingress",
            extra_env={"KNETCHECK_INJECT_POLICY": str(inject), **BREAK_CONVERGE},
            timeout=SUITE_TIMEOUT,
        )
        out = output(result)
        assert result.returncode == 1, f"the case should fail (exit {result.returncode}):\n{out[-6000:]}"
        assert f"FAILED {NETPOL}::test_case[deny-all-ingress]" in out
        assert re.search(
            r"other policies in the model namespaces, not in the expectation: y-\S+/injected-deny", out
        )
        assert "x/a -> y/b: expected allowed, observed BLOCKED" in out
        assert re.search(
            r"reproduce: kubectl --kubeconfig=\S+ get --raw '/api/v1/namespaces/x-\S+/pods/a:8080/", out
        )
        summaries = [ln for ln in out.splitlines() if "deny-all-ingress: " in ln and " right, " in ln]
        want = "deny-all-ingress: 80/TCP: 57/81 right, 24 wrong, 0 unknown"
        assert any(want in ln for ln in summaries), summaries

        case = next(c for c in checks(tmp_path) if c["nodeid"].endswith("test_case[deny-all-ingress]"))
        expected_wrong = {(s, d) for s in PODS for d in ("y/a", "y/b", "y/c") if s != d}
        for matrix in case["matrices"]:
            if "after deleting" in matrix["name"]:
                continue
            wrong = {(m["src"], m["dst"]) for m in matrix["wrong"]}
            assert wrong == expected_wrong, f"{matrix['name']}: wrong cells {sorted(wrong)}"
            assert all(m["expected"] is True and m["observed"] is False for m in matrix["wrong"])
        assert_attached_lab_left_running(lab.root)


def test_the_module_skips_on_a_cni_without_network_policy(tmp_path: Path) -> None:
    with own_lab("np", tmp_path, cni="lab-nopolicy") as lab:
        result = run_suite(lab.root, tmp_path, NETPOL, "--cni=lab-nopolicy", timeout=SUITE_TIMEOUT)
        out = output(result)
        assert result.returncode == 0, f"exit {result.returncode}:\n{out[-4000:]}"
        found = checks(tmp_path)
        assert len(found) >= 21 and {c["outcome"] for c in found} == {"skipped"}, found
        reason = "cni=lab-nopolicy on lab cluster 'knetcheck-lab' lacks network-policy"
        assert all(reason in c["message"] for c in found), [c["message"] for c in found]
        assert re.search(r"\b2\d skipped\b", out) and " passed" not in out.splitlines()[-1]
        assert_attached_lab_left_running(lab.root)
