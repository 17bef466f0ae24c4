"""Run reports: JSON for trends and a self-contained HTML page with the truth tables drawn.

What a test attaches (matrices with per-cell evidence, timed steps) is collected by a
:class:`Recorder` (the ``report`` fixture); the plugin (:mod:`suites.reportplugin`) adds outcomes
and phase timings and writes ``results.json`` and ``report.html``. The HTML has no external
assets (a nightly artifact must open offline, years later): CSS is inline, each matrix is a table
of green/red cells whose ``title`` gives the verdict and the command that reproduces it.
"""

from __future__ import annotations

import contextlib
import html
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suites.connectivity import Outcome, Pair
from suites.truthtable import Cell, Comparison, TruthTable, symbol
from suites.verdict import ProbeResult

SCHEMA = "knetcheck.results/v1"


@dataclass(frozen=True)
class CellRecord:
    verdict: str
    detail: str
    command: str
    elapsed: float
    output: str = ""

    @classmethod
    def of(cls, result: ProbeResult) -> CellRecord:
        return cls(
            result.verdict.value, result.detail, result.command, round(result.elapsed, 3), result.output
        )


@dataclass(frozen=True)
class MatrixRecord:
    name: str
    comparison: Comparison
    cells: Mapping[Pair, CellRecord] = field(default_factory=dict)
    rounds: int = 1
    elapsed: float = 0.0

    def state(self, src: str, dst: str) -> str:
        """``ok``, ``wrong``, ``unknown`` or ``ignored``: the cell's CSS class in the HTML."""
        if self.comparison.ignore_loopback and src == dst:
            return "ignored"
        if any((m.src, m.dst) == (src, dst) for m in self.comparison.wrong):
            return "wrong"
        if any((m.src, m.dst) == (src, dst) for m in self.comparison.unknown):
            return "unknown"
        return "ok"

    def to_dict(self) -> dict[str, Any]:
        cells: dict[str, dict[str, Any]] = {}
        for (src, dst), rec in self.cells.items():
            cells.setdefault(src, {})[dst] = rec.__dict__
        return {
            "name": self.name,
            **self.comparison.to_dict(),
            "rounds": self.rounds,
            "elapsed": round(self.elapsed, 3),
            "probes": cells,
        }


@dataclass(frozen=True)
class StepRecord:
    name: str
    seconds: float


class Recorder:
    """What one test attaches to its report: matrices and timed steps (the ``report`` fixture)."""

    def __init__(self) -> None:
        self.matrices: list[MatrixRecord] = []
        self.steps: list[StepRecord] = []

    def matrix(
        self,
        name: str,
        expected: TruthTable,
        observed: TruthTable,
        results: Mapping[Pair, ProbeResult] | None = None,
        *,
        ignore_loopback: bool = False,
    ) -> Comparison:
        """Attach ``expected`` vs ``observed`` (and the probe behind each cell); returns the comparison."""
        comparison = expected.compare(observed, ignore_loopback=ignore_loopback)
        cells = {pair: CellRecord.of(r) for pair, r in (results or {}).items()}
        self.matrices.append(MatrixRecord(name, comparison, cells))
        return comparison

    def outcome(self, outcome: Outcome) -> None:
        """Attach a connectivity check's outcome: its matrices, evidence and convergence."""
        cells = {pair: CellRecord.of(r) for pair, r in outcome.results.items()}
        self.matrices.append(
            MatrixRecord(outcome.check.name, outcome.comparison, cells, outcome.rounds, outcome.elapsed)
        )

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.steps.append(StepRecord(name, round(time.monotonic() - started, 3)))


@dataclass(frozen=True)
class CheckRecord:
    nodeid: str
    outcome: str
    """passed, failed, skipped, error (a setup/teardown failure), xfailed, xpassed."""
    duration: float
    phases: Mapping[str, float]
    started: float
    """Epoch seconds."""
    message: str = ""
    markers: tuple[str, ...] = ()
    matrices: tuple[MatrixRecord, ...] = ()
    steps: tuple[StepRecord, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "outcome": self.outcome,
            "duration": round(self.duration, 3),
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "started": self.started,
            "message": self.message,
            "markers": list(self.markers),
            "matrices": [m.to_dict() for m in self.matrices],
            "steps": [s.__dict__ for s in self.steps],
        }


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    started: float
    duration: float
    checks: tuple[CheckRecord, ...]
    about: tuple[str, ...] = ()
    """Lines about the run: the cluster and options, as pytest's header shows them."""

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.checks:
            out[c.outcome] = out.get(c.outcome, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "started": self.started,
            "duration": round(self.duration, 3),
            "about": list(self.about),
            "counts": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
        }


def write_json(path: Path, run: RunRecord) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def write_html(path: Path, run: RunRecord) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(run), encoding="utf-8")
    return path


