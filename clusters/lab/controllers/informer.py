"""List + watch of one resource into a local cache, in a thread, like client-go's reflector/informer.

The loop lists (all namespaces), then watches from the list's resourceVersion; on ``410 Gone`` it
re-lists and reports the difference as adds/updates/deletes; on any other error it backs off and
watches again. Handlers run in the informer thread, in event order, and must only enqueue work:
the objects they get are the cache's own and must not be mutated.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from clusters.lab.controllers.client import JSON, Kube, Query, WatchStream, key_of, meta

log = logging.getLogger(__name__)

OnAdd = Callable[[JSON], None]
OnUpdate = Callable[[JSON, JSON], None]
OnDelete = Callable[[JSON], None]


@dataclass(frozen=True)
class Handlers:
    on_add: OnAdd | None = None
    on_update: OnUpdate | None = None
    on_delete: OnDelete | None = None


class _Gone(Exception):
    """The watch's resourceVersion is too old: re-list."""


class Informer:
    """Cache of one resource kept current by list + watch.

    ``path`` is the collection URL across namespaces, e.g. ``/api/v1/pods`` or
    ``/apis/apps/v1/replicasets``; ``resync`` (seconds, 0 = never) re-delivers every cached object
    as an update, so a controller that missed a transition converges anyway.
    """

    def __init__(
        self,
        kube: Kube,
        path: str,
        *,
        resync: float = 0.0,
        query: Query | None = None,
        watch_timeout: int = 300,
        max_backoff: float = 5.0,
    ) -> None:
        self.kube = kube
        self.path = path
        self.resync_period = resync
        self.query = list(query or [])
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._cache: dict[str, JSON] = {}
        self._handlers: list[Handlers] = []
        self._stream: WatchStream | None = None
        self._threads: list[threading.Thread] = []
        self.resource_version = ""
        self._kind = ""
        self._api_version = ""

    # -- cache ---------------------------------------------------------------------------------

    def get(self, key: str) -> JSON | None:
        with self._lock:
            return self._cache.get(key)

    def objects(self, namespace: str | None = None) -> list[JSON]:
        with self._lock:
            items = list(self._cache.values())
        if namespace is None:
            return items
        return [o for o in items if meta(o).get("namespace") == namespace]

    def add_handlers(self, handlers: Handlers) -> None:
        """Register handlers; objects already cached are delivered to them as adds, as client-go does."""
        with self._lock:
            self._handlers.append(handlers)
            if handlers.on_add:
                for obj in list(self._cache.values()):
                    self._call(handlers.on_add, obj)

    def wait_synced(self, timeout: float) -> bool:
        return self.synced.wait(timeout)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        name = self.path.rsplit("/", 1)[-1]
        self._threads.append(threading.Thread(target=self._run, name=f"informer-{name}", daemon=True))
        if self.resync_period > 0:
            self._threads.append(
                threading.Thread(target=self._resync_loop, name=f"resync-{name}", daemon=True)
            )
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()

    def join(self, timeout: float) -> list[threading.Thread]:
        """Wait for the threads; return those still alive."""
        for t in self._threads:
            t.join(timeout)
        return [t for t in self._threads if t.is_alive()]

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.1
        rv = ""
        while not self._stop.is_set():
            try:
                if not rv:
                    rv = self._list_and_replace()
                rv = self._watch(rv)
                backoff = 0.1
            except _Gone:
                log.info("watch %s: resourceVersion %s is gone; re-listing", self.path, rv)
                rv = ""
            except Exception as err:
                if self._stop.is_set():
                    break
                if isinstance(err, ApiException) and err.status == 410:
                    rv = ""
                    continue
                log.warning("informer %s: %s; retrying in %.1fs", self.path, _short(err), backoff)
                self._stop.wait(backoff)
                backoff = min(self.max_backoff, backoff * 2)
        log.debug("informer %s stopped", self.path)

    def _list_and_replace(self) -> str:
        items: list[JSON] = []
        cont = ""
        rv = ""
        while True:
            query: Query = [*self.query, ("limit", "500")]
            if cont:
                query.append(("continue", cont))
            body = self.kube.get(self.path, query)
            kind = str(body.get("kind", ""))
            self._kind = kind.removesuffix("List") if kind.endswith("List") else self._kind
            self._api_version = str(body.get("apiVersion", self._api_version))
            for item in body.get("items") or []:
                if isinstance(item, dict):
                    item.setdefault("kind", self._kind)
                    item.setdefault("apiVersion", self._api_version)
                    items.append(item)
            lm = body.get("metadata") or {}
            rv = str(lm.get("resourceVersion", ""))
            cont = str(lm.get("continue") or "")
            if not cont:
                break
        self._replace(items, rv)
        log.debug("listed %s: %d objects at resourceVersion %s", self.path, len(items), rv)
        return rv

    def _replace(self, items: list[JSON], rv: str) -> None:
        with self._lock:
            fresh = {key_of(o): o for o in items}
            for key, old in list(self._cache.items()):
                if key not in fresh:
                    del self._cache[key]
                    self._dispatch("delete", old, None)
            for key, obj in fresh.items():
                prev = self._cache.get(key)
                self._cache[key] = obj
                if prev is None:
                    self._dispatch("add", obj, None)
                else:
                    self._dispatch("update", prev, obj)
            self.resource_version = rv
        self.synced.set()

    def _watch(self, rv: str) -> str:
        timeout = random.randint(self.watch_timeout, 2 * self.watch_timeout)
        query: Query = [
            *self.query,
            ("watch", "true"),
            ("resourceVersion", rv),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout)),
        ]
        stream = self.kube.watch(self.path, query, read_timeout=timeout + 30)
        with self._lock:
            self._stream = stream
        try:
            if self._stop.is_set():
                return rv
            for line in stream.lines():
                if self._stop.is_set():
                    break
                rv = self._apply(json.loads(line), rv)
        finally:
            with self._lock:
                self._stream = None
            stream.close()
        return rv

    def _apply(self, event: dict[str, Any], rv: str) -> str:
        etype = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            return rv
        if etype == "ERROR":
            if obj.get("code") == 410 or obj.get("reason") in ("Expired", "Gone"):
                raise _Gone
            raise ApiException(status=int(obj.get("code") or 500), reason=str(obj.get("message", obj)))
        new_rv = str(meta(obj).get("resourceVersion") or rv)
        if etype == "BOOKMARK":
            self.resource_version = new_rv
            return new_rv
        obj.setdefault("kind", self._kind)
        obj.setdefault("apiVersion", self._api_version)
        key = key_of(obj)
        with self._lock:
            old = self._cache.get(key)
            if etype == "DELETED":
                self._cache.pop(key, None)
                self._dispatch("delete", obj, None)
            elif old is None:
                self._cache[key] = obj
                self._dispatch("add", obj, None)
            else:
                self._cache[key] = obj
                self._dispatch("update", old, obj)
            self.resource_version = new_rv
        return new_rv

    def resync(self) -> None:
        """Re-deliver every cached object as an update (old is new), like a resync period does."""
        with self._lock:
            for obj in list(self._cache.values()):
                self._dispatch("update", obj, obj)

    def _resync_loop(self) -> None:
        while not self._stop.wait(self.resync_period):
            self.resync()

    def _dispatch(self, what: str, obj: JSON, new: JSON | None) -> None:
        for h in self._handlers:
            if what == "add" and h.on_add:
                self._call(h.on_add, obj)
            elif what == "update" and h.on_update and new is not None:
                self._call(h.on_update, obj, new)
            elif what == "delete" and h.on_delete:
                self._call(h.on_delete, obj)

    def _call(self, fn: Callable[..., None], *args: JSON) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("informer %s: handler failed", self.path)


