"""The reports plugin: JUnit XML, ``results.json`` and ``report.html`` under ``--reports-dir``; the
``report`` and ``progress`` fixtures.

Loaded by :mod:`suites.plugin` (its ``pytest_plugins``), so it is active wherever knetcheck is
installed; it writes files only for a suite run (a path inside the ``suites`` package, as
``knetcheck test`` passes) or when ``--reports-dir``/``KNETCHECK_REPORTS_DIR`` is given, so the
project's own test runs leave no ``reports/`` behind. JUnit is pytest's own ``--junitxml``, pointed
at ``<reports>/junit.xml`` unless the user chose a path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clusters import options
from clusters.errors import KnetcheckError
from suites.plugin import settings
from suites.progress import LogProgress, Progress, RichProgress
from suites.reports import CheckRecord, MatrixRecord, Recorder, RunRecord, StepRecord, write_html, write_json

log = logging.getLogger(__name__)

JUNIT = "junit.xml"
JSON = "results.json"
HTML = "report.html"
PLUGIN_NAME = "knetcheck-reports"
_RECORDER = pytest.StashKey[Recorder]()
_COLLECTOR = pytest.StashKey["Collector"]()
_STDERR_TTY = pytest.StashKey[bool]()


@dataclass
class _Check:
    """A test's record while its phases come in."""

    nodeid: str
    started: float
    phases: dict[str, float] = field(default_factory=dict)
    outcome: str = "passed"
    message: str = ""
    markers: tuple[str, ...] = ()
    matrices: list[MatrixRecord] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)

    def freeze(self) -> CheckRecord:
        return CheckRecord(
            self.nodeid, self.outcome, sum(self.phases.values()), dict(self.phases), self.started,
            self.message, self.markers, tuple(self.matrices), tuple(self.steps),
        )


def _message(report: pytest.TestReport | pytest.CollectReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    return report.longreprtext


class Collector:
    """Gathers outcomes, phase timings and attached matrices; writes the files at session end."""

    def __init__(self, config: pytest.Config, directory: Path) -> None:
        self.config = config
        self.directory = directory
        self.started = time.time()
        self.checks: dict[str, _Check] = {}
        self.written: list[Path] = []

    def _check(self, nodeid: str, started: float) -> _Check:
        return self.checks.setdefault(nodeid, _Check(nodeid, started))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        rec = self._check(report.nodeid, call.start)
        rec.phases[report.when] = report.duration
        rec.markers = tuple(sorted({m.name for m in item.iter_markers()}))
        if hasattr(report, "wasxfail"):
            rec.outcome = "xfailed" if report.skipped else "xpassed"
            rec.message = str(report.wasxfail)
        elif report.failed:
            if report.when == "call" and rec.outcome != "error":
                rec.outcome = "failed"
            elif rec.outcome != "failed":  # setup/teardown broke; a failed call stays the headline
                rec.outcome = "error"
            rec.message = "\n\n".join(filter(None, [rec.message, _message(report)]))
        elif report.skipped and rec.outcome == "passed":
            rec.outcome = "skipped"
            rec.message = _message(report)
        recorder = item.stash.get(_RECORDER, None)
        if recorder is not None and report.when == "teardown":
            rec.matrices = list(recorder.matrices)
            rec.steps = list(recorder.steps)
        return report

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            rec = self._check(report.nodeid or "(collection)", time.time())
            rec.outcome = "error"
            rec.message = _message(report)

    def run_record(self) -> RunRecord:
        try:
            found = settings(self.config)
            run_id, about = found.request.run_id, (found.summary(), *found.notes)
        except KnetcheckError as exc:
            run_id, about = "unknown", (f"options: {exc}",)
        checks = tuple(c.freeze() for c in self.checks.values())
        return RunRecord(run_id, self.started, time.time() - self.started, checks, tuple(about))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        run = self.run_record()
        try:
            self.written = [write_json(self.directory / JSON, run), write_html(self.directory / HTML, run)]
        except OSError as exc:
            log.error("could not write reports to %s: %s", self.directory, exc)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        junit = getattr(self.config.option, "xmlpath", None)
        files = [str(p) for p in self.written] + ([str(junit)] if junit else [])
        if files:
            terminalreporter.write_line(f"knetcheck reports: {', '.join(files)}")


def _suite_run(config: pytest.Config) -> bool:
    """Whether any path pytest was given lies inside the installed ``suites`` package."""
    import suites

    roots = [Path(p).resolve() for p in suites.__path__]
    for arg in config.args:
        path = (config.invocation_params.dir / arg.split("::", 1)[0]).resolve()
        if any(path == root or root in path.parents for root in roots):
            return True
    return False


def _reports_dir_given(config: pytest.Config) -> bool:
    spec = options.SPECS["reports-dir"]
    return config.getoption(spec.dest, None) is not None or bool(spec.env and os.environ.get(spec.env))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Before pytest's junitxml plugin reads ``xmlpath``: point it into the reports dir."""
    if config.getoption("help", False) or hasattr(config, "workerinput"):
        return
    # Asked now: output capture is suspended during configure, and fd 2 is a temp file in tests.
    config.stash[_STDERR_TTY] = sys.stderr is not None and sys.stderr.isatty()
    if config.getoption("collectonly", False) or not (_reports_dir_given(config) or _suite_run(config)):
        return
    values = options.given_values(lambda dest: config.getoption(dest, None))
    directory = config.invocation_params.dir / options.reports_dir(values)
    if hasattr(config.option, "xmlpath") and not config.option.xmlpath:
        config.option.xmlpath = str(directory / JUNIT)
    collector = Collector(config, directory)
    config.stash[_COLLECTOR] = collector
    config.pluginmanager.register(collector, PLUGIN_NAME)


def reports_directory(config: pytest.Config) -> Path | None:
    """Where this session writes its reports, or None when it writes none."""
    collector = config.stash.get(_COLLECTOR, None)
    return collector.directory if collector else None


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Recorder:
    """Attach matrices (``report.outcome(o)``, ``report.matrix(name, expected, observed)``) and
    timed steps (``with report.step("…")``) to this test's entry in the reports."""
    recorder = Recorder()
    request.node.stash[_RECORDER] = recorder
    return recorder


@pytest.fixture(scope="session")
def progress(pytestconfig: pytest.Config) -> Progress:
    """Progress on long steps: a live bar when stderr is a terminal, log lines otherwise."""
    return make_progress(pytestconfig)


def make_progress(config: pytest.Config) -> Progress:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not config.stash.get(_STDERR_TTY, False):
        return LogProgress(logging.getLogger("knetcheck.progress"))

    @contextlib.contextmanager
    def live() -> Iterator[None]:
        capman = config.pluginmanager.get_plugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
            reporter.ensure_newline()
            yield

    return RichProgress(stream=lambda: sys.stderr, say=reporter.write_line, suspend=live)
