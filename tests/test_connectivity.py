"""Connectivity checks over a fake channel: one sweep, re-probing wrong cells, judging, failure text."""

from __future__ import annotations

from collections import Counter

import pytest

from suites.connectivity import Check, recheck_right_cells, responder_is, run_checks, source_ip_is
from suites.probe import PodRef, ProbeJob, ProbeKind
from suites.progress import LogProgress
from suites.truthtable import TruthTable
from suites.verdict import ProbeResult, Verdict

PODS = {"w1/a": "10.244.1.2", "w2/a": "10.244.2.2"}


def ref(key: str) -> PodRef:
    return PodRef("ns", "pod-" + key.replace("/", "-"), "netexec")


def job(src: str, dst: str, kind: ProbeKind = ProbeKind.CONNECT, request: str = "hostname") -> ProbeJob:
    return ProbeJob(ref(src), PODS[dst], 8080, kind=kind, request=request)


class FakeChannel:
    """Answers from a table keyed by (source pod, target IP); counts how often each was asked."""

    def __init__(self, answers: dict[tuple[str, str], list[ProbeResult]]) -> None:
        self.answers = answers
        self.asked: Counter[tuple[str, str]] = Counter()

    def run(self, job: ProbeJob) -> ProbeResult:
        key = (job.source.name, job.host)
        self.asked[key] += 1
        seq = self.answers.get(key, [ProbeResult(Verdict.CONNECTED, "", f"repro {key}", 0.0)])
        return seq[min(self.asked[key], len(seq)) - 1]

    def close(self) -> None:
        pass


def all_pairs(name: str, **kw: object) -> Check:
    keys = list(PODS)
    return Check(name, TruthTable.filled(keys), {(s, d): job(s, d) for s in keys for d in keys}, **kw)  # type: ignore[arg-type]


def test_a_cell_that_heals_is_re_probed_alone_and_passes() -> None:
    late = [ProbeResult(Verdict.TIMEOUT, "TIMEOUT", "r", 1.0), ProbeResult(Verdict.CONNECTED, "", "r", 0.1)]
    channel = FakeChannel({("pod-w1-a", PODS["w2/a"]): late})
    [outcome] = run_checks(channel, [all_pairs("tcp")], timeout=10, interval=0.01, progress=LogProgress())
    assert outcome.ok and outcome.rounds == 2
    assert outcome.retried == (("w1/a", "w2/a"),)
    assert channel.asked[("pod-w1-a", PODS["w2/a"])] == 2 and channel.asked[("pod-w2-a", PODS["w1/a"])] == 1


def test_a_broken_cell_fails_with_matrices_and_a_reproduce_command() -> None:
    repro = "kubectl exec -n ns pod-w2-a -c netexec -- /agnhost connect 10.244.1.2:8080 --timeout=1s"
    dead = [ProbeResult(Verdict.TIMEOUT, "TIMEOUT", repro, 1.0)]
    channel = FakeChannel({("pod-w2-a", PODS["w1/a"]): dead})
    checks = [all_pairs("first"), all_pairs("second")]
    outcomes = run_checks(channel, checks, timeout=0.05, interval=0.01, progress=LogProgress())
    assert [o.ok for o in outcomes] == [False, False]
    message = outcomes[0].failure_message()
    assert message.startswith("first: 3/4 right, 1 wrong, 0 unknown\nexpected:\n")
    for part in ("observed:", "comparison:", "w2/a -> w1/a: expected allowed, observed BLOCKED",
                 "verdict timeout: TIMEOUT", f"reproduce: {repro}"):
        assert part in message
    diff = message.split("comparison:\n")[1].splitlines()
    assert diff[2].split() == ["w2/a", "X", "."]


def test_probe_errors_are_unknown_not_blocked() -> None:
    err = [ProbeResult(Verdict.PROBE_ERROR, "API server answered 503", "r", 0.0)]
    channel = FakeChannel({("pod-w1-a", PODS["w1/a"]): err})
    [outcome] = run_checks(channel, [all_pairs("tcp")], timeout=0.05, interval=0.01, progress=LogProgress())
    assert not outcome.ok
    assert outcome.comparison.wrong == () and len(outcome.comparison.unknown) == 1