class InformerFactory:
    """One shared informer per resource path, as controllers in one process share them."""

    def __init__(self, kube: Kube, *, resync: float = 0.0) -> None:
        self.kube = kube
        self.resync = resync
        self._informers: dict[str, Informer] = {}
        self._lock = threading.Lock()
        self._started = False
        self._stop = threading.Event()
        self._resync_thread: threading.Thread | None = None

    def informer(self, path: str) -> Informer:
        with self._lock:
            inf = self._informers.get(path)
            if inf is None:
                inf = Informer(self.kube, path)  # one factory thread resyncs them all
                self._informers[path] = inf
                if self._started:
                    inf.start()
            return inf

    def start(self) -> None:
        with self._lock:
            self._started = True
            informers = list(self._informers.values())
            if self.resync > 0 and self._resync_thread is None:
                self._resync_thread = threading.Thread(target=self._resync_loop, name="resync", daemon=True)
                self._resync_thread.start()
        for inf in informers:
            inf.start()

    @property
    def informers(self) -> list[Informer]:
        with self._lock:
            return list(self._informers.values())

    @property
    def threads(self) -> list[threading.Thread]:
        found = [self._resync_thread] if self._resync_thread else []
        for inf in self.informers:
            found += inf.threads
        return found

    def _resync_loop(self) -> None:
        while not self._stop.wait(self.resync):
            for inf in self.informers:
                inf.resync()

    def wait_synced(self, timeout: float) -> bool:
        with self._lock:
            informers = list(self._informers.values())
        return all(inf.wait_synced(timeout) for inf in informers)

    def stop(self) -> None:
        self._stop.set()
        for inf in self.informers:
            inf.stop()

    def join(self, timeout: float) -> list[threading.Thread]:
        with self._lock:
            informers = list(self._informers.values())
        alive: list[threading.Thread] = []
        if self._resync_thread is not None:
            self._resync_thread.join(timeout)
            if self._resync_thread.is_alive():
                alive.append(self._resync_thread)
        for inf in informers:
            alive += inf.join(timeout)
        return alive


def _short(err: BaseException) -> str:
    if isinstance(err, ApiException):
        return f"{err.status} {err.reason}"
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
