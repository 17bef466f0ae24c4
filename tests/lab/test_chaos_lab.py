"""Chaos experiments against a real lab: the runner, the `chaos` CLI, and a run killed mid-fault.

One lab for the module (its own root and name prefix). Each experiment must be detected (the
doctor names the expected finding) and recovered (the hypothesis holds after the fix), and leave
no saved original behind. ``chaos run`` must work with nothing but KUBECONFIG (and the lab dir, so
``attach`` finds this lab and not the default one). A SIGKILLed run leaves its fault in place; the
sweep, from this process, must revert it until the doctor finds nothing.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from clusters.capabilities import Capability
from clusters.handle import Cluster
from clusters.lab import layout
from clusters.labels import new_run_id
from clusters.proc import run
from clusters.recipes import load_recipe
from faults import doctor, originals, runner, sweep, validate, workspace
from faults.findings import Finding

from .labkit import Lab, started_lab, wait_for

pytestmark = pytest.mark.lab
log = logging.getLogger(__name__)

CHAOS = Path(sys.executable).parent / "chaos"
RUNNER_EXPERIMENTS = ["coredns-loop", "kube-proxy-mode-foo", "cni-config-malformed", "kube-dns-selector"]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with started_lab("chaos") as started:
        yield started


@pytest.fixture(scope="module")
def lab_cluster(lab: Lab) -> Cluster:
    recipe = load_recipe("lab")
    return Cluster(
        name=layout.CLUSTER_NAME,
        provider="lab",
        kubeconfig=lab.status.kubeconfig,
        context=None,
        cni=recipe,
        capabilities=frozenset(recipe.capabilities | {Capability.NODE_ACCESS}),
        node_channel=lab.channel,
        run_id=new_run_id(),
    )


def _healthy(cluster: Cluster) -> list[Finding]:
    return doctor.diagnose(cluster, probes=False)


@pytest.mark.parametrize("name", RUNNER_EXPERIMENTS)
def test_runner_detects_and_recovers(
    lab_cluster: Cluster, name: str, record_property: Callable[[str, object], None]
) -> None:
    cluster = replace(lab_cluster, run_id=new_run_id())
    _, ext = validate.load_valid(validate.experiments_dir() / f"{name}.json")
    outcome = runner.run(validate.experiments_dir() / f"{name}.json", cluster)
    record_property("time_to_detect", outcome.time_to_detect)
    record_property("time_to_recover", outcome.time_to_recover)
    log.info("%s", outcome.summary())
    assert outcome.detected, outcome.summary()
    assert outcome.finding is not None and outcome.finding.id is ext.expected_finding
    assert outcome.finding.evidence, "a finding without evidence cannot be checked by a person"
    assert outcome.recovered, outcome.summary()
    assert outcome.time_to_detect is not None and outcome.time_to_detect > 0
    assert outcome.time_to_recover is not None and outcome.time_to_recover >= 0
    assert outcome.status == "completed"
    assert originals.list_all(cluster) == []


def test_chaos_cli_runs_an_experiment_with_only_kubeconfig(lab: Lab, tmp_path: Path) -> None:
    journal = tmp_path / "journal.json"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "KUBECONFIG": str(lab.status.kubeconfig),
        "KNETCHECK_LAB_DIR": str(lab.root),
    }
    experiment = validate.experiments_dir() / "kube-dns-selector.json"
    result = run(
        [
            str(CHAOS),
            "--no-version-check",
            "--log-file",
            str(tmp_path / "chaos.log"),
            "run",
            "--journal-path",
            str(journal),
            str(experiment),
        ],
        timeout=600,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads(journal.read_text())
    assert doc["status"] == "completed" and not doc["deviated"]
    detect = next(r for r in doc["run"] if r["activity"]["name"] == "doctor-finds-dns-service-no-endpoints")
    assert detect["output"] is True
    assert [r["status"] for r in doc["rollbacks"]] == ["succeeded"] * len(doc["rollbacks"])


def test_killed_run_is_reverted_by_the_sweep(lab: Lab, lab_cluster: Cluster, tmp_path: Path) -> None:
    run_id = new_run_id()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "KUBECONFIG": str(lab.status.kubeconfig),
        "KNETCHECK_LAB_DIR": str(lab.root),
        "KNETCHECK_RUN_ID": run_id,
    }
    argv = [
        str(CHAOS),
        "--no-version-check",
        "--log-file",
        str(tmp_path / "chaos.log"),
        "run",
        "--journal-path",
        str(tmp_path / "journal.json"),
        str(validate.experiments_dir() / "coredns-loop.json"),
    ]
    with (tmp_path / "out.log").open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        corefile = lambda: str(lab.core.read_namespaced_config_map("coredns", "kube-system").data["Corefile"])  # noqa: E731
        wait_for(
            "the experiment to inject its fault",
            lambda: originals.list_all(lab_cluster) and "forward . 127.0.0.1" in corefile(),
            timeout=240,
        )
        wait_for(
            "the CoreDNS restart that makes the loop bite",
            lambda: (
                "kubectl.kubernetes.io/restartedAt"
                in (
                    lab.apps.read_namespaced_deployment(
                        "coredns", "kube-system"
                    ).spec.template.metadata.annotations
                    or {}
                )
            ),
            timeout=30,
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert "forward . 127.0.0.1" in corefile()  # the rollbacks never ran

    swept = sweep.revert_all(lab_cluster)
    assert [(r.fault, r.run_id, r.error) for r in swept] == [("coredns-loop", run_id, "")]
    assert "forward . 127.0.0.1" not in corefile()
    assert originals.list_all(lab_cluster) == []
    wait_for(
        "the doctor to find nothing after the sweep",
        lambda: _healthy(lab_cluster) == [] or None,
        timeout=240,
        every=2.0,
    )
    workspace.delete_namespace(lab_cluster, run_id)
    wait_for("coredns to be available again", lambda: _coredns_available(lab), timeout=120)


def _coredns_available(lab: Lab) -> bool:
    dep = lab.apps.read_namespaced_deployment("coredns", "kube-system")
    want = dep.spec.replicas or 0
    return bool((dep.status.available_replicas or 0) >= want and (dep.status.updated_replicas or 0) >= want)


def test_lab_has_no_fault_left(lab_cluster: Cluster) -> None:
    """Last in the module: every experiment above cleaned up after itself."""
    assert originals.list_all(lab_cluster) == []
    wait_for(
        "the doctor to find nothing", lambda: _healthy(lab_cluster) == [] or None, timeout=120, every=2.0
    )
