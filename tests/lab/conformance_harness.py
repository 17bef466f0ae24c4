"""Running the conformance suite end to end on the embedded lab, as a user runs it: ``pytest
suites/conformance/… --cluster=lab`` in a subprocess, against a lab under its own root in /run.

Either the suite starts the lab itself (a bare root from :func:`lab_root_fixture`; it must stop it
again) or it attaches to one a test started with :func:`own_lab` (its own ``kncl-t-<hex>-``
prefix, so it runs beside anyone else's lab; the suite must leave it running). Then the test reads
what the suite wrote: its output and ``reports/results.json``.

Shared by the ``test_conformance_*_lab`` modules.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clusters.lab import control
from clusters.lab.netns import list_netns
from clusters.lab.node.underlay import owned_by
from clusters.proc import CommandResult, run

SUITE_TIMEOUT = 600.0
CONFORMANCE = "suites/conformance"
POD_NETWORK = f"{CONFORMANCE}/test_pod_network.py"
SERVICES = f"{CONFORMANCE}/test_services.py"
DNS = f"{CONFORMANCE}/test_dns.py"
NETPOL = f"{CONFORMANCE}/test_netpol.py"
INGRESS = f"{CONFORMANCE}/test_ingress.py"


BREAK_CONVERGE = {"KNETCHECK_CONVERGE_TIMEOUT": "15"}
"""The re-probe deadline for break-it runs. It must outlast several probe rounds: a round waits
for the broken node's cells to time out (~5 s), and healthy nodes' kube-proxies may program a
just-created Service only after the first round (minSyncPeriod 1 s, a loaded CI machine). With
5 s there was one round, and a healthy node probed too early stayed wrong (seen in CI)."""

def run_suite(
    root: Path,
    tmp: Path,
    *args: str,
    extra_env: dict[str, str] | None = None,
    timeout: float = SUITE_TIMEOUT,
) -> CommandResult:
    """``pytest <args> --cluster=lab`` with the lab at ``root``, reports in ``tmp/reports``, its
    state in ``tmp/state`` and its whole output kept in ``tmp/pytest.out``. The caller's
    ``PYTEST_*``/``KNETCHECK_*`` settings are not passed on: only ``extra_env``."""
    env = {key: v for key, v in os.environ.items() if not key.startswith(("PYTEST_", "KNETCHECK_"))}
    env.update({"KNETCHECK_LAB_DIR": str(root), "KNETCHECK_STATE_DIR": str(tmp / "state")})
    env.update(extra_env or {})
    argv = [
        sys.executable,
        "-m",
        "pytest",
        *args,
        "--cluster=lab",
        f"--reports-dir={tmp / 'reports'}",
        "-p",
        "no:cacheprovider",
        "--durations=0",
        "-rA",
    ]
    result = run(argv, timeout=timeout, env=env, check=False)
    (tmp / "pytest.out").write_text(result.stdout + result.stderr)
    return result


def output(result: CommandResult) -> str:
    return result.stdout + result.stderr


def results(tmp: Path) -> dict[str, Any]:
    """The run's ``reports/results.json``."""
    doc: dict[str, Any] = json.loads((tmp / "reports" / "results.json").read_text())
    return doc


def checks(tmp: Path) -> list[dict[str, Any]]:
    """Every check in ``results.json`` (a collection error included, as ``(collection)``)."""
    return list(results(tmp)["checks"])


def checks_by_name(tmp: Path, module: str | None = None) -> dict[str, dict[str, Any]]:
    """The checks of ``module`` (a path like :data:`NETPOL`; every module when None) by test name,
    the part of the node id after ``::`` (``test_case[deny-all-ingress]``)."""
    lead = f"{module}::" if module else ""
    return {
        c["nodeid"].split("::", 1)[1]: c
        for c in checks(tmp)
        if "::" in c["nodeid"] and c["nodeid"].startswith(lead)
    }


def outcomes(tmp: Path, module: str | None = None) -> dict[str, str]:
    """Test name -> outcome, for the checks of ``module`` (every module when None)."""
    return {name: str(c["outcome"]) for name, c in checks_by_name(tmp, module).items()}


def prefix_leftovers(prefix: str) -> list[str]:
    """Netns of the test lab with ``prefix``."""
    return [n for n in list_netns() if owned_by(prefix, n)]


@contextmanager
def fresh_root(tag: str, keep_logs: Path) -> Iterator[Path]:
    """A fresh lab root under /run (never /etc, /opt or /var/lib: the node view overlays those);
    the lab's logs are copied to ``keep_logs/lab-logs`` for a post-mortem, then the root goes."""
    root = Path(tempfile.mkdtemp(prefix=f"knetcheck-{tag}-", dir="/run"))
    try:
        yield root
    finally:
        if (root / "logs").is_dir():
            shutil.copytree(root / "logs", keep_logs / "lab-logs", dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)


def lab_root_fixture(tag: str) -> Callable[..., Iterator[Path]]:
    """A function-scoped ``lab_root`` fixture for a module: ``lab_root = lab_root_fixture("conf")``."""

    @pytest.fixture
    def lab_root(tmp_path: Path) -> Iterator[Path]:
        with fresh_root(tag, tmp_path) as root:
            yield root

    return lab_root


@dataclass(frozen=True)
class OwnLab:
    """A lab a test started (the suite attaches to it): root, prefix, and what ``up`` reported."""

    root: Path
    prefix: str
    status: control.LabStatus

    @property
    def kubeconfig(self) -> Path:
        return self.status.kubeconfig

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.status.nodes


@contextmanager
def own_lab(tag: str, keep_logs: Path, cni: str = "lab", nodes: int = 3) -> Iterator[OwnLab]:
    """Start a lab under a fresh root with its own ``kncl-t-<hex>-`` prefix; stop it afterwards,
    keep its logs in ``keep_logs/lab-logs``, and fail if it left network namespaces."""
    prefix = f"kncl-t-{secrets.token_hex(3)}-"
    with fresh_root(tag, keep_logs) as root:
        try:
            status = control.up(control.LabConfig(root=root, nodes=nodes, cni=cni, prefix=prefix))
            yield OwnLab(root, prefix, status)
        finally:
            try:
                _keep_node_logs(root, keep_logs / "lab-logs" / "nodes")
            finally:
                control.down(root, prefix=prefix)
    assert prefix_leftovers(prefix) == [], "the lab left network namespaces"


def _keep_node_logs(root: Path, dest: Path) -> None:
    """Each node's /var/log (kubelet.log, containers/…) before ``down`` removes the node trees.

    Best effort: the lab is still running, so files come and go during the copy (a pod's log
    removed with the pod); what could not be copied is listed, never raised."""
    dest.mkdir(parents=True, exist_ok=True)
    for log_dir in sorted((root / "nodes").glob("*/fs/var/log")):
        try:
            shutil.copytree(log_dir, dest / log_dir.parents[2].name, dirs_exist_ok=True, symlinks=True)
        except (shutil.Error, OSError) as err:
            (dest / f"{log_dir.parents[2].name}.copy-errors.txt").write_text(f"{err}\n")


def assert_attached_lab_left_running(root: Path) -> None:
    assert control.status(root).running, "a lab the suite attached to must be left running"
