"""Restart back-off as the kubelet computes it (client-go ``flowcontrol.Backoff``).

Kept exact because detection tests read it: the first crash restarts at once, the next waits
10 s, then 20 s, 40 s … capped at 300 s, and an entry expires when the container finished more
than twice the cap after its last restart (kubelet's "reset after 10 minutes of running").
The same schedule paces image pulls (``ImagePullBackOff``) and sandbox retries.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    base: float = 10.0
    cap: float = 300.0

    @property
    def expiry(self) -> float:
        return 2 * self.cap


@dataclass(frozen=True)
class _Entry:
    delay: float
    last_update: float


class Backoff:
    """Per-key back-off; times are monotonic seconds passed in by the caller (testable)."""

    def __init__(self, policy: BackoffPolicy) -> None:
        self.policy = policy
        self._entries: dict[str, _Entry] = {}

    def _expired(self, entry: _Entry, event_time: float) -> bool:
        return event_time - entry.last_update > self.policy.expiry

    def in_backoff(self, key: str, event_time: float, now: float) -> bool:
        """True while ``now`` is within the current delay after ``event_time`` (the exit)."""
        entry = self._entries.get(key)
        if entry is None or self._expired(entry, event_time):
            return False
        return now - event_time < entry.delay

    def in_backoff_since_update(self, key: str, now: float) -> bool:
        """Image pulls: back off until the current delay has passed since the last attempt."""
        entry = self._entries.get(key)
        if entry is None or self._expired(entry, now):
            return False
        return now - entry.last_update < entry.delay

    def remaining_since_update(self, key: str, now: float) -> float:
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return max(0.0, entry.delay - (now - entry.last_update))

    def remaining(self, key: str, event_time: float, now: float) -> float:
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return max(0.0, entry.delay - (now - event_time))

    def get(self, key: str) -> float:
        entry = self._entries.get(key)
        return entry.delay if entry else 0.0

    def next(self, key: str, event_time: float, now: float) -> None:
        """Record a restart: start at ``base`` or double up to ``cap``."""
        entry = self._entries.get(key)
        if entry is None or self._expired(entry, event_time):
            delay = self.policy.base
        else:
            delay = min(entry.delay * 2, self.policy.cap)
        self._entries[key] = _Entry(delay=delay, last_update=now)

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)


def go_duration(seconds: float) -> str:
    """Format like Go's ``time.Duration.String()``: ``10s``, ``2m40s``, ``5m0s``, ``200ms``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms" if ms >= 1 else f"{seconds * 1e6:g}µs"
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    sec_text = f"{secs:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{sec_text}"
    if minutes:
        return f"{int(minutes)}m{sec_text}"
    return sec_text
