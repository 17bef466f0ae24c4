"""Sweeping labelled leftovers: this run's namespaces at the end, stale ones of crashed runs at the start.

Only namespaces carrying the managed-by label are ever touched (checked again on each object,
not only trusted to the label selector). Another run's namespaces are deleted only once they are
older than :data:`STALE_AFTER`: on a shared existing cluster a colleague's run may be going on
right now, and deleting its namespaces would fail their tests; a crashed run's leftovers are
collected by the first run that starts after the grace period.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from clusters.handle import Cluster
from clusters.labels import MANAGED_BY, MANAGED_BY_LABEL, MANAGED_SELECTOR, RUN_ID_LABEL
from suites import namespaces

log = logging.getLogger(__name__)

STALE_AFTER = dt.timedelta(hours=1)
API_TIMEOUT = 30.0


@dataclass(frozen=True)
class Leftover:
    name: str
    run_id: str
    created: dt.datetime | None


def leftovers(cluster: Cluster, selector: str = MANAGED_SELECTOR) -> list[Leftover]:
    """Managed namespaces matching ``selector``; objects without the managed-by label are dropped."""
    from kubernetes import client

    listing: Any = client.CoreV1Api(cluster.api_client).list_namespace(
        label_selector=selector, _request_timeout=API_TIMEOUT
    )
    found = []
    for ns in listing.items:
        labels = ns.metadata.labels or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
            continue
        found.append(Leftover(ns.metadata.name, labels.get(RUN_ID_LABEL, ""), ns.metadata.creation_timestamp))
    return found


def sweep_run(cluster: Cluster, run_id: str) -> list[str]:
    """Delete every namespace this run made; returns the names deleted."""
    return _delete(cluster, [lo for lo in leftovers(cluster, f"{MANAGED_SELECTOR},{RUN_ID_LABEL}={run_id}")
                             if lo.run_id == run_id])


def sweep_stale(cluster: Cluster, run_id: str, now: dt.datetime | None = None) -> list[str]:
    """Delete other runs' namespaces older than :data:`STALE_AFTER`; returns the names deleted."""
    now = now or dt.datetime.now(dt.UTC)
    stale: list[Leftover] = []
    young: list[Leftover] = []
    for lo in leftovers(cluster, f"{MANAGED_SELECTOR},{RUN_ID_LABEL}!={run_id}"):
        if lo.run_id == run_id:
            continue
        (stale if lo.created is None or now - lo.created >= STALE_AFTER else young).append(lo)
    for lo in young:
        log.info("leaving namespace %s of run %s: younger than %s, that run may still be going",
                 lo.name, lo.run_id, STALE_AFTER)
    return _delete(cluster, stale)


def _delete(cluster: Cluster, found: list[Leftover]) -> list[str]:
    return [lo.name for lo in found if namespaces.delete(cluster, lo.name)]
