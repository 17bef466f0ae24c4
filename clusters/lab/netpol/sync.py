"""The policy controller of the lab CNI agent: API objects in, this node's ``KNP-*`` chains out.

Three informers (list, then watch from the list's resourceVersion; relist on 410 or error)
keep Namespaces, Pods and NetworkPolicies in memory. Any change marks the model dirty; after a
short debounce (so a Deployment's pods or a ``kubectl apply`` of several policies cost one
write) the node's rules are rendered and written with one ``iptables-restore --noflush`` —
atomic, and touching only ``KNP-*`` chains plus the single ``FORWARD -j KNP-FORWARD`` jump, so
kube-proxy's and portmap's chains are never flushed. Nothing is applied before every informer
has listed once: applying a partial model would briefly open isolated pods after a restart.
On SIGTERM the agent just exits: the rules stay, like a real CNI agent's (pods keep their
policy while the agent is down).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from clusters.errors import KnetcheckError
from clusters.lab.netpol import rules
from clusters.lab.netpol.model import (
    Model,
    Namespace,
    Pod,
    Policy,
    PolicyError,
    parse_namespace,
    parse_pod,
    parse_policy,
)
from clusters.proc import run

log = logging.getLogger(__name__)

DEBOUNCE = 0.05
"""Seconds to coalesce bursts of events before rendering (the brief's bound is 100 ms)."""
RESYNC = 10.0
"""Re-apply at least this often, so a flushed chain, a deleted jump or a jump that another
agent pushed down from the top of FORWARD comes back."""
WATCH_TIMEOUT = 30
RETRY = 1.0
IPTABLES_TIMEOUT = 15.0

T = TypeVar("T")


@dataclass(frozen=True)
class Applied:
    """One write: how long rendering and applying took, and how big the result was."""

    chains: int
    rules: int
    render_seconds: float
    apply_seconds: float


class Applier(Protocol):
    def current(self) -> rules.Kernel:
        """Our chains and FORWARD jumps as the kernel has them now."""
        ...

    def apply(self, text: str) -> None: ...


class IptablesApplier:
    """Real iptables in the current network namespace; ``prefix`` (e.g. ``ip netns exec NS``)
    runs them in another one, which tests use."""

    def __init__(self, prefix: Sequence[str] = ()):
        self.prefix = list(prefix)

    def current(self) -> rules.Kernel:
        save = run([*self.prefix, "iptables-save", "-t", "filter"], timeout=IPTABLES_TIMEOUT).stdout
        return rules.Kernel.parse(save)

    def apply(self, text: str) -> None:
        run([*self.prefix, "iptables-restore", "--noflush", "-w", "5"], timeout=IPTABLES_TIMEOUT, stdin=text)


class _Cache(Generic[T]):
    def __init__(self, kind: str, parse: Callable[[Mapping[str, Any]], T]):
        self.kind = kind
        self.parse = parse
        self.items: dict[str, T] = {}
        self.listed = False


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class PolicySync:
    """Keeps one node's policy rules current. :meth:`start` runs it on daemon threads."""

    def __init__(
        self,
        node: str,
        api_client: Any,
        applier: Applier | None = None,
        *,
        debounce: float = DEBOUNCE,
        resync: float = RESYNC,
    ):
        from kubernetes import client

        self.node = node
        self.applier: Applier = applier or IptablesApplier()
        self.debounce = debounce
        self.resync = resync
        core: Any = client.CoreV1Api(api_client)
        net: Any = client.NetworkingV1Api(api_client)
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._namespaces: _Cache[Namespace] = _Cache("namespaces", parse_namespace)
        self._pods: _Cache[Pod] = _Cache("pods", parse_pod)
        self._policies: _Cache[Policy] = _Cache("networkpolicies", parse_policy)
        self._sources: list[tuple[_Cache[Any], Callable[..., Any]]] = [
            (self._namespaces, core.list_namespace),
            (self._pods, core.list_pod_for_all_namespaces),
            (self._policies, net.list_network_policy_for_all_namespaces),
        ]
        self._applied_ruleset: rules.Ruleset | None = None
        self.last: Applied | None = None
        self.applied_count = 0
        self.applied = threading.Condition()
        self._threads: list[threading.Thread] = []

    # ---- informers -------------------------------------------------------------------------

    def _store(self, cache: _Cache[Any], obj: Mapping[str, Any], deleted: bool) -> None:
        key = _key(obj)
        with self._lock:
            if deleted:
                cache.items.pop(key, None)
            else:
                try:
                    cache.items[key] = cache.parse(obj)
                except (PolicyError, ValueError) as exc:
                    log.error("ignoring %s %s: %s", cache.kind, key, exc)
                    cache.items.pop(key, None)
        self._dirty.set()

    def _list(self, cache: _Cache[Any], fn: Callable[..., Any]) -> str:
        resp = fn(_preload_content=False)
        data = json.loads(resp.data)
        items = {}
        for obj in data.get("items") or []:
            try:
                items[_key(obj)] = cache.parse(obj)
            except (PolicyError, ValueError) as exc:
                log.error("ignoring %s %s: %s", cache.kind, _key(obj), exc)
        with self._lock:
            cache.items = items
            cache.listed = True
        self._dirty.set()
        return str((data.get("metadata") or {}).get("resourceVersion") or "")

    def _inform(self, cache: _Cache[Any], fn: Callable[..., Any]) -> None:
        from kubernetes import watch

        rv = ""
        while not self._stop.is_set():
            try:
                if not rv:
                    rv = self._list(cache, fn)
                w: Any = watch.Watch()  # type: ignore[no-untyped-call]
                for event in w.stream(fn, resource_version=rv, timeout_seconds=WATCH_TIMEOUT):
                    raw = event.get("raw_object") or {}
                    kind = event.get("type")
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._store(cache, raw, kind == "DELETED")
                    rv = str((raw.get("metadata") or {}).get("resourceVersion") or rv)
                    if self._stop.is_set():
                        w.stop()
                        break
            except Exception as exc:  # any API or network failure: relist later
                log.warning("%s watch failed (%s); relisting in %.0fs", cache.kind, exc, RETRY)
                rv = ""
                self._stop.wait(RETRY)

    # ---- rendering and applying ------------------------------------------------------------

    def model(self) -> Model:
        with self._lock:
            return Model(
                namespaces=tuple(self._namespaces.items.values()),
                pods=tuple(self._pods.items.values()),
                policies=tuple(self._policies.items.values()),
            )

    def ready(self) -> bool:
        with self._lock:
            return all(cache.listed for cache, _ in self._sources)

    def sync_once(self, *, force: bool = False) -> Applied | None:
        """Render and, when the rules changed (or ``force``), apply; returns what it did."""
        start = time.monotonic()
        ruleset = rules.render(self.node, self.model())
        rendered = time.monotonic()
        if ruleset == self._applied_ruleset and not force:
            return None
        self.applier.apply(rules.restore_text(ruleset, self.applier.current()))
        done = time.monotonic()
        self._applied_ruleset = ruleset
        applied = Applied(
            chains=len(ruleset.chains),
            rules=sum(len(r) for _, r in ruleset.chains),
            render_seconds=rendered - start,
            apply_seconds=done - rendered,
        )
        with self.applied:
            self.last = applied
            self.applied_count += 1
            self.applied.notify_all()
        log.info(
            "node %s: applied %d KNP chains, %d rules (render %.1f ms, iptables-restore %.1f ms)",
            self.node,
            applied.chains,
            applied.rules,
            applied.render_seconds * 1000,
            applied.apply_seconds * 1000,
        )
        return applied

    def _loop(self) -> None:
        last_full = 0.0
        while not self._stop.is_set():
            self._dirty.wait(timeout=self.resync)
            if self._stop.is_set():
                return
            if self._dirty.is_set():
                self._stop.wait(self.debounce)
            self._dirty.clear()
            if not self.ready():
                continue
            force = time.monotonic() - last_full >= self.resync
            try:
                if self.sync_once(force=force) is not None and force:
                    last_full = time.monotonic()
            except Exception as exc:  # keep enforcing whatever failed: log it and retry
                if isinstance(exc, KnetcheckError):
                    log.error("node %s: applying policy rules failed: %s; retrying", self.node, exc)
                else:
                    log.exception("node %s: rendering or applying policy rules failed; retrying", self.node)
                self._applied_ruleset = None
                self._stop.wait(RETRY)
                self._dirty.set()

    def start(self) -> None:
        for cache, fn in self._sources:
            name = f"netpol-{cache.kind}"
            t = threading.Thread(target=self._inform, args=(cache, fn), name=name, daemon=True)
            t.start()
            self._threads.append(t)
        loop = threading.Thread(target=self._loop, name="netpol-sync", daemon=True)
        loop.start()
        self._threads.append(loop)

    def stop(self) -> None:
        """Stop the threads (they exit within one watch timeout); the rules stay in place."""
        self._stop.set()
        self._dirty.set()

    def wait_applied(self, after: int, timeout: float) -> bool:
        """Block until more than ``after`` writes happened (tests and the agent's first sync)."""
        with self.applied:
            return self.applied.wait_for(lambda: self.applied_count > after, timeout)
