"""Repeated probes judged as a whole: "every request from this client lands on one backend",
"no request ever lands on the unready pod".

Such cells cannot go through :func:`suites.connectivity.run_checks`: re-probing a wrong cell until
it is right would let chance hide the fault (a third of retries land on the "right" backend by
luck). So each cell's job runs ``count`` times in a row (sequentially: session affinity is about
one client's successive connections; a failed request ends the cell's run, its outcome decided),
all cells at once, once, and the set of answers is judged.
The result is an ordinary :class:`~suites.connectivity.Outcome`, so failures print the same
expected/observed/diff matrices and a reproduce command per wrong cell, and reports draw them.
Run a converging reachability check first, so only the property under test can fail here.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from suites.connectivity import Check, Outcome, Pair
from suites.probe import ProbeChannel, ProbeJob, Prober, step_summary
from suites.progress import Progress
from suites.truthtable import Cell, TruthTable
from suites.verdict import ProbeResult, Verdict

SetJudge = Callable[[Pair, Sequence[ProbeResult]], Cell]


@dataclass(frozen=True)
class Sampled:
    name: str
    expected: TruthTable
    jobs: Mapping[Pair, ProbeJob]
    count: int
    judge: SetJudge

    def __post_init__(self) -> None:
        if self.count < 2:
            raise ValueError(f"sampled check {self.name!r}: count must be >= 2 to judge a set of answers")


def _network_cell(results: Sequence[ProbeResult]) -> Cell:
    """None if any probe could not ask, False if any request failed, True if all were answered."""
    cells = [r.reachable for r in results]
    if any(c is None for c in cells):
        return None
    return all(cells)


def one_responder(allowed: frozenset[str]) -> SetJudge:
    """Every request answered, all by the same pod, one of ``allowed`` (ClientIP affinity)."""

    def judge(_pair: Pair, results: Sequence[ProbeResult]) -> Cell:
        cell = _network_cell(results)
        if cell is not True:
            return cell
        names = {r.output for r in results}
        return len(names) == 1 and names <= allowed

    return judge


def responders_within(allowed: frozenset[str]) -> SetJudge:
    """Every request answered, each by one of ``allowed`` (never by an unready pod)."""

    def judge(_pair: Pair, results: Sequence[ProbeResult]) -> Cell:
        cell = _network_cell(results)
        if cell is not True:
            return cell
        return {r.output for r in results} <= allowed

    return judge


def summarize(results: Sequence[ProbeResult]) -> ProbeResult:
    """One result standing for a cell's requests: the first failure's verdict (else CONNECTED),
    who answered how often, and the command that repeats one request."""
    failed = next((r for r in results if r.verdict is not Verdict.CONNECTED), None)
    answers = Counter(r.output for r in results if r.verdict is Verdict.CONNECTED)
    tally = ", ".join(f"{name or '(empty)'} x{n}" for name, n in sorted(answers.items()))
    detail = f"{len(results)} requests answered by: {tally or 'nobody'}"
    if failed is not None:
        detail += f"; {step_summary(list(results))}; first failure: {failed.detail}"
    first = failed or results[0]
    return ProbeResult(
        first.verdict if failed else Verdict.CONNECTED,
        detail,
        first.command,
        sum(r.elapsed for r in results),
        tally,
    )


def run_sampled(
    channel: ProbeChannel, sampled: Sampled, *, progress: Progress, max_workers: int = 64
) -> Outcome:
    jobs = dict(sampled.jobs)
    prober = Prober(channel, max_workers=1)
    started = time.monotonic()
    with progress.step(f"sampling {sampled.name}", total=len(jobs) * sampled.count) as step:

        def cell(pair: Pair) -> list[ProbeResult]:
            out = []
            for i in range(sampled.count):
                out.append(prober.probe(jobs[pair]))
                step.advance()
                if out[-1].verdict is not Verdict.CONNECTED:  # the cell is decided: stop paying timeouts
                    step.advance(sampled.count - i - 1)
                    break
            return out

        pairs = list(jobs)
        with ThreadPoolExecutor(
            max_workers=max(1, min(len(pairs), max_workers)), thread_name_prefix="sample"
        ) as pool:
            runs = dict(zip(pairs, pool.map(cell, pairs), strict=True))
    cells = {pair: sampled.judge(pair, rs) for pair, rs in runs.items()}
    results = {pair: summarize(rs) for pair, rs in runs.items()}

    def observed(src: str, dst: str) -> Cell:
        return cells[(src, dst)] if (src, dst) in cells else sampled.expected.get(src, dst)

    table = TruthTable.from_function(sampled.expected.froms, sampled.expected.tos, observed)
    check = Check(sampled.name, sampled.expected, jobs, lambda pair, _job, _result: cells[pair])
    return Outcome(check, sampled.expected.compare(table), results, 1, time.monotonic() - started)
