"""Connectivity checks as data: an expected truth table, one probe job per cell, and how to judge.

A test states a few checks; :func:`run_checks` probes every cell of all of them in ONE concurrent
sweep (a step costs about one probe timeout), re-probes only the wrong cells until a deadline
(:func:`suites.probe.converge`), and returns one :class:`Outcome` per check. An outcome's failure
message is the expected, observed and diff matrices, then one line per wrong cell with the
verdict, the evidence and a command a person can paste to reproduce it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from suites.probe import ProbeChannel, ProbeJob, ProbeKind, Prober, converge, step_summary
from suites.progress import Progress
from suites.truthtable import Cell, Comparison, TruthTable
from suites.verdict import ProbeResult

Pair = tuple[str, str]
Judge = Callable[[Pair, ProbeJob, ProbeResult], Cell]


def reachability(_pair: Pair, _job: ProbeJob, result: ProbeResult) -> Cell:
    """Connected, blocked, or unknown (probe error): the default reading of a probe."""
    return result.reachable


def responder_is(expected: Mapping[Pair, str]) -> Judge:
    """Reachable AND answered by the expected pod (a /dial hostname): a connection that lands on
    the wrong pod is not the pod network working."""

    def judge(pair: Pair, job: ProbeJob, result: ProbeResult) -> Cell:
        cell = result.reachable
        if cell is True and job.kind is ProbeKind.DIAL and pair in expected:
            return result.output == expected[pair]
        return cell

    return judge


def source_ip_is(sources: Mapping[Pair, str]) -> Judge:
    """Reachable AND the target saw the source's own IP (``/dial … request=clientip`` answers
    ``ip:port`` as the target saw it): False means the pod network NATs pod-to-pod traffic."""

    def judge(pair: Pair, _job: ProbeJob, result: ProbeResult) -> Cell:
        cell = result.reachable
        if cell is not True:
            return cell
        seen = result.output.rsplit(":", 1)[0].strip("[]")
        return seen == sources[pair]

    return judge


@dataclass(frozen=True)
class Check:
    name: str
    expected: TruthTable
    jobs: Mapping[Pair, ProbeJob]
    """One job per cell of ``expected`` that is probed; a cell without a job must be None."""
    judge: Judge = reachability

    def __post_init__(self) -> None:
        cells = {(s, d) for s, d, _ in self.expected.cells()}
        extra = sorted(set(self.jobs) - cells)
        if extra:
            raise ValueError(f"check {self.name!r}: jobs for cells not in the table: {extra[:3]}")


@dataclass(frozen=True)
class Outcome:
    check: Check
    comparison: Comparison
    results: Mapping[Pair, ProbeResult]
    rounds: int
    elapsed: float
    retried: tuple[Pair, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.comparison.ok

    @property
    def bad_pairs(self) -> frozenset[Pair]:
        """The wrong and unknown cells."""
        return frozenset((m.src, m.dst) for m in (*self.comparison.wrong, *self.comparison.unknown))

    def failure_message(self) -> str:
        lines = [self.comparison.render(self.check.name)]
        bad = [*self.comparison.wrong, *self.comparison.unknown]
        if bad:
            lines.append(f"wrong cells ({len(bad)}), after {self.rounds} round(s) in {self.elapsed:.1f}s:")
        for m in bad:
            result = self.results.get((m.src, m.dst))
            lines.append(f"  {m.describe()}")
            if result is not None:
                detail = f": {result.detail}" if result.detail else ""
                output = f" (answered {result.output!r})" if result.output else ""
                lines.append(f"    verdict {result.verdict.value}{detail}{output}")
                lines.append(f"    reproduce: {result.command}")
        return "\n".join(lines)


Verify = Callable[..., list["Outcome"]]
"""The conformance suite's ``verify`` fixture: ``verify(*checks)`` runs, reports, fails on a wrong cell."""


