"""NetworkPolicy enforcement over the upstream matrix: namespaces x, y, z x pods a, b, c, ports 80/81.

The model (``suites.netpol.model``) is deployed once per module. Each test applies its policies
(plus the probe-channel companions), probes the 9x9 matrix per port/protocol (80/TCP and 81/UDP
for most cases; every port/protocol for port cases, generated cases, and everywhere with
``KNETCHECK_NETPOL_ALL_PORTS=1``; loopback cells are not probed) in one concurrent
sweep, re-probes wrong cells until the convergence deadline (policy programming takes time),
confirms with one more sweep, and compares with the ORACLE's tables computed from the live
objects. Then it deletes its policies and waits until every cell is open again, so no test
inherits another's state. A failure prints the policies as YAML, the expected, observed and diff
matrices per port/protocol, the oracle's reason and a reproduce command per wrong cell.

* ``test_case`` — the upstream case set as data (:mod:`suites.netpol.cases`); cases with a
  hand-written expectation also hold the oracle to it, on the live objects.
* ``test_generated_policies`` — Hypothesis-generated policies (:mod:`suites.netpol.generate`),
  ``KNETCHECK_NETPOL_EXAMPLES`` examples (default 8) per run, seed printed and honoured from
  ``--hypothesis-seed``; a failure is shrunk (for at most ``KNETCHECK_NETPOL_SHRINK_BUDGET``
  seconds) to a minimal policy, printed as YAML.

Self-test hook: ``KNETCHECK_INJECT_POLICY=<yaml file>`` names NetworkPolicies (model namespace
names, ``x``/``y``/``z``) that every step applies next to its own, behind the oracle's back. The
oracle does not know them, so any cell they change fails the step: this is how the suite's own
tests prove that it catches a policy nobody expected. Never set it in a real run.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings

from clusters.capabilities import Capability
from clusters.errors import UsageProblem
from clusters.handle import Cluster
from suites.conformance.conftest import (
    NETPOL_EXAMPLES_ENV,
    NETPOL_SHRINK_BUDGET_ENV,
    converge_timeout,
    setting,
)
from suites.connectivity import Outcome
from suites.netpol import cases as netpol_cases
from suites.netpol import live as netpol_live
from suites.netpol.generate import policy_sets
from suites.netpol.model import Model
from suites.netpol.oracle import Oracle
from suites.probe import ProxyChannel
from suites.progress import Progress
from suites.reports import Recorder
from suites.truthtable import PortProtocol, TruthTable

pytestmark = [pytest.mark.conformance, pytest.mark.requires("network-policy")]
log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 1.0
"""Seconds for ``agnhost connect``: a policy drop shows as TIMEOUT after this long."""
MAX_WORKERS = 144
"""Probes in flight at once: a two-table step (2 x 72 non-loopback pairs) in one wave, so blocked
cells cost one probe timeout together; four-table steps take two waves."""
ALL_PORTS_ENV = "KNETCHECK_NETPOL_ALL_PORTS"
INJECT_ENV = "KNETCHECK_INJECT_POLICY"
MAX_REASONS = 12


class MatrixMismatch(AssertionError):
    """A step's observed matrix differs from the expectation (raised inside Hypothesis examples)."""


def injected_policies(model: Model, pod_ips: Mapping[str, str]) -> list[dict[str, Any]]:
    """The self-test hook's policies (see the module docstring), materialized for this run."""
    path = os.environ.get(INJECT_ENV, "")
    if not path:
        return []
    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise UsageProblem(f"{INJECT_ENV}={path}: cannot read NetworkPolicy YAML ({exc})") from None
    if not docs or any(d.get("kind") != "NetworkPolicy" for d in docs):
        raise UsageProblem(f"{INJECT_ENV}={path}: the file must hold NetworkPolicy documents only")
    return [netpol_cases.materialize(d, model, pod_ips) for d in docs]


def policies_yaml(policies: Sequence[Mapping[str, Any]]) -> str:
    """YAML a person can ``kubectl apply``: server-set fields (uid, resourceVersion, status) left out."""
    clean = []
    for pol in policies:
        meta = pol.get("metadata") or {}
        kept = {k: meta[k] for k in ("name", "namespace", "labels") if k in meta}
        clean.append(
            {
                "apiVersion": pol.get("apiVersion"),
                "kind": pol.get("kind"),
                "metadata": kept,
                "spec": pol.get("spec") or {},
            }
        )
    return yaml.safe_dump_all(clean, sort_keys=False).rstrip()


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def netpol_model(cluster: Cluster, run_id: str, progress: Progress) -> Iterator[netpol_live.Live]:
    """The 3 x 3 model Ready on the cluster, deleted at module end.

    Gated here as well as by the marker: a module fixture is set up before the plugin's gate
    fixture, and a cluster without policy enforcement must not pay for nine pods first."""
    reason = cluster.missing(Capability.NETWORK_POLICY)
    if reason:
        pytest.skip(reason)
    protocols = ("TCP", "UDP", "SCTP") if cluster.has(Capability.SCTP) else ("TCP", "UDP")
    model = Model(run_id, protocols=protocols)
    try:
        try:
            live = netpol_live.deploy(cluster, model, progress)
        except netpol_live.ModelNotReady as exc:
            pytest.fail(str(exc), pytrace=False)
        yield live
    finally:
        netpol_live.delete(cluster, model)


