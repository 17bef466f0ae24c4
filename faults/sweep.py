"""Revert every fault a crashed run left behind.

A SIGKILLed experiment never plays its rollbacks, but its inject saved a record first
(:mod:`faults.originals`): which revert to call, with which arguments, and the original to put
back. ``revert_all`` calls each record's revert in this process, with the cluster installed for
the activities, so a NEW process (the next session's start) undoes an old run's fault.

Records of every run are reverted, not only stale ones: a fault left in place breaks every check
that follows, and two chaos runs on one cluster at once would break each other anyway. Chaos
namespaces (``kc-chaos-<run>``) are left to the suites' namespace sweep.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clusters.handle import Cluster
from faults import context, originals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reverted:
    fault: str
    target: str
    run_id: str
    error: str = ""
    """Why the revert failed; empty when it worked (the record is then gone)."""

    def __str__(self) -> str:
        what = f"{self.fault} on {self.target} (run {self.run_id})"
        return f"{what}: FAILED: {self.error}" if self.error else what


def _revert_function(record: originals.FaultRecord) -> Callable[..., Any]:
    if not record.revert.module.startswith("faults.actions."):
        raise ValueError(f"record {record.name} names {record.revert.module}, not a faults.actions module")
    module = importlib.import_module(record.revert.module)
    if record.revert.func not in getattr(module, "__all__", ()):
        raise ValueError(f"record {record.name}: {record.revert.module} exports no {record.revert.func}")
    func: Callable[..., Any] = getattr(module, record.revert.func)
    return func


def revert_all(cluster: Cluster) -> list[Reverted]:
    """Revert every saved fault in ``cluster`` (any run); a failing revert is reported, not raised,
    and its record is kept for the next sweep."""
    done: list[Reverted] = []
    with context.use_cluster(cluster):
        for record in originals.list_all(cluster):
            try:
                _revert_function(record)(**dict(record.revert.arguments))
            except Exception as exc:  # one bad record must not stop the others
                log.error("could not revert %s on %s: %s", record.fault, record.target, exc)
                done.append(Reverted(record.fault, record.target, record.run_id, " ".join(str(exc).split())))
                continue
            if originals.find(cluster, record.fault, record.target) is not None:
                # another run's record for the same target: the revert consumed the oldest one only
                log.info("more records for %s on %s remain", record.fault, record.target)
            log.warning("swept fault %s on %s left by run %s", record.fault, record.target, record.run_id)
            done.append(Reverted(record.fault, record.target, record.run_id))
    return done
