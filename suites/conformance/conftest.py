"""Fixtures of the conformance suite: a probe topology per module, and ``verify`` to run checks on it.

The topology (probe pods on every schedulable node plus a hostNetwork stand-in per node) lives in
its own namespace labelled with the run id, for the whole module: pods take seconds to a minute
to become Ready, and every check of a module can share them. The namespace is deleted at module
end; the session's sweep catches it if the run dies first.

``KNETCHECK_CONVERGE_TIMEOUT`` (seconds, default 30; see :data:`SETTINGS`) bounds how long wrong
cells are re-probed: a healthy network settles well within it; a broken one fails after it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from clusters.errors import UsageProblem
from clusters.handle import Cluster
from suites import namespaces
from suites import topology as topo
from suites.connectivity import Check, Outcome, Verify, run_checks
from suites.progress import Progress
from suites.reports import Recorder

CONVERGE_TIMEOUT_ENV = "KNETCHECK_CONVERGE_TIMEOUT"
INGRESS_TIMEOUT_ENV = "KNETCHECK_INGRESS_TIMEOUT"
NETPOL_EXAMPLES_ENV = "KNETCHECK_NETPOL_EXAMPLES"
NETPOL_SHRINK_BUDGET_ENV = "KNETCHECK_NETPOL_SHRINK_BUDGET"
MAX_WORKERS = 64


@dataclass(frozen=True)
class Setting:
    default: float
    what: str
    """What to give, for the one-line error: "the re-probe deadline in seconds, e.g. 30"."""


SETTINGS = {
    CONVERGE_TIMEOUT_ENV: Setting(30.0, "the re-probe deadline in seconds, e.g. 30"),
    INGRESS_TIMEOUT_ENV: Setting(120.0, "seconds to wait for an Ingress address, e.g. 120"),
    NETPOL_EXAMPLES_ENV: Setting(8, "the number of generated policies per run, e.g. 8"),
    NETPOL_SHRINK_BUDGET_ENV: Setting(120.0, "the seconds allowed for shrinking a failure, e.g. 120"),
}
"""The suite's numeric knobs, all positive: checked once at start-up (:func:`pytest_configure`), so
a bad value is one usage line instead of a failure in every check that reads it."""


def setting(name: str) -> float:
    """The value of a :data:`SETTINGS` knob from the environment, its default when unset."""
    knob = SETTINGS[name]
    raw = os.environ.get(name, "")
    if not raw:
        return knob.default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise UsageProblem(f"{name}={raw!r}: give {knob.what}")
    return value


def converge_timeout() -> float:
    return setting(CONVERGE_TIMEOUT_ENV)


def pytest_configure(config: pytest.Config) -> None:
    for name in SETTINGS:
        try:
            setting(name)
        except UsageProblem as exc:
            raise pytest.UsageError(str(exc)) from None


@pytest.fixture(scope="module")
def topology(
    cluster: Cluster, run_id: str, progress: Progress, request: pytest.FixtureRequest
) -> Iterator[topo.Topology]:
    """Probe pods Ready on every node that admits them, deleted at module end."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    name = namespaces.namespace_name(run_id, module, request.node.nodeid)
    namespaces.create(cluster, name, run_id)
    plan = None
    try:
        nodes = topo.list_nodes(cluster)
        plan = topo.plan(name, run_id, nodes)
        if not any(not p.host_network for p in plan.pods):
            pytest.fail(f"no node admits probe pods: nodes {', '.join(n.name for n in nodes)} are all "
                        "tainted NoSchedule/NoExecute or cordoned", pytrace=False)
        try:
            deployed = topo.deploy(cluster, plan, progress)
        except topo.TopologyNotReady as exc:
            pytest.fail(str(exc), pytrace=False)
        yield deployed
    finally:
        try:
            if plan is not None:
                topo.delete(cluster, plan)
        finally:
            namespaces.delete(cluster, name)


@pytest.fixture(scope="module")
def probe_channel(cluster: Cluster, topology: topo.Topology) -> Iterator[topo.TopologyChannel]:
    channel = topo.TopologyChannel(cluster, topology, pool_size=MAX_WORKERS)
    try:
        yield channel
    finally:
        channel.close()


@pytest.fixture
def verify(probe_channel: topo.TopologyChannel, report: Recorder, progress: Progress) -> Verify:
    """``verify(*checks)``: probe every cell in one sweep, attach the matrices to the report, and
    fail with the expected/observed/diff matrices and a reproduce command per wrong cell."""

    def run(*checks: Check) -> list[Outcome]:
        outcomes = run_checks(probe_channel, checks, timeout=converge_timeout(), progress=progress,
                              max_workers=MAX_WORKERS)
        for outcome in outcomes:
            report.outcome(outcome)
        failed = [o for o in outcomes if not o.ok]
        if failed:
            pytest.fail("\n\n".join(o.failure_message() for o in failed), pytrace=False)
        return outcomes

    return run
