"""The command lines of ``kind``, ``docker`` and ``helm``, one small function each.

Kept apart from the provider so the contract tests can read the exact argv the provider
promises to run, and so every call goes through :func:`clusters.proc.run` with a timeout.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from clusters.errors import ClusterUnavailable, CommandFailed, UsageProblem
from clusters.kind.versions import KIND_DOWNLOAD, KIND_VERSION
from clusters.proc import run
from clusters.recipes import InstallStep

log = logging.getLogger(__name__)

_VERSION_RE = re.compile(r"\bkind (v\d+\.\d+\.\d+\S*)")


@dataclass(frozen=True)
class Timeouts:
    """Seconds per step; creation and installs pull images, so they get minutes."""

    quick: float = 60.0
    create: float = 600.0
    delete: float = 300.0
    load: float = 300.0
    install: float = 600.0
    ready: float = 600.0
    """Per readiness object (nodes, each DaemonSet/Deployment, CoreDNS)."""
    poll_interval: float = 2.0


def tail(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-3:])


def check_kind_version(timeouts: Timeouts) -> str:
    """The version of ``kind`` on PATH; anything but the pinned release is one clear line."""
    hint = (
        f"install kind {KIND_VERSION} from {KIND_DOWNLOAD} (or `go install sigs.k8s.io/kind@{KIND_VERSION}`)"
    )
    try:
        out = run(["kind", "version"], timeout=timeouts.quick).stdout
    except CommandFailed as err:
        if err.returncode == 127:
            raise UsageProblem(f"kind not found on PATH; {hint}") from None
        raise UsageProblem(f"`kind version` failed ({err}); {hint}") from None
    match = _VERSION_RE.search(out)
    found = match.group(1) if match else out.strip() or "unknown"
    if found != KIND_VERSION:
        where = shutil.which("kind") or "kind"
        raise UsageProblem(f"{where} is kind {found}, knetcheck needs {KIND_VERSION}; {hint}")
    return found


def check_docker(timeouts: Timeouts) -> None:
    """kind needs a Docker engine; say so plainly instead of failing inside ``kind create``."""
    try:
        res = run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=timeouts.quick, check=False)
    except CommandFailed as err:
        raise ClusterUnavailable(f"no Docker engine ({err}); install Docker or use --cluster lab") from None
    if not res.ok:
        raise ClusterUnavailable(
            f"no Docker engine answers (`docker info`: {tail(res.stderr or res.stdout)}); "
            "start Docker or use --cluster lab"
        )


def kind_clusters(timeouts: Timeouts) -> list[str]:
    # "No kind clusters found." goes to stderr, so stdout holds only names.
    out = run(["kind", "get", "clusters"], timeout=timeouts.quick).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def kind_create(name: str, config: Path, kubeconfig: Path, image: str, timeouts: Timeouts) -> None:
    # No --wait: it only waits for control-plane nodes and exits 0 on timeout (reference §1.2).
    run(
        [
            "kind",
            "create",
            "cluster",
            "--name",
            name,
            "--config",
            str(config),
            "--kubeconfig",
            str(kubeconfig),
            "--image",
            image,
        ],
        timeout=timeouts.create,
    )


def kind_delete(name: str, kubeconfig: Path, timeouts: Timeouts) -> None:
    # --kubeconfig keeps kind away from the user's ~/.kube/config.
    run(
        ["kind", "delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig)],
        timeout=timeouts.delete,
    )


def kind_write_kubeconfig(name: str, kubeconfig: Path, timeouts: Timeouts) -> None:
    """Write a reused cluster's kubeconfig where a created one's would be, readable only by us."""
    text = run(["kind", "get", "kubeconfig", "--name", name], timeout=timeouts.quick).stdout
    kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    kubeconfig.touch(mode=0o600)
    kubeconfig.write_text(text, encoding="utf-8")


def image_present(image: str, timeouts: Timeouts) -> bool:
    res = run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", image], timeout=timeouts.quick, check=False
    )
    return res.ok


def kind_load(image: str, name: str, timeouts: Timeouts) -> bool:
    """Preload one local image; a failure only costs a pull, so it is logged, not raised.

    Digest-pinned images can fail to load or not match after loading (reference §1.7).
    """
    res = run(["kind", "load", "docker-image", image, "--name", name], timeout=timeouts.load, check=False)
    if not res.ok:
        log.warning("could not preload %s into %s (nodes will pull it): %s", image, name, tail(res.stderr))
    return res.ok


def helm_install_argv(step: InstallStep, kubeconfig: Path, context: str) -> list[str]:
    """``helm install`` with ``--repo`` instead of ``helm repo add``: no change to the user's repos."""
    if not step.version:
        raise UsageProblem(f"helm step for {step.source!r} must pin a chart version")
    chart = step.source.rsplit("/", 1)[-1] if step.repo_url else step.source
    argv = ["helm", "install", step.release or chart, chart]
    if step.repo_url:
        argv += ["--repo", step.repo_url]
    argv += ["--version", step.version]
    if step.namespace:
        argv += ["--namespace", step.namespace]
    argv += ["--kubeconfig", str(kubeconfig), "--kube-context", context]
    for key, value in step.values:
        argv += ["--set", f"{key}={value}"]
    return argv


def helm_install(step: InstallStep, kubeconfig: Path, context: str, timeouts: Timeouts) -> None:
    run(helm_install_argv(step, kubeconfig, context), timeout=timeouts.install)
