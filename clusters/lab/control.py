"""Starting, finding and stopping the lab daemon: what `knetcheck lab up/down/status` and the lab
provider share.

The lab runs as one detached daemon process (``python -m clusters.lab.daemon``) that owns the API
server, controllers, kubelets and node namespaces. The daemon writes ``ready.json`` once the
cluster is usable, or ``failed`` with one line when it could not start; ``down`` stops it with
SIGTERM (its own teardown) and then sweeps by name prefix, so even a SIGKILLed daemon leaves
nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from clusters.errors import ClusterUnavailable, UsageProblem
from clusters.lab import claims, layout, preflight

log = logging.getLogger(__name__)

READY_FILE = "ready.json"
FAILED_FILE = "failed"
PREFIX_FILE = "prefix"
"""The lab's name prefix, written before the daemon starts: ``down`` after a crash sweeps by it."""
UP_TIMEOUT = 120.0
DOWN_TIMEOUT = 60.0


@dataclass(frozen=True)
class LabConfig:
    root: Path
    nodes: int = 3
    cni: str = "lab"
    prefix: str = field(default_factory=claims.default_prefix)

    @property
    def layout(self) -> layout.LabLayout:
        return layout.LabLayout(self.root)


@dataclass(frozen=True)
class LabStatus:
    running: bool
    pid: int | None
    kubeconfig: Path
    api_url: str | None = None
    nodes: tuple[str, ...] = ()
    cni: str | None = None
    prefix: str = layout.PREFIX


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (ours, not yet reaped) counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def status(root: Path) -> LabStatus:
    lay = layout.LabLayout(root)
    try:
        pid = int(lay.pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = None
    running = pid is not None and _pid_alive(pid)
    try:
        ready = json.loads((root / READY_FILE).read_text())
    except (OSError, ValueError):
        ready = None
    if not running or ready is None:
        return LabStatus(running=running, pid=pid, kubeconfig=lay.kubeconfig, prefix=_recorded_prefix(root))
    return LabStatus(
        running=True,
        pid=pid,
        kubeconfig=lay.kubeconfig,
        api_url=str(ready["api_url"]),
        nodes=tuple(ready["nodes"]),
        cni=str(ready["cni"]),
        prefix=str(ready.get("prefix", layout.PREFIX)),
    )


def _recorded_prefix(root: Path) -> str:
    try:
        return claims.check_prefix((root / PREFIX_FILE).read_text().strip())
    except (OSError, UsageProblem):
        return layout.PREFIX


def _running(root: Path) -> bool:
    return status(root).running


def up(config: LabConfig, timeout: float = UP_TIMEOUT) -> LabStatus:
    """Start the lab (or return the running one if it has the same shape)."""
    preflight.require()
    current = status(config.root)
    if current.running:
        if current.api_url and current.cni == config.cni and len(current.nodes) == config.nodes:
            return current
        raise UsageProblem(
            f"a lab is already running in {config.root} (cni={current.cni}, {len(current.nodes)} nodes): "
            "run `knetcheck lab down` first"
        )
    claims.claim(config.prefix, config.root, _running)
    down(config.root, prefix=config.prefix, keep_claim=True)  # a crashed lab's leftovers
    config.root.mkdir(parents=True, exist_ok=True)
    (config.root / PREFIX_FILE).write_text(f"{config.prefix}\n")
    log_path = config.layout.log_dir() / "lab.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "clusters.lab.daemon", "--root", str(config.root),
        "--nodes", str(config.nodes), "--cni", config.cni, "--prefix", config.prefix, "--detach",
    ]
    with log_path.open("ab") as out:
        # The daemon forks and this child exits at once: the lab outlives `lab up`, re-parented.
        subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            cwd=str(Path(__file__).resolve().parents[2]), timeout=30, check=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (config.root / READY_FILE).exists():
            ready = status(config.root)
            if ready.running and ready.api_url:
                return ready
        failed = config.root / FAILED_FILE
        if failed.exists() or _daemon_gone(config.layout):
            line = failed.read_text().strip() if failed.exists() else _tail(log_path)
            down(config.root, prefix=config.prefix)
            raise ClusterUnavailable(f"the lab did not start: {line} (log: {log_path})")
        time.sleep(0.1)
    down(config.root, prefix=config.prefix)
    raise ClusterUnavailable(f"the lab did not become ready within {timeout:.0f}s (log: {log_path})")


def _daemon_gone(lay: layout.LabLayout) -> bool:
    """The daemon wrote its pid file and then died (its pid file outlives it only on a crash)."""
    try:
        pid = int(lay.pid_file.read_text().strip())
    except (OSError, ValueError):
        return False  # not written yet, or removed by a clean failure that also wrote FAILED
    return not _pid_alive(pid)


def _tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no log"


def down(
    root: Path, *, prefix: str | None = None, timeout: float = DOWN_TIMEOUT, keep_claim: bool = False
) -> bool:
    """Stop the daemon and remove everything the lab made; True if a lab was running.

    ``keep_claim``: ``up`` clearing a crashed lab's leftovers keeps the prefix it just claimed.
    """
    current = status(root)
    if prefix is None:
        prefix = current.prefix
    was_running = current.running
    if current.pid is not None and current.running:
        os.kill(current.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(current.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(current.pid):
            log.warning("lab daemon %d ignored SIGTERM for %.0fs; killing it", current.pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(current.pid, signal.SIGKILL)
    from clusters.lab.node import underlay

    if claims.may_sweep(prefix, root, _running):
        underlay.sweep(prefix)
        if not keep_claim:
            claims.release(prefix, root)
    else:
        log.warning("not sweeping %r: it belongs to the lab running in %s", prefix, claims.owner(prefix))
    for name in (READY_FILE, FAILED_FILE, PREFIX_FILE):
        (root / name).unlink(missing_ok=True)
    lay = layout.LabLayout(root)
    lay.pid_file.unlink(missing_ok=True)
    for sub in ("nodes", "pods"):
        shutil.rmtree(root / sub, ignore_errors=True)
    return was_running
