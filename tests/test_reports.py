"""Reports: JSON and self-contained HTML from synthetic results, and the plugin writing them for a run."""

from __future__ import annotations

import json
import logging
from html.parser import HTMLParser
from pathlib import Path

import pytest

from suites.progress import LogProgress
from suites.reports import CheckRecord, Recorder, RunRecord, render_html, write_html, write_json
from suites.truthtable import TruthTable
from suites.verdict import ProbeResult, Verdict

KEYS = ["w1/a", "w1/b", "w2/a"]
EXPECTED = TruthTable.filled(KEYS)
OBSERVED = EXPECTED.set("w1/a", "w2/a", False).set("w2/a", "w1/b", None)
REPRO = "kubectl exec -n ns pod-w1-a -c netexec -- /agnhost connect 10.244.2.2:8080 --timeout=2s"


def results() -> dict[tuple[str, str], ProbeResult]:
    out = {(s, d): ProbeResult(Verdict.CONNECTED, "", f"repro {s} {d}", 0.01) for s in KEYS for d in KEYS}
    out[("w1/a", "w2/a")] = ProbeResult(Verdict.TIMEOUT, "TIMEOUT", REPRO, 2.0)
    out[("w2/a", "w1/b")] = ProbeResult(Verdict.PROBE_ERROR, "API server answered 503", "repro x", 10.0)
    return out


def synthetic_run() -> RunRecord:
    broken = Recorder()
    broken.matrix("pod->pod all pairs", EXPECTED, OBSERVED, results())
    broken.matrix("pod->own node", TruthTable.filled(["w1/a"], ["own node"]),
                  TruthTable.filled(["w1/a"], ["own node"]))
    with broken.step("probe sweep"):
        pass
    healthy = Recorder()
    healthy.matrix("loopback ignored", EXPECTED, EXPECTED.set("w1/a", "w1/a", False), ignore_loopback=True)
    checks = (
        CheckRecord("t.py::test_broken", "failed", 3.5, {"setup": 1.0, "call": 2.5}, 1_700_000_000.0,
                    "boom <matrix>", ("conformance",), tuple(broken.matrices), tuple(broken.steps)),
        CheckRecord("t.py::test_ok", "passed", 0.5, {"call": 0.5}, 1_700_000_001.0,
                    matrices=tuple(healthy.matrices)),
        CheckRecord("t.py::test_skip", "skipped", 0.0, {"setup": 0.0}, 1_700_000_002.0, "needs 2 nodes"),
    )
    return RunRecord("r123", 1_700_000_000.0, 4.2, checks, ("cluster=lab, cni=lab",))


class Grids(HTMLParser):
    """Collects each matrix grid: its name and every cell's classes, text and title."""

    def __init__(self) -> None:
        super().__init__()
        self.grids: list[dict[str, object]] = []
        self.external: list[str] = []
        self._name = ""
        self._cell: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in ("link", "script", "img") or (tag == "a" and not a.get("href", "#").startswith("#")):
            self.external.append(tag)
        if tag == "figure" and "matrix" in a.get("class", ""):
            self._name = a["data-name"]
        if tag == "table" and a.get("class") == "grid":
            self.grids.append({"name": self._name, "cells": []})
        if tag == "td" and "cell" in a.get("class", "").split():
            self._cell = {"class": a["class"], "title": a.get("title", ""), "text": ""}

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            cells = self.grids[-1]["cells"]
            assert isinstance(cells, list)
            cells.append(self._cell)
            self._cell = None


def parse(html: str) -> Grids:
    grids = Grids()
    grids.feed(html)
    return grids


def test_json_has_every_check_with_timings_matrices_and_probe_evidence(tmp_path: Path) -> None:
    path = write_json(tmp_path / "out" / "results.json", synthetic_run())
    doc = json.loads(path.read_text())
    assert doc["schema"] == "knetcheck.results/v1" and doc["run_id"] == "r123"
    assert doc["counts"] == {"failed": 1, "passed": 1, "skipped": 1}
    broken = doc["checks"][0]
    assert broken["phases"] == {"setup": 1.0, "call": 2.5} and broken["markers"] == ["conformance"]
    assert broken["steps"][0]["name"] == "probe sweep"
    table = broken["matrices"][0]
    assert table["name"] == "pod->pod all pairs"
    assert table["expected"] == EXPECTED.to_dict() and table["observed"] == OBSERVED.to_dict()
    assert table["wrong"] == [{"src": "w1/a", "dst": "w2/a", "expected": True, "observed": False}]
    assert table["unknown"][0]["src"] == "w2/a"
    assert table["probes"]["w1/a"]["w2/a"] == {
        "verdict": "timeout", "detail": "TIMEOUT", "command": REPRO, "elapsed": 2.0, "output": ""
    }
    assert doc["checks"][2]["message"] == "needs 2 nodes"


def test_html_draws_one_grid_per_matrix_with_the_right_cell_classes(tmp_path: Path) -> None:
    html = write_html(tmp_path / "report.html", synthetic_run()).read_text()
    grids = parse(html)
    assert [g["name"] for g in grids.grids] == ["pod->pod all pairs", "pod->own node", "loopback ignored"]
    cells = grids.grids[0]["cells"]
    assert isinstance(cells, list) and len(cells) == 9
    by_class: dict[str, list[dict[str, str]]] = {c["class"]: [] for c in cells}
    for c in cells:
        by_class[c["class"]].append(c)
    assert sorted((k, len(v)) for k, v in by_class.items()) == [
        ("cell ok", 7), ("cell unknown", 1), ("cell wrong", 1)
    ]
    wrong = by_class["cell wrong"][0]
    assert wrong["text"] == "X"
    assert wrong["title"].startswith("w1/a -> w2/a: expected connected, observed blocked (wrong)")
    assert "verdict: timeout: TIMEOUT" in wrong["title"] and f"reproduce: {REPRO}" in wrong["title"]
    assert by_class["cell unknown"][0]["text"] == "?"
    assert "verdict: probe-error: API server answered 503" in by_class["cell unknown"][0]["title"]
    loop = grids.grids[2]["cells"]
    assert isinstance(loop, list)
    assert [c["class"] for c in loop].count("cell ignored") == 3
    assert [c["class"] for c in loop].count("cell wrong") == 0