def test_source_ip_judge_fails_a_nated_connection() -> None:
    keys = list(PODS)
    jobs = {(s, d): job(s, d, ProbeKind.DIAL, "clientip") for s in keys for d in keys}
    answers = {
        ("pod-w1-a", PODS["w2/a"]): [ProbeResult(Verdict.CONNECTED, "", "r", 0.0, "172.18.0.3:4242")],
        ("pod-w2-a", PODS["w1/a"]): [ProbeResult(Verdict.CONNECTED, "", "r", 0.0, "10.244.2.2:5151")],
        ("pod-w1-a", PODS["w1/a"]): [ProbeResult(Verdict.CONNECTED, "", "r", 0.0, "10.244.1.2:1")],
        ("pod-w2-a", PODS["w2/a"]): [ProbeResult(Verdict.CONNECTED, "", "r", 0.0, "10.244.2.2:2")],
    }
    sources = {(s, d): PODS[s] for s in keys for d in keys}
    check = Check("src ip", TruthTable.filled(keys), jobs, source_ip_is(sources))
    [outcome] = run_checks(FakeChannel(answers), [check], timeout=0.05, interval=0.01, progress=LogProgress())
    assert [(m.src, m.dst) for m in outcome.comparison.wrong] == [("w1/a", "w2/a")]
    assert "(answered '172.18.0.3:4242')" in outcome.failure_message()


def test_responder_judge_fails_an_answer_from_the_wrong_pod() -> None:
    keys = list(PODS)
    jobs = {(s, d): job(s, d, ProbeKind.DIAL) for s in keys for d in keys}
    names = {(s, d): "pod-" + d.replace("/", "-") for s in keys for d in keys}
    answers = {(ref(s).name, PODS[d]): [ProbeResult(Verdict.CONNECTED, "", "r", 0.0, names[(s, d)])]
               for s in keys for d in keys}
    answers[("pod-w1-a", PODS["w2/a"])] = [ProbeResult(Verdict.CONNECTED, "", "r", 0.0, "someone-else")]
    check = Check("udp", TruthTable.filled(keys), jobs, responder_is(names))
    [outcome] = run_checks(FakeChannel(answers), [check], timeout=0.05, interval=0.01, progress=LogProgress())
    assert [(m.src, m.dst) for m in outcome.comparison.wrong] == [("w1/a", "w2/a")]


def test_jobs_outside_the_table_are_rejected() -> None:
    with pytest.raises(ValueError, match="jobs for cells not in the table"):
        Check("x", TruthTable.filled(["w1/a"]), {("w1/a", "w2/a"): job("w1/a", "w2/a")})


def test_a_recheck_finds_a_cell_a_late_rule_broke_and_leaves_known_wrong_cells_alone() -> None:
    # w1/a -> w2/a was right in the first sweep, then a late rule blocked it; w2/a -> w1/a was
    # wrong all along.
    late = [ProbeResult(Verdict.CONNECTED, "", "r", 0.1), ProbeResult(Verdict.TIMEOUT, "TIMEOUT", "r", 1.0)]
    dead = [ProbeResult(Verdict.TIMEOUT, "TIMEOUT", "r", 1.0)]
    channel = FakeChannel({("pod-w1-a", PODS["w2/a"]): late, ("pod-w2-a", PODS["w1/a"]): dead})
    first = run_checks(channel, [all_pairs("tcp")], timeout=0.05, interval=0.01, progress=LogProgress())
    assert first[0].bad_pairs == {("w2/a", "w1/a")}
    asked_dead = channel.asked[("pod-w2-a", PODS["w1/a"])]

    [settled] = recheck_right_cells(channel, first, timeout=0.05, interval=0.01, progress=LogProgress())
    assert settled.bad_pairs == {("w2/a", "w1/a"), ("w1/a", "w2/a")}
    assert settled.failure_message().startswith("tcp: 2/4 right, 2 wrong, 0 unknown")
    assert channel.asked[("pod-w2-a", PODS["w1/a"])] == asked_dead  # a known wrong cell is not probed again
    assert channel.asked[("pod-w1-a", PODS["w1/a"])] == 2  # a right cell is probed once more


def test_a_recheck_of_a_check_without_right_cells_probes_nothing() -> None:
    dead = [ProbeResult(Verdict.TIMEOUT, "TIMEOUT", "r", 1.0)]
    channel = FakeChannel({(f"pod-{s.replace('/', '-')}", PODS[d]): dead for s in PODS for d in PODS})
    first = run_checks(channel, [all_pairs("tcp")], timeout=0.05, interval=0.01, progress=LogProgress())
    before = sum(channel.asked.values())
    assert recheck_right_cells(channel, first, timeout=0.05, progress=LogProgress()) == first
    assert sum(channel.asked.values()) == before
