"""In-memory object storage with one resourceVersion counter and a bounded event history.

Like etcd behind the real apiserver: every write gets the next revision, every write is an
event, and a watch can resume from any revision still in the history window (older → 410).
All methods are thread-safe so in-process callers (tests, the lab) may inspect it directly.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusters.lab.api import resources
from clusters.lab.api.resources import ResourceType

log = logging.getLogger(__name__)

Obj = dict[str, Any]
HISTORY = 10_000
STATE_FILE = "objects.json"


def clone(value: Any) -> Any:
    """A deep copy of JSON data (much faster than copy.deepcopy for this shape)."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def clone_obj(obj: Obj) -> Obj:
    copied: Obj = clone(obj)
    return copied


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    key: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    old: Obj | None

    @property
    def namespace(self) -> str:
        return str(self.obj.get("metadata", {}).get("namespace", ""))


Listener = Callable[[WatchEvent], None]


@dataclass(frozen=True)
class Subscription:
    key: str
    namespace: str | None
    listener: Listener


class TooOld(Exception):
    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")


class Store:
    """Objects keyed by resource, namespace and name; callers hold :attr:`lock` across read-modify-write."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.lock = threading.RLock()
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {}
        self._rv = 1
        self._history: deque[WatchEvent] = deque(maxlen=HISTORY)
        self._evicted_upto = 0
        self._subs: list[Subscription] = []
        self._state_dir = state_dir
        self._dirty = threading.Event()
        self._closing = threading.Event()
        self._saver: threading.Thread | None = None
        if state_dir is not None:
            self._load(state_dir / STATE_FILE)
            self._saver = threading.Thread(target=self._save_loop, name="lab-api-saver", daemon=True)
            self._saver.start()

    # -- reads -------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self.lock:
            return self._rv

    def get(self, rt: ResourceType | str, namespace: str, name: str) -> Obj | None:
        key = _key(rt)
        with self.lock:
            obj = self._objects.get(key, {}).get((namespace, name))
            return clone_obj(obj) if obj is not None else None

    def peek(self, rt: ResourceType | str, namespace: str, name: str) -> Obj | None:
        """The stored object itself, no copy: read-only use under :attr:`lock`."""
        return self._objects.get(_key(rt), {}).get((namespace, name))

    def list(self, rt: ResourceType | str, namespace: str | None = None) -> tuple[list[Obj], int]:
        key = _key(rt)
        with self.lock:
            items = [clone(o) for o in self._iter(key, namespace)]
            return items, self._rv

    def _iter(self, key: str, namespace: str | None) -> Iterator[Obj]:
        objs = self._objects.get(key, {})
        for (ns, _), obj in sorted(objs.items()):
            if namespace is None or ns == namespace:
                yield obj

    def count(self, rt: ResourceType | str, namespace: str | None = None) -> int:
        with self.lock:
            return sum(1 for _ in self._iter(_key(rt), namespace))

    # -- writes ------------------------------------------------------------------------------

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def create(self, rt: ResourceType | str, obj: Obj) -> Obj:
        """Store a new object (caller checked it does not exist); returns a copy with its resourceVersion."""
        key = _key(rt)
        with self.lock:
            meta = obj["metadata"]
            rv = self._next_rv()
            meta["resourceVersion"] = str(rv)
            stored = clone(obj)
            self._objects.setdefault(key, {})[(meta.get("namespace", ""), meta["name"])] = stored
            self._emit(WatchEvent(rv, key, "ADDED", stored, None))
            return clone_obj(stored)

    def update(self, rt: ResourceType | str, obj: Obj) -> Obj:
        key = _key(rt)
        with self.lock:
            meta = obj["metadata"]
            ident = (meta.get("namespace", ""), meta["name"])
            old = self._objects.get(key, {}).get(ident)
            rv = self._next_rv()
            meta["resourceVersion"] = str(rv)
            stored = clone(obj)
            self._objects.setdefault(key, {})[ident] = stored
            self._emit(WatchEvent(rv, key, "MODIFIED", stored, old))
            return clone_obj(stored)

    def delete(self, rt: ResourceType | str, namespace: str, name: str) -> Obj | None:
        key = _key(rt)
        with self.lock:
            old = self._objects.get(key, {}).pop((namespace, name), None)
            if old is None:
                return None
            rv = self._next_rv()
            gone = clone(old)
            gone["metadata"]["resourceVersion"] = str(rv)
            self._emit(WatchEvent(rv, key, "DELETED", gone, old))
            return clone_obj(gone)

    # -- watch -------------------------------------------------------------------------------

    def _emit(self, event: WatchEvent) -> None:
        if len(self._history) == self._history.maxlen:
            self._evicted_upto = self._history[0].rv
        self._history.append(event)
        self._dirty.set()
        for sub in list(self._subs):
            if sub.key == event.key and (sub.namespace is None or sub.namespace == event.namespace):
                try:
                    sub.listener(event)
                except Exception:  # a broken watcher must not break writes
                    log.exception("watch listener failed")

    def subscribe(
        self, rt: ResourceType | str, namespace: str | None, since: int, listener: Listener
    ) -> tuple[builtins.list[WatchEvent], Subscription]:
        """Events after revision ``since`` still in the window, plus a live subscription.

        Raises :class:`TooOld` when events after ``since`` were already evicted.
        """
        key = _key(rt)
        with self.lock:
            if since < self._evicted_upto:
                oldest = self._history[0].rv if self._history else self._rv
                raise TooOld(since, oldest)
            backlog = [
                e
                for e in self._history
                if e.rv > since and e.key == key and (namespace is None or e.namespace == namespace)
            ]
            sub = Subscription(key, namespace, listener)
            self._subs.append(sub)
            return backlog, sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self.lock:
            if sub in self._subs:
                self._subs.remove(sub)

    # -- persistence -------------------------------------------------------------------------

    def _load(self, path: Path) -> None:
        if not path.is_file():
            return
        data = json.loads(path.read_text())
        self._rv = int(data.get("resourceVersion", 1))
        self._evicted_upto = self._rv  # history is not persisted: older watches must relist
        for key, objs in data.get("objects", {}).items():
            bucket = self._objects.setdefault(key, {})
            for obj in objs:
                meta = obj["metadata"]
                bucket[(meta.get("namespace", ""), meta["name"])] = obj
        log.info("loaded %d objects from %s", sum(len(b) for b in self._objects.values()), path)

    def save(self) -> None:
        if self._state_dir is None:
            return
        with self.lock:
            data = {
                "resourceVersion": self._rv,
                "objects": {k: list(v.values()) for k, v in self._objects.items() if v},
            }
            text = json.dumps(data)
        self._state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self._state_dir / STATE_FILE)

    def _save_loop(self) -> None:
        while not self._closing.is_set():
            self._dirty.wait()
            if self._closing.is_set():
                break
            self._dirty.clear()
            try:
                self.save()
            except OSError:
                log.exception("saving API state failed")
            self._closing.wait(0.2)  # rate limit: at most five snapshots a second

    def close(self) -> None:
        """Stop the saver and write a final snapshot."""
        self._closing.set()
        self._dirty.set()
        if self._saver is not None:
            self._saver.join(timeout=5)
            self.save()


def _key(rt: ResourceType | str) -> str:
    if isinstance(rt, ResourceType):
        return rt.key
    if "/" in rt:
        return rt
    found = resources.by_plural(rt)
    if found is None:
        raise KeyError(f"unknown resource {rt!r}")
    return found.key
