"""core/v1 Events the way client-go's record.EventRecorder writes them.

A repeat of the same object + type + reason + message bumps ``count`` and ``lastTimestamp`` of the
event already written (a patch), instead of creating another, which is what makes ``kubectl
describe`` show ``x5 over 2m``. Writing happens in a background thread so that recording never
delays a controller, and a failed write is logged and dropped, as the real broadcaster does.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from clusters.lab.controllers.client import (
    JSON,
    Kube,
    describe_error,
    is_not_found,
    is_terminating_namespace,
    meta,
    now_iso,
)

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
_CACHE_SIZE = 4096


@dataclass(frozen=True)
class _Pending:
    ref: JSON
    type: str
    reason: str
    message: str
    timestamp: str


@dataclass(frozen=True)
class _Seen:
    name: str
    namespace: str
    count: int
    first: str


def object_reference(obj: JSON, field_path: str = "") -> JSON:
    m = meta(obj)
    ref: JSON = {
        "kind": obj.get("kind", ""),
        "namespace": m.get("namespace", ""),
        "name": m.get("name", ""),
        "uid": m.get("uid", ""),
        "apiVersion": obj.get("apiVersion", ""),
        "resourceVersion": m.get("resourceVersion", ""),
    }
    if field_path:
        ref["fieldPath"] = field_path
    return {k: v for k, v in ref.items() if v}


class EventRecorder:
    """Record events for ``component`` (e.g. ``deployment-controller``, or ``kubelet`` with ``host``)."""

    def __init__(self, kube: Kube, component: str, host: str = "", *, queue_size: int = 1000) -> None:
        self.kube = kube
        self.component = component
        self.host = host
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=queue_size)
        self._seen: OrderedDict[tuple[str, ...], _Seen] = OrderedDict()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def event(self, obj: JSON, etype: str, reason: str, message: str, *, field_path: str = "") -> None:
        """Queue one event about ``obj`` (a Kubernetes object, as JSON). Never blocks."""
        self._ensure_thread()
        item = _Pending(object_reference(obj, field_path), etype, reason, message, now_iso())
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            log.warning("event queue full; dropping %s %s", reason, message)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event is written (tests, and before a clean shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def start(self) -> None:
        self._ensure_thread()

    def stop(self, timeout: float = 2.0) -> None:
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("event queue full at stop; pending events dropped")
        thread.join(timeout)

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(
                    target=self._run, name=f"events-{self.component}", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._write(item)
            except Exception as err:
                level = logging.DEBUG if is_terminating_namespace(err) else logging.WARNING
                log.log(
                    level,
                    "could not write event %s for %s: %s",
                    getattr(item, "reason", "?"),
                    getattr(item, "ref", {}).get("name"),
                    describe_error(err),
                )
            finally:
                self._queue.task_done()

    def _write(self, item: _Pending) -> None:
        ref = item.ref
        namespace = ref.get("namespace") or "default"
        key = (
            self.component,
            self.host,
            ref.get("kind", ""),
            ref.get("namespace", ""),
            ref.get("name", ""),
            ref.get("uid", ""),
            ref.get("apiVersion", ""),
            item.type,
            item.reason,
            item.message,
        )
        seen = self._seen.get(key)
        if seen is not None:
            count = seen.count + 1
            patch = {"count": count, "lastTimestamp": item.timestamp, "message": item.message}
            try:
                self.kube.patch(f"/api/v1/namespaces/{seen.namespace}/events/{seen.name}", patch)
                self._remember(key, _Seen(seen.name, seen.namespace, count, seen.first))
                return
            except Exception as err:
                if not is_not_found(err):
                    raise
            first = seen.first
        else:
            count, first = 1, item.timestamp
        name = f"{ref.get('name', 'unknown')}.{time.time_ns():x}"
        source: JSON = {"component": self.component}
        if self.host:
            source["host"] = self.host
        body: JSON = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": ref,
            "reason": item.reason,
            "message": item.message,
            "source": source,
            "firstTimestamp": first,
            "lastTimestamp": item.timestamp,
            "count": count,
            "type": item.type,
            "eventTime": None,
            "reportingComponent": self.component,
            "reportingInstance": self.host,
        }
        self.kube.create(f"/api/v1/namespaces/{namespace}/events", body)
        self._remember(key, _Seen(name, namespace, count, first))

    def _remember(self, key: tuple[str, ...], seen: _Seen) -> None:
        self._seen[key] = seen
        self._seen.move_to_end(key)
        while len(self._seen) > _CACHE_SIZE:
            self._seen.popitem(last=False)