def test_html_is_self_contained_escaped_and_has_a_legend() -> None:
    html = render_html(synthetic_run())
    grids = parse(html)
    assert grids.external == [], "no external assets: the report must open offline"
    assert "<style>" in html and "http://" not in html and "https://" not in html
    assert "boom &lt;matrix&gt;" in html
    assert html.count('class="legend"') == len(grids.grids)
    for text in ("as expected", "wrong", "unknown (probe error"):
        assert text in html


def test_log_progress_says_start_and_end_with_counts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    progress = LogProgress()
    with progress.step("probe pods Ready", total=3) as step:
        step.advance(2)
        step.note("2 connected")
    with pytest.raises(RuntimeError), progress.step("sweep", total=4) as step:
        step.advance()
        raise RuntimeError("stop")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "probe pods Ready: started (0/3)"
    assert lines[1].startswith("probe pods Ready: done 2/3 in ") and lines[1].endswith(", 2 connected")
    assert lines[3].startswith("sweep: stopped at 1/4 in ")


RUN_TESTS = """
import pytest
from suites.truthtable import TruthTable

def test_with_matrix(report):
    t = TruthTable.filled(["a", "b"])
    report.matrix("a->b", t, t.set("a", "b", False))
    pytest.fail("a -> b blocked")

def test_plain():
    pass

@pytest.mark.skip(reason="not today")
def test_skipped():
    pass
"""


@pytest.fixture
def inner_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("KNETCHECK_REPORTS_DIR", raising=False)
    monkeypatch.setenv("KNETCHECK_RUN_ID", "rreport01")
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider -p no:hypothesispytest\n")
    return pytester


def test_plugin_writes_junit_json_and_html_under_reports_dir(inner_env: pytest.Pytester) -> None:
    inner_env.makepyfile(test_inner=RUN_TESTS)
    result = inner_env.runpytest_subprocess("--reports-dir=out/reports", "--cluster=lab")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    out = inner_env.path / "out" / "reports"
    assert (out / "junit.xml").read_text().count("<testcase") == 3
    doc = json.loads((out / "results.json").read_text())
    assert doc["run_id"] == "rreport01"
    outcomes = {c["nodeid"].split("::")[1]: c["outcome"] for c in doc["checks"]}
    assert outcomes == {"test_with_matrix": "failed", "test_plain": "passed", "test_skipped": "skipped"}
    failed = doc["checks"][0]
    assert failed["matrices"][0]["wrong"] == [{"src": "a", "dst": "b", "expected": True, "observed": False}]
    assert "a -> b blocked" in failed["message"]
    assert set(failed["phases"]) == {"setup", "call", "teardown"}
    grids = parse((out / "report.html").read_text()).grids
    cells = grids[0]["cells"]
    assert isinstance(cells, list) and len(grids) == 1
    assert [c["class"] for c in cells].count("cell wrong") == 1
    result.stdout.fnmatch_lines(["knetcheck reports: *results.json, *report.html, *junit.xml"])


def test_plugin_writes_nothing_for_a_run_outside_the_suites_without_reports_dir(
    inner_env: pytest.Pytester,
) -> None:
    inner_env.makepyfile(test_inner=RUN_TESTS)
    result = inner_env.runpytest_subprocess("--cluster=lab")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    assert not (inner_env.path / "reports").exists()
    assert "knetcheck reports" not in result.stdout.str()


def test_a_junitxml_path_given_by_the_user_wins(inner_env: pytest.Pytester) -> None:
    inner_env.makepyfile(test_inner="def test_ok(report):\n    pass\n")
    result = inner_env.runpytest_subprocess("--reports-dir=r", "--junitxml=mine.xml", "--cluster=lab")
    result.assert_outcomes(passed=1)
    assert (inner_env.path / "mine.xml").exists() and not (inner_env.path / "r" / "junit.xml").exists()
    assert (inner_env.path / "r" / "results.json").exists()


def test_rich_progress_ends_each_step_with_one_summary_line() -> None:
    import io

    from suites.progress import RichProgress

    said: list[str] = []
    entered: list[str] = []

    class Suspend:
        def __enter__(self) -> None:
            entered.append("in")

        def __exit__(self, *exc: object) -> None:
            entered.append("out")

    progress = RichProgress(stream=io.StringIO, say=said.append, suspend=Suspend)
    with progress.step("probe sweep", total=2) as step:
        step.advance(2)
        step.note("2 connected")
    assert entered == ["in", "out"]
    assert len(said) == 1
    assert said[0].startswith("probe sweep: done 2/2 in ") and said[0].endswith(", 2 connected")


def test_a_suite_run_writes_reports_by_default_but_collect_only_does_not(inner_env: pytest.Pytester) -> None:
    import suites.conformance

    module = str(Path(suites.conformance.__file__).parent / "test_pod_network.py")
    inner_env.runpytest_subprocess(module, "--collect-only", "--cluster=lab")
    assert not (inner_env.path / "reports").exists()
    result = inner_env.runpytest_subprocess(module, "-k", "no_such_test", "--cluster=lab")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    reports = inner_env.path / "reports"
    assert sorted(p.name for p in reports.iterdir()) == ["junit.xml", "report.html", "results.json"]
