"""Which provider serves a cluster kind, and what ``--cluster=auto`` means on this machine.

Providers are imported lazily: the kind provider pulls in its contract with ``kind``/``docker``
and the lab its whole runtime, and a run needs only one of them. A provider module that is not
installed yet becomes one :class:`~clusters.errors.ClusterUnavailable` line, not an ImportError.
"""

from __future__ import annotations

import importlib
import logging
import shutil
from typing import cast

from clusters import proc
from clusters.errors import ClusterUnavailable, CommandFailed
from clusters.options import AutoChoice
from clusters.provider import ClusterKind, Provider

log = logging.getLogger(__name__)

DOCKER_INFO_TIMEOUT = 10.0
"""``docker info`` answers in well under a second when the engine is up; a hung socket must not
hold up every pytest run, so auto gives up after this and picks the lab."""

_PROVIDERS: dict[ClusterKind, tuple[str, str, str]] = {
    ClusterKind.KIND: ("clusters.kind.provider", "KindProvider", "the kind provider"),
    ClusterKind.EXISTING: ("clusters.existing.provider", "ExistingProvider", "the existing-cluster provider"),
    ClusterKind.LAB: ("clusters.lab.provider", "LabProvider", "the embedded lab"),
}


def provider_for(kind: ClusterKind) -> Provider:
    """A fresh provider for ``kind``; ``auto`` is resolved first (see :func:`resolve_auto`)."""
    if kind is ClusterKind.AUTO:
        kind = resolve_auto().kind
    module_name, class_name, what = _PROVIDERS[kind]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise
        raise ClusterUnavailable(
            f"{what} is not available yet ({module_name} is missing): choose another --cluster"
        ) from None
    return cast(Provider, getattr(module, class_name)())


def docker_answers() -> bool:
    """True when a Docker engine answers ``docker info`` (not merely when the CLI is installed)."""
    if shutil.which("docker") is None:
        return False
    try:
        result = proc.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"], timeout=DOCKER_INFO_TIMEOUT, check=False
        )
    except CommandFailed as exc:
        log.debug("docker info: %s", exc)
        return False
    return result.ok and bool(result.stdout.strip())


def resolve_auto() -> AutoChoice:
    """kind when a Docker engine answers and ``kind`` is on PATH, else the lab."""
    if not docker_answers():
        return AutoChoice(ClusterKind.LAB, "no Docker engine answers here", "start Docker")
    if shutil.which("kind") is None:
        return AutoChoice(
            ClusterKind.LAB, "a Docker engine answers but kind is not on PATH", "put kind on PATH"
        )
    return AutoChoice(ClusterKind.KIND, "a Docker engine answers and kind is on PATH", "pass --cluster=lab")
