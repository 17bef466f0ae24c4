"""Progress on long steps (probe pods becoming Ready, probe sweeps): a live line for a person at a
terminal, one log line at each end otherwise.

A nightly job's log must not fill with redraws, and a person watching a 30 s convergence should
see it move; so the pytest plugin picks :class:`RichProgress` only when stderr is a TTY. Steps are
context managers, so a step that fails still closes its live display.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import IO, Protocol

log = logging.getLogger(__name__)


class Step(Protocol):
    def advance(self, n: int = 1) -> None:
        """``n`` more units of the step are done."""

    def note(self, text: str) -> None:
        """Replace the step's status text (e.g. "retry 2: 3 wrong cells")."""


class Progress(Protocol):
    def step(self, title: str, total: int | None = None) -> contextlib.AbstractContextManager[Step]: ...


class _Counter:
    def __init__(self) -> None:
        self.done = 0
        self.text = ""

    def advance(self, n: int = 1) -> None:
        self.done += n

    def note(self, text: str) -> None:
        self.text = text


class LogProgress:
    """One log line when a step starts and one when it ends, with its count and duration."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or log

    @contextlib.contextmanager
    def step(self, title: str, total: int | None = None) -> Iterator[Step]:
        counter = _Counter()
        started = time.monotonic()
        self.log.info("%s: started%s", title, f" (0/{total})" if total else "")
        ok = False
        try:
            yield counter
            ok = True
        finally:
            count = f"{counter.done}/{total}" if total else f"{counter.done}"
            note = f", {counter.text}" if counter.text else ""
            self.log.info("%s: %s %s in %.1fs%s", title, "done" if ok else "stopped at", count,
                          time.monotonic() - started, note)


class _RichStep:
    def __init__(self, progress: object, task: object) -> None:
        self._progress = progress
        self._task = task
        self.done = 0
        self.text = ""

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._progress.advance(self._task, n)  # type: ignore[attr-defined]

    def note(self, text: str) -> None:
        self.text = text
        self._progress.update(self._task, status=text)  # type: ignore[attr-defined]


class RichProgress:
    """A transient ``rich`` bar per step, then one summary line written by ``say``.

    ``stream`` is looked up per step (pytest swaps stderr while capturing); ``suspend`` lets the
    pytest plugin lift output capture for the step's duration.
    """

    def __init__(
        self,
        stream: Callable[[], IO[str]],
        say: Callable[[str], None],
        suspend: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        self._stream = stream
        self._say = say
        self._suspend = suspend

    @contextlib.contextmanager
    def step(self, title: str, total: int | None = None) -> Iterator[Step]:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichBar

        started = time.monotonic()
        ok = False
        with self._suspend():
            console = Console(file=self._stream(), stderr=True)
            bar = RichBar(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
                console=console, transient=True,
            )
            step = _RichStep(bar, None)
            try:
                with bar:
                    step = _RichStep(bar, bar.add_task(title, total=total, status=""))
                    yield step
                    ok = True
            finally:
                count = f"{step.done}/{total}" if total else f"{step.done}"
                note = f", {step.text}" if step.text else ""
                self._say(f"{title}: {'done' if ok else 'stopped at'} {count} in "
                          f"{time.monotonic() - started:.1f}s{note}")
