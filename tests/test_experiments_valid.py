"""Every shipped experiment is valid Chaos Toolkit and fits our activities; a broken one is one line.

Also the runner's reading of a journal (detected, recovered, and the two times) on synthetic
journals, so the timing arithmetic is pinned without a cluster.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from clusters.errors import UsageProblem
from faults import runner, validate
from faults.findings import Finding, FindingId

PATHS = validate.experiment_paths()


def test_there_is_an_experiment_per_catalogue_entry() -> None:
    names = {p.stem for p in PATHS}
    expected = {
        "cni-config-malformed",
        "cni-config-deleted",
        "cni-plugin-binary-removed",
        "coredns-loop",
        "coredns-loop-kube-dns",
        "kube-proxy-mode-foo",
        "kube-proxy-invalid-yaml",
        "kube-proxy-wrong-kubeconfig",
        "kube-proxy-wrong-cluster-cidr",
        "cni-agent-down",
        "kube-dns-selector",
        "coredns-scaled-to-zero",
        "pod-cidr-exhausted",
        "node-partition",
        "ingress-backend-missing",
        "ingress-tls-expired",
        "mtu-mismatch",
    }
    assert expected <= names


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_experiment_validates(path: Path) -> None:
    doc, ext = validate.load_valid(path)
    assert ext.expected_finding.value in doc["tags"]
    assert doc["runtime"]["rollbacks"]["strategy"] == "always"
    # every method activity that injects has its revert among the rollbacks (safe twice, and safe
    # when the inject never ran), and the chaos namespace is cleaned up
    rollbacks = [a["provider"]["func"] for a in doc["rollbacks"]]
    assert "delete_chaos_namespace" in rollbacks
    fix = next(a for a in doc["method"] if a["name"] == ext.fix)
    assert fix["provider"]["func"] in rollbacks
    # a node-level fault says so, so the chaos suite can gate and mark it
    node_args = any(
        "node" in a["provider"]["arguments"] or "node_a" in a["provider"]["arguments"] for a in doc["method"]
    )
    assert ext.destructive == node_args
    assert ("node-access" in {c.value for c in ext.needs}) == node_args


def _base() -> dict[str, Any]:
    return validate.load(validate.experiments_dir() / "kube-dns-selector.json")


def _one_line(exc: pytest.ExceptionInfo[UsageProblem]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_invalid_json_is_one_line_with_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"title": "x",\n  "method": [}\n')
    with pytest.raises(UsageProblem) as exc:
        validate.load_valid(bad)
    line = _one_line(exc)
    assert str(bad) in line and "line 2" in line


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UsageProblem) as exc:
        validate.load(tmp_path / "nope.json")
    assert "cannot read" in _one_line(exc)


def test_unknown_function_names_the_activity_and_the_choices() -> None:
    doc = _base()
    doc["method"][0]["provider"]["func"] = "break_dns_servce_selector"
    with pytest.raises(UsageProblem) as exc:
        validate.validate(doc, "x.json")
    line = _one_line(exc)
    assert line.startswith("x.json: ") and "break_dns_servce_selector" in line


def test_argument_that_does_not_bind_names_the_function() -> None:
    doc = _base()
    doc["method"][0]["provider"]["arguments"] = {"servce": "kube-dns"}
    with pytest.raises(UsageProblem) as exc:
        validate.validate(doc, "x.json")
    line = _one_line(exc)
    assert "servce" in line and "break_dns_service_selector" in line


def test_function_outside_all_is_refused() -> None:
    doc = _base()
    doc["method"][0]["provider"].update(module="faults.actions._support", func="now", arguments={})
    with pytest.raises(UsageProblem) as exc:
        validate.validate(doc, "x.json")
    assert "exports no activity" in _one_line(exc)


def test_configuration_is_not_an_argument() -> None:
    doc = _base()
    doc["rollbacks"][0]["provider"]["arguments"] = {"configuration": {}}
    with pytest.raises(UsageProblem) as exc:
        validate.validate(doc, "x.json")
    assert "configuration" in _one_line(exc)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d.pop("extensions"), "exactly one extension"),
        (lambda d: d["extensions"][0].update(expected_finding="dns-broken"), "not a doctor finding id"),
        (lambda d: d["extensions"][0].update(needs=["teleport"]), "unknown capability"),
        (lambda d: d["extensions"][0].update(fix="no-such-step"), "names no method activity"),
        (lambda d: d["extensions"][0].update(detect=d["method"][0]["name"]), "inject, then detect, then fix"),
        (
            lambda d: d["method"][1]["provider"]["arguments"].update(finding_id="coredns-unavailable"),
            "must be faults.probes.doctor_finds with finding_id",
        ),
        (lambda d: d.pop("title"), "requires a title"),
    ],
)
def test_broken_extension_or_shape_is_one_clear_line(change: Any, words: str) -> None:
    doc = copy.deepcopy(_base())
    change(doc)
    with pytest.raises(UsageProblem) as exc:
        validate.validate(doc, "x.json")
    assert words in _one_line(exc)


# ---- reading a journal ------------------------------------------------------------------------


def _entry(
    name: str, start: str, end: str, output: object = None, status: str = "succeeded"
) -> dict[str, Any]:
    day = "2026-01-01T00:00:"
    return {
        "activity": {"name": name},
        "status": status,
        "output": output,
        "start": f"{day}{start}+00:00",
        "end": f"{day}{end}+00:00",
    }


def _journal(detect_output: object = True, after_met: bool = True) -> dict[str, Any]:
    return {
        "status": "completed",
        "deviated": not after_met,
        "run": [
            _entry("break", "00.000000", "01.000000", {}),
            _entry("detect", "01.000000", "13.500000", detect_output),
            _entry("fix", "13.500000", "14.000000", {}),
        ],
        "steady_states": {
            "after": {
                "steady_state_met": after_met,
                "probes": [
                    _entry("nodes", "14.000000", "15.000000", True),
                    _entry("dns", "15.000000", "21.250000", True),
                ],
            }
        },
    }


EXT = validate.KnetcheckExtension(
    FindingId.DNS_SERVICE_NO_ENDPOINTS, frozenset(), False, "break", "detect", "fix"
)
FINDING = Finding(
    FindingId.DNS_SERVICE_NO_ENDPOINTS, "service/kube-system/kube-dns", "no endpoints", ("e",), "fix"
)


def test_outcome_times_come_from_the_journal() -> None:
    outcome = runner.outcome_from_journal("x", _journal(), EXT, FINDING)
    assert outcome.detected and outcome.recovered
    assert outcome.time_to_detect == pytest.approx(12.5)
    assert outcome.time_to_recover == pytest.approx(7.25)
    assert outcome.finding == FINDING and outcome.status == "completed"
    assert "detected in 12.5s" in outcome.summary()


def test_a_detection_probe_that_gave_up_is_not_detected() -> None:
    outcome = runner.outcome_from_journal("x", _journal(detect_output=False, after_met=False), EXT, FINDING)
    assert not outcome.detected and outcome.finding is None and outcome.time_to_detect is None
    assert not outcome.recovered and outcome.time_to_recover is None
    assert outcome.status == "deviated"
    assert "NOT detected" in outcome.summary()


def test_runner_refuses_an_invalid_experiment_before_running(tmp_path: Path) -> None:
    doc = _base()
    doc["method"][0]["provider"]["func"] = "nope"
    path = tmp_path / "x.json"
    path.write_text(json.dumps(doc))
    from clusters.handle import Cluster, NoNodeChannel
    from clusters.recipes import load_recipe

    cluster = Cluster(
        "c",
        "lab",
        tmp_path / "kubeconfig",
        None,
        load_recipe("lab"),
        frozenset(),
        NoNodeChannel("unit test"),
        "rtest",
    )
    with pytest.raises(UsageProblem) as exc:
        runner.run(path, cluster)
    assert str(path) in _one_line(exc)
