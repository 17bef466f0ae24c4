"""The proxier's loop: watch Services + EndpointSlices, sync rules rate-limited; healthz/metrics answers.

Like client-go informers feeding kube-proxy's ``BoundedFrequencyRunner``: every change queues a
sync; syncs run at most ``minSyncPeriod`` apart after a burst of two (a token bucket), and at
least every ``syncPeriod`` (a full resync that also re-ensures the jump rules). The healthz server
answers with the real JSON shape; it turns 503 when an update has been queued for longer than
``2 * syncPeriod`` without a successful sync, as ``pkg/proxy/healthcheck/proxy_health.go`` does.
Stopping never removes rules: a dead kube-proxy leaves the node's last rules in place.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from clusters.lab.controllers.client import JSON, Kube
from clusters.lab.controllers.informer import Handlers, Informer
from clusters.lab.programs.kubeproxy.iptables import IptablesRunner
from clusters.lab.programs.kubeproxy.options import RenderOptions
from clusters.lab.programs.kubeproxy.render import render
from clusters.lab.programs.kubeproxy.serving import Route
from clusters.lab.programs.kubeproxy.state import build_state

log = logging.getLogger("kube-proxy")

PROXY_SELECTOR = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
"""The label selector kube-proxy's informers use (server.go Run)."""


def go_time(ts: float | None) -> str:
    """Go's time.Time.String() in UTC (no monotonic suffix); the zero time when ``ts`` is None."""
    if ts is None:
        return "0001-01-01 00:00:00 +0000 UTC"
    dt = datetime.fromtimestamp(ts, UTC)
    frac = f"{dt.microsecond:06d}".rstrip("0")
    return dt.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "") + " +0000 UTC"


class HealthState:
    """ProxyHealthServer's bookkeeping: last successful sync and the oldest unsynced update."""

    def __init__(self, timeout: float, clock: Callable[[], float] = time.time) -> None:
        self.timeout = timeout
        self.clock = clock
        self._lock = threading.Lock()
        self.last_updated: float | None = None
        self.oldest_pending: float | None = None

    def queued(self) -> None:
        with self._lock:
            if self.oldest_pending is None:
                self.oldest_pending = self.clock()

    def updated(self) -> None:
        with self._lock:
            self.last_updated = self.clock()
            self.oldest_pending = None

    def status(self) -> tuple[int, str]:
        with self._lock:
            now = self.clock()
            healthy = self.oldest_pending is None or now - self.oldest_pending <= self.timeout
            body = (
                f'{{"lastUpdated": "{go_time(self.last_updated)}","currentTime": "{go_time(now)}", '
                f'"nodeEligible": true}}'
            )
        return (200 if healthy else 503), body


class TokenBucket:
    """golang.org/x/time/rate-style limiter: ``burst`` tokens, one more every ``interval`` seconds."""

    def __init__(self, interval: float, burst: int = 2, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.burst, self.clock = interval, burst, clock
        self.tokens = float(burst)
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        if self.interval <= 0:
            self.tokens = float(self.burst)
        else:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) / self.interval)
        self.stamp = now

    def wait_time(self) -> float:
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) * self.interval

    def take(self) -> None:
        self._refill()
        self.tokens -= 1


@dataclass
class Metrics:
    syncs: int = 0
    sync_seconds: float = 0.0
    last_sync: float = 0.0
    restore_failures: int = 0


