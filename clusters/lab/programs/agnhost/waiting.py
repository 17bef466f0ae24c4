"""Blocking the main thread until a signal (or a wake-up from another thread), without polling.

Two traps this avoids. A signal sent right after a "started" log line must not meet the default action,
so handlers are installed when the object is made. And the kernel may deliver a process signal to any
thread: a main thread parked in ``Event.wait()`` would then never run the Python handler. So the main
thread sleeps in ``select()`` on a pipe that ``signal.set_wakeup_fd`` writes to, whichever thread the
signal hit.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Callable
from types import FrameType

FALLBACK_WAKE_S = 1.0  # belt and braces: re-check the condition at least this often


class SignalWait:
    def __init__(self, *signums: int, on_signal: Callable[[int], None] | None = None) -> None:
        self.received: list[int] = []
        self._on_signal = on_signal
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for signum in signums:
            signal.signal(signum, self._handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if self._on_signal is not None:
            self._on_signal(signum)

    def wake(self) -> None:
        """Make ``wait`` re-check its condition; safe from any thread."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b"\0")

    def wait(self, until: Callable[[], bool] | None = None) -> int:
        """Block until ``until()`` holds (default: a signal arrived); return the first signal or 0."""
        done = until or (lambda: bool(self.received))
        while not done():
            select.select([self._read], [], [], FALLBACK_WAKE_S)
            with contextlib.suppress(BlockingIOError):
                while os.read(self._read, 512):
                    pass
        return self.received[0] if self.received else 0
