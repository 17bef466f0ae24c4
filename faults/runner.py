"""Run one experiment with chaoslib and say, as a typed outcome, whether the fault was detected
(the doctor named it) and recovered (the steady state came back), and how long each took.

Embedding chaoslib has traps (reference style-anchors §3): ``run_experiment`` swallows
KeyboardInterrupt/SystemExit and reports "interrupted" (we re-raise KeyboardInterrupt once its
rollbacks ran), and it installs signal handlers, so it must run on the main thread. Rollbacks are
played whatever the outcome (strategy ``always``): every revert is safe when nothing was injected.

Timings come from the journal's own timestamps: detection = end of the inject activity to the end
of the detection probe (which returns as soon as the doctor names the fault; its poll interval and
one diagnosis bound the error); recovery = end of the fix activity to the end of the last probe of
the hypothesis run after the method (each polls until healthy).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusters.errors import UsageProblem
from clusters.handle import Cluster
from faults import context, probes, validate
from faults.findings import Finding, FindingId

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChaosOutcome:
    name: str
    detected: bool
    finding: Finding | None
    time_to_detect: float | None
    recovered: bool
    time_to_recover: float | None
    status: str
    """The journal's status (completed, failed, aborted), or ``deviated``."""
    journal: dict[str, Any] = field(repr=False, compare=False)
    expected: FindingId | None = None

    def summary(self) -> str:
        detect = _phase("detected", self.detected, self.time_to_detect)
        recover = _phase("recovered", self.recovered, self.time_to_recover)
        return f"{self.name}: {self.expected or 'fault'} {detect}, {recover} (status {self.status})"


def _phase(what: str, happened: bool, seconds: float | None) -> str:
    if not happened:
        return f"NOT {what}"
    return what if seconds is None else f"{what} in {seconds:.1f}s"


def _when(entry: Mapping[str, Any] | None, key: str) -> dt.datetime | None:
    if not entry or not entry.get(key):
        return None
    return dt.datetime.fromisoformat(str(entry[key]))


def _run_entry(journal: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    return next((r for r in journal.get("run") or [] if (r.get("activity") or {}).get("name") == name), None)


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds(), 3)


def outcome_from_journal(
    name: str, journal: dict[str, Any], ext: validate.KnetcheckExtension, finding: Finding | None
) -> ChaosOutcome:
    """Read detection and recovery (and their times) from a finished journal."""
    inject, detect, fix = (_run_entry(journal, n) for n in (ext.inject, ext.detect, ext.fix))
    detected = bool(detect and detect.get("status") == "succeeded" and detect.get("output") is True)
    after = (journal.get("steady_states") or {}).get("after") or {}
    recovered = bool(after.get("steady_state_met")) and bool(fix and fix.get("status") == "succeeded")
    ends = [e for p in after.get("probes") or [] if (e := _when(p, "end")) is not None]
    after_end = max(ends, default=None)
    status = "deviated" if journal.get("deviated") else str(journal.get("status"))
    return ChaosOutcome(
        name=name,
        detected=detected,
        finding=finding if detected else None,
        time_to_detect=_seconds(_when(inject, "end"), _when(detect, "end")) if detected else None,
        recovered=recovered,
        time_to_recover=_seconds(_when(fix, "end"), after_end) if recovered else None,
        status=status,
        journal=journal,
        expected=ext.expected_finding,
    )


@contextlib.contextmanager
def _environment(cluster: Cluster) -> Iterator[None]:
    """KUBECONFIG and KNETCHECK_RUN_ID for the activities (and anything they spawn), then restored."""
    wanted = {"KUBECONFIG": str(cluster.kubeconfig)}
    if cluster.run_id:
        wanted[context.RUN_ID_ENV] = cluster.run_id
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _settings(experiment: Mapping[str, Any]) -> dict[str, Any]:
    runtime = experiment.get("runtime") or {}
    strategy = (runtime.get("rollbacks") or {}).get("strategy", "always")
    return {"runtime": {"rollbacks": {"strategy": strategy}, "hypothesis": {"strategy": "default"}}}


def run(experiment: Path | str | Mapping[str, Any], cluster: Cluster) -> ChaosOutcome:
    """Run ``experiment`` (a path or the parsed JSON) against ``cluster`` on the main thread.

    Raises UsageProblem for an invalid experiment (one line, before anything runs) and
    KeyboardInterrupt when the run was interrupted (after chaoslib played the rollbacks).
    """
    if threading.current_thread() is not threading.main_thread():
        raise UsageProblem("faults.runner.run must be called on the main thread: chaoslib installs "
                           "signal handlers for SIGTERM/SIGUSR1/SIGUSR2")
    if isinstance(experiment, Mapping):
        doc, where = copy.deepcopy(dict(experiment)), str(experiment.get("title", "experiment"))
        name = where
    else:
        path = Path(experiment)
        doc, where, name = validate.load(path), str(path), path.stem
    ext = validate.validate(doc, where)

    from chaoslib.experiment import run_experiment
    from chaoslib.types import Strategy

    probes.clear_matches()
    with _environment(cluster), context.use_cluster(cluster):
        log.info("chaos: running %s on %s cluster %r (run %s)", name, cluster.provider, cluster.name,
                 cluster.run_id)
        journal: dict[str, Any] = run_experiment(doc, settings=_settings(doc), strategy=Strategy.DEFAULT)
    if journal.get("status") == "interrupted":
        raise KeyboardInterrupt(f"experiment {name} was interrupted (rollbacks were played)")
    outcome = outcome_from_journal(name, journal, ext, probes.last_match(ext.expected_finding.value))
    log.info("chaos: %s", outcome.summary())
    return outcome
