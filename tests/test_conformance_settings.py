"""The conformance suite's numeric knobs: read from the environment with their defaults, and a bad
value stops the run at start-up with one line naming the knob and what to give."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clusters.errors import UsageProblem
from suites.conformance import conftest as conf

REPO = Path(__file__).resolve().parents[1]


def test_defaults_and_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in conf.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert conf.converge_timeout() == 30.0
    assert conf.setting(conf.NETPOL_EXAMPLES_ENV) == 8
    monkeypatch.setenv(conf.INGRESS_TIMEOUT_ENV, "2.5")
    assert conf.setting(conf.INGRESS_TIMEOUT_ENV) == 2.5


@pytest.mark.parametrize("raw", ["x", "0", "-3"])
def test_bad_values_are_one_line(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(conf.CONVERGE_TIMEOUT_ENV, raw)
    with pytest.raises(UsageProblem) as err:
        conf.converge_timeout()
    want = f"KNETCHECK_CONVERGE_TIMEOUT={raw!r}: give the re-probe deadline in seconds, e.g. 30"
    assert str(err.value) == want


def test_a_bad_value_stops_the_run_before_any_cluster_work() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KNETCHECK_"))}
    env["KNETCHECK_NETPOL_SHRINK_BUDGET"] = "soon"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "suites/conformance", "--cluster=lab",
         "--collect-only", "-q"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
    assert result.returncode == 4, lines
    assert lines == [
        "ERROR: KNETCHECK_NETPOL_SHRINK_BUDGET='soon': "
        "give the seconds allowed for shrinking a failure, e.g. 120"
    ]