@pytest.fixture(scope="module")
def netpol_channel(cluster: Cluster, netpol_model: netpol_live.Live) -> Iterator[ProxyChannel]:
    channel = ProxyChannel(cluster, pool_size=MAX_WORKERS)
    try:
        yield channel
    finally:
        channel.close()


class Stepper:
    """Runs one policy step on the live model and says what went wrong (or nothing)."""

    def __init__(self, live: netpol_live.Live, channel: ProxyChannel, progress: Progress, report: Recorder):
        self.live = live
        self.channel = channel
        self.progress = progress
        self.report = report
        self.deadline = converge_timeout()

    def _measure(
        self, title: str, expected: Mapping[PortProtocol, TruthTable], confirm: bool
    ) -> netpol_live.StepResult:
        step_checks = netpol_live.checks(self.live, title, expected, CONNECT_TIMEOUT)
        return netpol_live.measure(
            self.channel,
            step_checks,
            deadline=self.deadline,
            progress=self.progress,
            max_workers=MAX_WORKERS,
            confirm=confirm,
        )

    def run(
        self,
        name: str,
        policies: Sequence[Mapping[str, Any]],
        hand: netpol_cases.Hand | None = None,
        *,
        probes: Sequence[PortProtocol] | None = None,
        attach_passing: bool = True,
    ) -> str | None:
        """Apply, converge, compare; always clean up and wait until the matrix is open again."""
        live, model = self.live, self.live.model
        objs = [netpol_cases.materialize(dict(p), model, live.pod_ips) for p in policies]
        applied: list[dict[str, Any]] = []
        applied_injected: list[dict[str, Any]] = []
        problem: str | None = None
        started = time.monotonic()
        timings: dict[str, float] = {}
        try:
            with self.report.step(f"{name}: apply"):
                applied = netpol_live.create_policies(live.cluster, objs)
                injected = injected_policies(model, live.pod_ips)
                applied_injected = netpol_live.create_policies(live.cluster, injected)
                netpol_live.sync_probe_channel(live)
            timings["apply"] = time.monotonic() - started
            oracle = netpol_live.live_oracle(live, applied)
            expected = model.expected(oracle)
            probed = {pp: t for pp, t in expected.items() if probes is None or pp in probes or _all_ports()}
            with self.report.step(f"{name}: probe"):
                result = self._measure(name, probed, confirm=True)
            timings.update(result.timings)
            for outcome in result.outcomes:
                if attach_passing or not outcome.ok:
                    self.report.outcome(outcome)
            hand_problems = self._check_hand(name, expected, hand)
            if not result.ok or hand_problems:
                problem = self._message(name, applied, oracle, result, hand_problems)
        finally:
            mark = time.monotonic()
            with self.report.step(f"{name}: clean up and reopen"):
                netpol_live.delete_policies(live.cluster, [*applied, *applied_injected])
                netpol_live.sync_probe_channel(live)
                everyone = {
                    pp: t
                    for pp, t in model.expected(netpol_live.live_oracle(live, [])).items()
                    if probes is None or pp in probes or _all_ports()
                }
                reopened = self._measure(f"{name}, after deleting its policies", everyone, confirm=False)
            timings["cleanup+reopen"] = time.monotonic() - mark
            log.info(
                "netpol step %s: %s (total %.2fs)",
                name,
                ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()),
                time.monotonic() - started,
            )
        if not reopened.ok:
            failed = [o.failure_message() for o in reopened.outcomes if not o.ok]
            reopen_problem = (
                "the matrix did not open again after deleting the step's policies:\n" + "\n\n".join(failed)
            )
            problem = f"{problem}\n\n{reopen_problem}" if problem else reopen_problem
        return problem

    @staticmethod
    def _check_hand(
        name: str, expected: Mapping[PortProtocol, TruthTable], hand: netpol_cases.Hand | None
    ) -> list[str]:
        if hand is None:
            return []
        out = []
        for pp, table in expected.items():
            want = hand(pp, TruthTable.filled(table.froms, table.tos, True))
            comparison = want.compare(table, ignore_loopback=True)
            if comparison.wrong or comparison.unknown:
                out.append(
                    f"ORACLE DISAGREES with the hand-written expectation of {name} on {pp} "
                    f"(hand = expected, oracle = observed):\n{comparison.render(str(pp))}"
                )
        return out

    def _message(
        self,
        name: str,
        applied: Sequence[Mapping[str, Any]],
        oracle: Oracle,
        result: netpol_live.StepResult,
        hand_problems: Sequence[str],
    ) -> str:
        model = self.live.model
        failed: list[Outcome] = [o for o in result.outcomes if not o.ok]
        lines = [
            f"netpol case {name}: {len(failed)} of {len(result.outcomes)} port/protocol matrices wrong"
            + (f", {len(hand_problems)} oracle/hand disagreement(s)" if hand_problems else ""),
            "policies applied (kubectl apply -f - reproduces them):",
            policies_yaml(applied),
            "",
        ]
        lines += [*hand_problems, *(o.failure_message() for o in failed)]
        reasons = []
        for outcome in failed:
            pp = PortProtocol(*_pp_of(outcome.check.name))
            for m in (*outcome.comparison.wrong, *outcome.comparison.unknown):
                decision = oracle.decide(
                    model.cluster_key(m.src), model.cluster_key(m.dst), pp.port, pp.protocol
                )
                reasons.append(f"  {m.src} -> {m.dst} {pp}: {decision.reason}")
        if reasons:
            lines += ["", "why the oracle expects what it expects:", *reasons[:MAX_REASONS]]
            if len(reasons) > MAX_REASONS:
                lines.append(f"  … {len(reasons) - MAX_REASONS} more")
        known = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in applied}
        others = [
            f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            for p in netpol_live.live_policies(self.live)
            if (p["metadata"]["namespace"], p["metadata"]["name"]) not in known
            and p["metadata"]["name"] != "knetcheck-probe-channel"
        ]
        if others:
            lines.append(
                f"other policies in the model namespaces, not in the expectation: {', '.join(others)}"
            )
        return "\n".join(lines)