# ---- HTML ------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin:1.5em 0 .3em}
.badge{display:inline-block;padding:0 .5em;border-radius:3px;color:#fff;font-size:.85em}
.passed{background:#2e7d32}.failed,.error{background:#c62828}.skipped{background:#757575}
.xfailed,.xpassed{background:#ef6c00}
pre{background:#f5f5f5;padding:.6em;overflow-x:auto;font-size:12px}
table.summary td,table.summary th{padding:.15em .6em;text-align:left}
table.grid{border-collapse:collapse;margin:.4em 0}
table.grid th{font-weight:normal;font-size:12px;padding:2px 4px;white-space:nowrap}
table.grid thead th{writing-mode:vertical-rl;transform:rotate(180deg);text-align:left}
table.grid td.cell{width:22px;height:22px;text-align:center;border:1px solid #fff;font-size:12px;color:#fff}
td.cell.ok{background:#43a047}td.cell.wrong{background:#e53935}
td.cell.unknown{background:#9e9e9e}td.cell.ignored{background:#e0e0e0;color:#777}
.legend span.cell{display:inline-block;width:14px;height:14px;vertical-align:middle;margin:0 .3em 0 1em}
.legend span.ok{background:#43a047}.legend span.wrong{background:#e53935}
.legend span.unknown{background:#9e9e9e}.legend span.ignored{background:#e0e0e0}
figure{margin:.5em 0 1em}figcaption{font-weight:600}
"""

_LEGEND = (
    '<div class="legend">'
    '<span class="cell ok"></span>as expected'
    '<span class="cell wrong"></span>wrong (the network answered otherwise)'
    '<span class="cell unknown"></span>unknown (probe error: could not ask)'
    '<span class="cell ignored"></span>not compared'
    " &mdash; cell text: observed <code>.</code> connected, <code>X</code> blocked, <code>?</code> unknown;"
    " hover a cell for the verdict and the command that reproduces it"
    "</div>"
)

_WANT = {True: "connected", False: "blocked", None: "unknown"}


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def cell_title(matrix: MatrixRecord, src: str, dst: str) -> str:
    """The tooltip: the cell, expected vs observed, the probe's verdict and how to reproduce it."""
    want: Cell = matrix.comparison.expected.get(src, dst)
    got: Cell = matrix.comparison.observed.get(src, dst)
    text = f"{src} -> {dst}: expected {_WANT[want]}, observed {_WANT[got]} ({matrix.state(src, dst)})"
    rec = matrix.cells.get((src, dst))
    if rec is not None:
        text += f"\nverdict: {rec.verdict}" + (f": {rec.detail}" if rec.detail else "")
        if rec.output:
            text += f"\nanswer: {rec.output}"
        text += f"\nreproduce: {rec.command}"
    return text


def render_matrix(matrix: MatrixRecord) -> str:
    observed = matrix.comparison.observed
    head = "".join(f'<th scope="col">{_e(d)}</th>' for d in observed.tos)
    rows = []
    for src in observed.froms:
        cells = "".join(
            f'<td class="cell {matrix.state(src, dst)}" title="{_e(cell_title(matrix, src, dst))}">'
            f"{_e(symbol(observed.get(src, dst)))}</td>"
            for dst in observed.tos
        )
        rows.append(f'<tr><th scope="row">{_e(src)}</th>{cells}</tr>')
    timing = f", {matrix.rounds} round(s) in {matrix.elapsed:.1f}s" if matrix.cells else ""
    return (
        f'<figure class="matrix" data-name="{_e(matrix.name)}">'
        f"<figcaption>{_e(matrix.name)}: {_e(matrix.comparison.summary())}{_e(timing)}</figcaption>"
        f'<table class="grid"><thead><tr><th>from \\ to</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>{_LEGEND}</figure>"
    )


def _render_check(check: CheckRecord, anchor: str) -> str:
    parts = [
        f'<section class="check" id="{anchor}"><h2><span class="badge {_e(check.outcome)}">'
        f"{_e(check.outcome)}</span> {_e(check.nodeid)}</h2>",
        "<div>" + _e(", ".join(f"{k} {v:.2f}s" for k, v in check.phases.items())) + "</div>",
    ]
    if check.steps:
        steps = ", ".join(f"{s.name} {s.seconds:.2f}s" for s in check.steps)
        parts.append(f"<div>steps: {_e(steps)}</div>")
    parts += [render_matrix(m) for m in check.matrices]
    if check.message:
        parts.append(f"<pre>{_e(check.message)}</pre>")
    parts.append("</section>")
    return "".join(parts)


def render_html(run: RunRecord) -> str:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(run.counts().items())) or "no checks"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(run.started))
    rows = "".join(
        f'<tr><td><span class="badge {_e(c.outcome)}">{_e(c.outcome)}</span></td>'
        f'<td><a href="#c{i}">{_e(c.nodeid)}</a></td><td>{c.duration:.2f}s</td>'
        f"<td>{len(c.matrices)}</td></tr>"
        for i, c in enumerate(run.checks)
    )
    about = "".join(f"<div>{_e(line)}</div>" for line in run.about)
    body = "".join(_render_check(c, f"c{i}") for i, c in enumerate(run.checks))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>knetcheck run {_e(run.run_id)}</title><style>{_CSS}</style></head><body>"
        f"<h1>knetcheck run {_e(run.run_id)}</h1>"
        f"<div>started {_e(stamp)}, {run.duration:.1f}s, {_e(counts)}</div>{about}"
        '<table class="summary"><thead><tr><th>outcome</th><th>check</th><th>time</th><th>matrices</th>'
        f"</tr></thead><tbody>{rows}</tbody></table>{body}</body></html>\n"
    )

