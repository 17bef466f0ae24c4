"""Saved originals: what a fault changed, kept IN the cluster so any later process can undo it.

An inject saves a record before it breaks anything: a ConfigMap ``kc-fault-<run>-<fault>-<hash>``
in kube-system, labelled with the run id and the fault, holding the original value(s) and the
revert to call (module, function, JSON arguments). The revert of the same run, a rollback after
Ctrl-C, or the next session's sweep after a SIGKILL (:mod:`faults.sweep`) all find it there; the
process that injected may be long gone. The record is deleted only after the revert succeeded.

A record is keyed by fault and target (``node/x``, ``kube-system/coredns``), not by run: a second
inject of the same fault on the same target finds the first record and keeps its original
instead of saving the already broken state.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clusters.handle import Cluster
from clusters.labels import MANAGED_BY, MANAGED_BY_LABEL, MANAGED_SELECTOR, run_labels

log = logging.getLogger(__name__)

NAMESPACE = "kube-system"
FAULT_LABEL = "knetcheck.io/fault"
TARGET_LABEL = "knetcheck.io/fault-target"
DATA_KEY = "record.json"
API_TIMEOUT = 30.0


@dataclass(frozen=True)
class Revert:
    """The activity that undoes a fault, as Chaos Toolkit would call it."""

    module: str
    func: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FaultRecord:
    fault: str
    target: str
    run_id: str
    revert: Revert
    original: Mapping[str, Any]
    """JSON-able originals the revert puts back (a Corefile, a selector, a list of files)."""
    created: str = ""
    name: str = ""
    """The ConfigMap's name, once stored."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "fault": self.fault,
                "target": self.target,
                "run_id": self.run_id,
                "revert": {"module": self.revert.module, "func": self.revert.func,
                           "arguments": dict(self.revert.arguments)},
                "original": dict(self.original),
                "created": self.created,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str, name: str) -> FaultRecord:
        raw = json.loads(text)
        rev = raw["revert"]
        return cls(
            fault=str(raw["fault"]),
            target=str(raw["target"]),
            run_id=str(raw["run_id"]),
            revert=Revert(str(rev["module"]), str(rev["func"]), dict(rev.get("arguments") or {})),
            original=dict(raw.get("original") or {}),
            created=str(raw.get("created", "")),
            name=name,
        )


def target_hash(target: str) -> str:
    return hashlib.sha256(target.encode()).hexdigest()[:10]


def record_name(run_id: str, fault: str, target: str) -> str:
    return f"kc-fault-{run_id.lower()}-{fault}-{target_hash(target)}"[:253]


def _core(cluster: Cluster) -> Any:
    from kubernetes import client

    return client.CoreV1Api(cluster.api_client)


def find(cluster: Cluster, fault: str, target: str) -> FaultRecord | None:
    """The saved record for ``fault`` on ``target`` from any run, oldest first if several."""
    selector = f"{MANAGED_SELECTOR},{FAULT_LABEL}={fault},{TARGET_LABEL}={target_hash(target)}"
    found = [r for r in _list(cluster, selector) if r.fault == fault and r.target == target]
    return min(found, key=lambda r: r.created) if found else None


def list_all(cluster: Cluster) -> list[FaultRecord]:
    """Every saved record in the cluster, from any run (what the sweep reverts)."""
    return _list(cluster, f"{MANAGED_SELECTOR},{FAULT_LABEL}")


def _list(cluster: Cluster, selector: str) -> list[FaultRecord]:
    items = _core(cluster).list_namespaced_config_map(
        NAMESPACE, label_selector=selector, _request_timeout=API_TIMEOUT
    ).items
    records = []
    for cm in items:
        labels = cm.metadata.labels or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or DATA_KEY not in (cm.data or {}):
            continue
        try:
            records.append(FaultRecord.from_json(cm.data[DATA_KEY], cm.metadata.name))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable fault record %s/%s: %s", NAMESPACE, cm.metadata.name, exc)
    return sorted(records, key=lambda r: (r.created, r.name))


def save(cluster: Cluster, record: FaultRecord) -> FaultRecord:
    """Store ``record`` unless one for the same fault and target exists; returns the one in force."""
    from kubernetes.client.exceptions import ApiException

    existing = find(cluster, record.fault, record.target)
    if existing is not None:
        log.info("fault %s on %s already recorded by run %s (%s): keeping its original",
                 record.fault, record.target, existing.run_id, existing.name)
        return existing
    name = record_name(record.run_id, record.fault, record.target)
    stamped = FaultRecord(record.fault, record.target, record.run_id, record.revert, record.original,
                          dt.datetime.now(dt.UTC).isoformat(), name)
    labels = {
        **run_labels(record.run_id), FAULT_LABEL: record.fault, TARGET_LABEL: target_hash(record.target)
    }
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels,
                     "annotations": {"knetcheck.io/fault-target": record.target}},
        "data": {DATA_KEY: stamped.to_json()},
    }
    try:
        _core(cluster).create_namespaced_config_map(NAMESPACE, body, _request_timeout=API_TIMEOUT)
    except ApiException as exc:
        if exc.status != 409:
            raise
        again = find(cluster, record.fault, record.target)
        if again is None:
            raise
        return again
    log.info("saved the original of %s on %s in %s/%s", record.fault, record.target, NAMESPACE, name)
    return stamped


def delete(cluster: Cluster, record: FaultRecord) -> None:
    """Forget ``record`` (after its revert succeeded); already gone is fine."""
    from kubernetes.client.exceptions import ApiException

    try:
        _core(cluster).delete_namespaced_config_map(record.name, NAMESPACE, _request_timeout=API_TIMEOUT)
    except ApiException as exc:
        if exc.status != 404:
            raise
