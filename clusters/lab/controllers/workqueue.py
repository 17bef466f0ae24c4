"""A work queue with client-go's guarantees: a key is queued once, never processed by two workers at
once, re-queued if it changed while being processed; delayed and rate-limited adds.

Controllers put keys here from informer handlers and reconcile from the cache, so a burst of events
for one object costs one sync, and reaction time is the wake-up of a condition variable, not a poll.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time


class ShutDown(Exception):
    """The queue was shut down; the worker should exit."""


class WorkQueue:
    def __init__(self, *, base_delay: float = 0.005, max_delay: float = 5.0) -> None:
        self._cond = threading.Condition()
        self._queue: list[str] = []
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._delayed: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._failures: dict[str, int] = {}
        self._waiting: dict[str, float] = {}
        self._base = base_delay
        self._max = max_delay
        self._shutdown = False

    def add(self, key: str) -> None:
        with self._cond:
            if self._shutdown or key in self._dirty:
                return
            self._dirty.add(key)
            if key not in self._processing:
                self._queue.append(key)
                self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutdown:
                return
            due = time.monotonic() + delay
            if key in self._waiting and self._waiting[key] <= due:
                return
            self._waiting[key] = due
            heapq.heappush(self._delayed, (due, next(self._seq), key))
            self._cond.notify_all()

    def add_rate_limited(self, key: str) -> None:
        with self._cond:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        self.add_after(key, min(self._max, self._base * (2**n)))

    def forget(self, key: str) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def get(self) -> str:
        """Block until a key is due; raise :class:`ShutDown` once the queue is shut down."""
        with self._cond:
            while True:
                if self._shutdown:
                    raise ShutDown
                self._promote_due()
                if self._queue:
                    key = self._queue.pop(0)
                    self._processing.add(key)
                    self._dirty.discard(key)
                    return key
                timeout = self._delayed[0][0] - time.monotonic() if self._delayed else None
                self._cond.wait(timeout)

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def _promote_due(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            due, _, key = heapq.heappop(self._delayed)
            if self._waiting.get(key) != due:
                continue
            del self._waiting[key]
            if key not in self._dirty:
                self._dirty.add(key)
                if key not in self._processing:
                    self._queue.append(key)
