"""Every experiment in faults/experiments against the cluster: the fault must be detected (the
doctor names the expected finding, with evidence) and recovered (the steady-state hypothesis
holds again after the runbook fix), with both times in the report.

Budgets are the experiment's own probe timeouts: detection fails once ``doctor_finds`` gives up,
recovery once a hypothesis probe does. Node-level experiments are ``destructive``; an experiment
whose cluster lacks a capability it needs (``node-access``) is skipped naming it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from clusters.errors import UsageProblem
from clusters.handle import Cluster
from faults import runner, validate
from faults.runner import ChaosOutcome
from suites.reports import Recorder, StepRecord


def _param(path: Path) -> object:
    """One test per experiment file; a file that does not even load still gets a (failing) test."""
    try:
        destructive = validate.extension(validate.load(path)).destructive
    except UsageProblem:
        destructive = False
    marks = [pytest.mark.destructive] if destructive else []
    return pytest.param(path, id=path.stem, marks=marks)


def _attach(report: Recorder, record_property: Callable[[str, object], None], outcome: ChaosOutcome) -> None:
    if outcome.time_to_detect is not None:
        evidence = " | ".join(outcome.finding.evidence[:3]) if outcome.finding else ""
        report.steps.append(StepRecord(f"detect {outcome.expected}: {evidence}", outcome.time_to_detect))
    if outcome.time_to_recover is not None:
        report.steps.append(StepRecord("recover (fix -> steady state)", outcome.time_to_recover))
    record_property("chaos_outcome", json.dumps({
        "experiment": outcome.name,
        "status": outcome.status,
        "detected": outcome.detected,
        "time_to_detect": outcome.time_to_detect,
        "recovered": outcome.recovered,
        "time_to_recover": outcome.time_to_recover,
        "finding": outcome.finding.to_dict() if outcome.finding else None,
    }))


@pytest.mark.chaos
@pytest.mark.parametrize("path", [_param(p) for p in validate.experiment_paths()])
def test_experiment(
    path: Path, cluster: Cluster, report: Recorder, record_property: Callable[[str, object], None]
) -> None:
    _, ext = validate.load_valid(path)
    for capability in sorted(ext.needs):
        reason = cluster.missing(capability)
        if reason:
            pytest.skip(f"{path.stem}: {reason}")
    outcome = runner.run(path, cluster)
    _attach(report, record_property, outcome)
    before = (outcome.journal.get("steady_states") or {}).get("before") or {}
    assert before.get("steady_state_met"), (
        f"{path.stem}: the cluster was not healthy before the fault (steady-state hypothesis failed), "
        f"nothing was injected: {outcome.summary()}"
    )
    summary = outcome.summary()
    assert outcome.detected, f"{path.stem}: the doctor did not report {ext.expected_finding}: {summary}"
    assert outcome.finding is not None and outcome.finding.id is ext.expected_finding
    assert outcome.recovered, f"{path.stem}: the steady state did not come back after the fix: {summary}"