class Proxier:
    """Informers → rules. ``start`` runs it in threads; ``stop`` leaves every rule in place."""

    def __init__(
        self,
        kube: Kube,
        options: RenderOptions,
        *,
        mode: str,
        min_sync_period: float,
        sync_period: float,
        runner: IptablesRunner | None = None,
    ) -> None:
        self.kube = kube
        self.options = options
        self.mode = mode
        self.runner = runner or IptablesRunner()
        self.sync_period = sync_period
        self.bucket = TokenBucket(min_sync_period)
        self.health = HealthState(2 * sync_period)
        self.metrics = Metrics()
        query = [("labelSelector", PROXY_SELECTOR)]
        self.services = Informer(kube, "/api/v1/services", query=query)
        self.slices = Informer(kube, "/apis/discovery.k8s.io/v1/endpointslices", query=query)
        self._cond = threading.Condition()
        self._pending = False
        self._need_full = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- events --------------------------------------------------------------------------------

    def queue(self, *_: JSON) -> None:
        """An informer event: a sync is due (the handlers only enqueue, as informers require)."""
        self.health.queued()
        with self._cond:
            self._pending = True
            self._cond.notify()

    def start(self) -> None:
        """Start the informers and the sync thread; the first sync waits for both caches."""
        handlers = Handlers(on_add=self.queue, on_update=self.queue, on_delete=self.queue)
        for inf, name in ((self.services, "service config"), (self.slices, "endpoint slice config")):
            log.info("Starting %s controller", name)
            inf.add_handlers(handlers)
            inf.start()
        self._thread = threading.Thread(target=self._run, name="sync-runner", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for inf, name in ((self.services, "service config"), (self.slices, "endpoint slice config")):
            log.info("Waiting for caches to sync", extra={"kv": {"controller": name}})
            while not inf.wait_synced(1.0):
                if self._stop.is_set():
                    return
            log.info("Caches are synced", extra={"kv": {"controller": name}})
        self.queue()
        self._loop()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify()
        self.services.stop()
        self.slices.stop()

    # -- the runner ----------------------------------------------------------------------------

    def _loop(self) -> None:
        next_full = 0.0
        while not self._stop.is_set():
            with self._cond:
                while not self._pending and not self._stop.is_set():
                    remaining = next_full - time.monotonic()
                    if remaining <= 0:
                        self._need_full = True
                        break
                    self._cond.wait(remaining)
                self._pending = False
            if self._stop.is_set():
                return
            delay = self.bucket.wait_time()
            if delay > 0 and self._stop.wait(delay):
                return
            self.bucket.take()
            ok = self.sync_once()
            next_full = time.monotonic() + self.sync_period
            if not ok:
                log.info("Sync failed", extra={"kv": {"retryingTime": f"{self.sync_period:g}s"}})

    def sync_once(self) -> bool:
        """One syncProxyRules: render from the caches and restore; True on success."""
        start = time.monotonic()
        full = self._need_full
        try:
            if full:
                self.runner.ensure_jumps()
            state = build_state(self.services.objects(), self.slices.objects())
            opts = _with_chains(self.options, self.runner.nat_chains())
            data = render(state, opts)
            self.runner.restore(data)
        except Exception as err:
            self._need_full = True
            self.metrics.restore_failures += 1
            log.error("Failed to execute iptables-restore", extra={"kv": {"err": str(err)}})
            return False
        self._need_full = False
        elapsed = time.monotonic() - start
        self.metrics.syncs += 1
        self.metrics.sync_seconds += elapsed
        self.metrics.last_sync = time.time()
        self.health.updated()
        log.debug(
            "SyncProxyRules complete elapsed=%.3fs services=%d full=%s", elapsed, len(state.services), full
        )
        return True


def _with_chains(opts: RenderOptions, chains: frozenset[str]) -> RenderOptions:
    from dataclasses import replace

    return replace(opts, existing_nat_chains=chains)


# -- HTTP endpoints ----------------------------------------------------------------------------


def health_routes(health: HealthState) -> dict[str, Route]:
    def healthz() -> tuple[int, str, str]:
        code, body = health.status()
        return code, "application/json", body

    return {"/healthz": healthz, "/livez": healthz}


def metrics_routes(proxier: Proxier) -> dict[str, Route]:
    def metrics() -> tuple[int, str, str]:
        m = proxier.metrics
        text = (
            "# TYPE kubeproxy_sync_proxy_rules_duration_seconds summary\n"
            f"kubeproxy_sync_proxy_rules_duration_seconds_sum {m.sync_seconds:.6f}\n"
            f"kubeproxy_sync_proxy_rules_duration_seconds_count {m.syncs}\n"
            "# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge\n"
            f"kubeproxy_sync_proxy_rules_last_timestamp_seconds {m.last_sync:.3f}\n"
            "# TYPE kubeproxy_sync_proxy_rules_iptables_restore_failures_total counter\n"
            f"kubeproxy_sync_proxy_rules_iptables_restore_failures_total {m.restore_failures}\n"
        )
        return 200, "text/plain; version=0.0.4; charset=utf-8", text

    def proxy_mode() -> tuple[int, str, str]:
        return 200, "text/plain; charset=utf-8", proxier.mode

    return {"/metrics": metrics, "/proxyMode": proxy_mode}
