"""Chaos session setup: before any experiment, revert every fault an earlier run left behind.

A run killed mid-experiment (SIGKILL, a lost CI runner) never plays its rollbacks; its inject
saved the original in the cluster first, so this sweep can put it back from a new process.
"""

from __future__ import annotations

import logging

import pytest

from clusters.handle import Cluster
from faults import sweep

log = logging.getLogger(__name__)


@pytest.fixture(scope="session", autouse=True)
def swept_faults(cluster: Cluster, pytestconfig: pytest.Config) -> list[sweep.Reverted]:
    """Revert leftover faults of any run, once per session, before the first experiment."""
    reverted = sweep.revert_all(cluster)
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    for item in reverted:
        line = f"knetcheck: reverted a fault left by an earlier run: {item}"
        log.warning("%s", line)
        if reporter is not None:
            reporter.write_line(line)
    failed = [r for r in reverted if r.error]
    if failed:
        pytest.exit("knetcheck: could not revert leftover faults, the cluster is not in a known state: "
                    + "; ".join(str(r) for r in failed), returncode=pytest.ExitCode.INTERNAL_ERROR)
    return reverted