def _all_ports() -> bool:
    return os.environ.get(ALL_PORTS_ENV, "") not in ("", "0")


def _pp_of(check_name: str) -> tuple[int, str]:
    """``<title>: 80/TCP`` -> (80, "TCP")."""
    port, _, protocol = check_name.rsplit(": ", 1)[1].partition("/")
    return int(port), protocol


@pytest.fixture
def stepper(
    netpol_model: netpol_live.Live, netpol_channel: ProxyChannel, progress: Progress, report: Recorder
) -> Stepper:
    return Stepper(netpol_model, netpol_channel, progress, report)


# ---- the case set ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", netpol_cases.CASES, ids=netpol_cases.case_ids())
def test_case(case: netpol_cases.Case, stepper: Stepper) -> None:
    problem = stepper.run(case.name, case.policies, case.hand, probes=case.probes)
    if problem:
        pytest.fail(problem, pytrace=False)


# ---- generated cases -------------------------------------------------------------------------


def _seed(config: pytest.Config) -> int | str:
    given_seed = config.getoption("hypothesis_seed", None)
    if given_seed is None:
        return random.SystemRandom().getrandbits(32)
    text = str(given_seed)
    return int(text) if text.isdigit() else text


def test_generated_policies(stepper: Stepper, pytestconfig: pytest.Config) -> None:
    run_seed = _seed(pytestconfig)
    examples = int(setting(NETPOL_EXAMPLES_ENV))
    budget = setting(NETPOL_SHRINK_BUDGET_ENV)
    log.info("hypothesis seed %s (rerun: --hypothesis-seed=%s), %d examples", run_seed, run_seed, examples)
    failures: dict[str, str] = {}
    first_failure: list[float] = []
    count = [0]

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @seed(run_seed)
    @given(policies=policy_sets())
    def example(policies: list[dict[str, Any]]) -> None:
        text = policies_yaml(policies)
        problem = failures.get(text)
        if problem is None:
            if first_failure and time.monotonic() - first_failure[0] > budget:
                return  # shrink budget spent: untried candidates pass, tried failures still fail
            count[0] += 1
            found = stepper.run(f"generated #{count[0]}", policies, attach_passing=False)
            if found is None:
                return
            problem = failures[text] = f"{found}\n\nthe generated policies (model names):\n{text}"
            first_failure[:1] = first_failure[:1] or [time.monotonic()]
        raise MatrixMismatch(
            problem
        )  # one raise site: Hypothesis tells failures apart by where they came from

    rerun = f"hypothesis seed {run_seed}: rerun this test with --hypothesis-seed={run_seed}"
    failure = ""
    try:
        example()
    except MatrixMismatch as exc:
        failure = str(exc)  # failed outside the handler, so the report is not printed twice as a chain
    except Exception as exc:
        exc.add_note(rerun)
        raise
    if failure:
        pytest.fail(f"{failure}\n\n{rerun} ({count[0]} steps run, shrinking included)", pytrace=False)