def _observed(check: Check, results: Mapping[Pair, ProbeResult]) -> TruthTable:
    def cell(src: str, dst: str) -> Cell:
        pair = (src, dst)
        if pair not in check.jobs:
            return check.expected.get(src, dst)
        return check.judge(pair, check.jobs[pair], results[pair])

    return TruthTable.from_function(check.expected.froms, check.expected.tos, cell)


class _Counting:
    """A channel that ticks a progress step after every probe."""

    def __init__(self, inner: ProbeChannel, tick: Callable[[], None]) -> None:
        self.inner = inner
        self.tick = tick

    def run(self, job: ProbeJob) -> ProbeResult:
        try:
            return self.inner.run(job)
        finally:
            self.tick()

    def close(self) -> None:
        """The inner channel belongs to the caller."""


def run_checks(
    channel: ProbeChannel,
    checks: Sequence[Check],
    *,
    timeout: float,
    progress: Progress,
    interval: float = 1.0,
    max_workers: int = 64,
) -> list[Outcome]:
    """Probe every cell of every check in one sweep; re-probe wrong cells until ``timeout``."""
    jobs: dict[tuple[int, str, str], ProbeJob] = {
        (i, s, d): job for i, check in enumerate(checks) for (s, d), job in check.jobs.items()
    }

    def is_right(key: tuple[int, str, str], result: ProbeResult) -> bool:
        i, s, d = key
        check = checks[i]
        cell = check.judge((s, d), check.jobs[(s, d)], result)
        return cell is not None and cell == check.expected.get(s, d)

    title = " + ".join(c.name for c in checks)
    started = time.monotonic()
    with progress.step(f"probing {title}", total=len(jobs)) as step:
        prober = Prober(_Counting(channel, step.advance), max_workers=max_workers)
        conv = converge(prober, jobs, is_right, timeout=timeout, interval=interval)
        step.note(step_summary(list(conv.results.values())) + (
            f", {len(conv.wrong)} still wrong after {conv.rounds} rounds" if conv.wrong else ""))
    elapsed = time.monotonic() - started
    retried = {k for round_ in conv.history for k in round_}
    return [
        _outcome(
            check,
            {(s, d): r for (j, s, d), r in conv.results.items() if j == i},
            conv.rounds,
            elapsed,
            {(s, d) for (j, s, d) in retried if j == i},
        )
        for i, check in enumerate(checks)
    ]


def _outcome(
    check: Check, results: Mapping[Pair, ProbeResult], rounds: int, elapsed: float, retried: set[Pair]
) -> Outcome:
    """Judge ``results`` against the check's table."""
    comparison = check.expected.compare(_observed(check, results))
    return Outcome(check, comparison, results, rounds, elapsed, tuple(sorted(retried)))


def recheck_right_cells(
    channel: ProbeChannel,
    outcomes: Sequence[Outcome],
    *,
    timeout: float,
    progress: Progress,
    interval: float = 1.0,
    max_workers: int = 64,
) -> list[Outcome]:
    """Probe again the cells a failing sweep found right, and merge: the wrong cells keep their results.

    A cell probed before a late rule landed (an over-blocking policy programmed a moment after the
    sweep) looks right and is never re-probed, and a failing step gets no confirming sweep, so
    its matrix would under-count what is broken (seen on a loaded lab: 23 of 24 blocked cells
    marked). Only the right cells are probed, once, and those that turned wrong are re-probed
    until ``timeout``; the cells already known wrong cost nothing more.
    """
    subsets = [
        replace(o.check, jobs={p: j for p, j in o.check.jobs.items() if p not in o.bad_pairs})
        for o in outcomes
    ]
    if not any(c.jobs for c in subsets):
        return list(outcomes)
    again = run_checks(
        channel, subsets, timeout=timeout, progress=progress, interval=interval, max_workers=max_workers
    )
    return [
        _outcome(
            first.check,
            {**first.results, **second.results},
            first.rounds + second.rounds,
            first.elapsed + second.elapsed,
            {*first.retried, *second.retried},
        )
        for first, second in zip(outcomes, again, strict=True)
    ]
