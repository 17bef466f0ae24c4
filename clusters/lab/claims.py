"""Which lab owns a name prefix, so that starting or stopping one lab never sweeps another's.

A lab names every namespace and link it makes with its prefix, and ``up``/``down`` sweep by
that prefix to clear a crashed lab's leftovers. Two labs with the same prefix but different
state directories (a user's ``make lab-up`` and a test run pointed elsewhere with
``KNETCHECK_LAB_DIR``) would tear down each other's networks. A claim file per prefix names the
state directory that owns it; ``up`` refuses a prefix a live lab elsewhere holds, and ``down``
sweeps only a prefix that is unowned or its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from clusters.errors import UsageProblem
from clusters.lab import layout

CLAIMS_DIR = Path("/run/knetcheck-lab-prefixes")
"""On tmpfs like the lab's namespaces: a reboot clears both."""
PREFIX_ENV = "KNETCHECK_LAB_PREFIX"
_PREFIX_RE = re.compile(r"^kncl-([a-z0-9]+-){0,2}$")
MAX_PREFIX = 16


def check_prefix(prefix: str) -> str:
    """The prefix if well-formed; else one line naming the rule."""
    if not _PREFIX_RE.match(prefix) or len(prefix) > MAX_PREFIX:
        raise UsageProblem(
            f"lab prefix {prefix!r}: use {layout.PREFIX!r} followed by up to two lower-case words each "
            f"ending in '-', at most {MAX_PREFIX} characters, e.g. 'kncl-ci-'"
        )
    return prefix


def default_prefix() -> str:
    """``KNETCHECK_LAB_PREFIX`` if set (two labs side by side), else :data:`layout.PREFIX`."""
    return check_prefix(os.environ.get(PREFIX_ENV) or layout.PREFIX)


def _claim_file(prefix: str, claims_dir: Path) -> Path:
    return claims_dir / prefix.rstrip("-")


@contextlib.contextmanager
def _locked(claims_dir: Path) -> Iterator[None]:
    """An exclusive lock on ``claims_dir/.lock``; the last release removes the directory, so a
    waiter that got the lock on a removed file starts over on a fresh one."""
    lock_path = claims_dir / ".lock"
    while True:
        claims_dir.mkdir(parents=True, exist_ok=True)
        try:
            lock = lock_path.open("a")
        except FileNotFoundError:
            continue
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = os.stat(lock_path).st_ino
            except FileNotFoundError:
                current = -1
            if current != os.fstat(lock.fileno()).st_ino:
                continue
            try:
                yield
            finally:
                if not [f for f in claims_dir.iterdir() if f.name != ".lock"]:
                    lock_path.unlink(missing_ok=True)
                    with contextlib.suppress(OSError):
                        claims_dir.rmdir()
                fcntl.flock(lock, fcntl.LOCK_UN)
            return


def owner(prefix: str, claims_dir: Path = CLAIMS_DIR) -> Path | None:
    try:
        text = _claim_file(prefix, claims_dir).read_text().strip()
    except OSError:
        return None
    return Path(text) if text else None


def claim(prefix: str, root: Path, running: Callable[[Path], bool], claims_dir: Path = CLAIMS_DIR) -> None:
    """Take ``prefix`` for the lab in ``root``, unless a running lab elsewhere holds it."""
    with _locked(claims_dir):
        held_by = owner(prefix, claims_dir)
        if held_by is not None and held_by.resolve() != root.resolve() and running(held_by):
            raise UsageProblem(
                f"the lab name prefix {prefix!r} belongs to the lab running in {held_by}: stop it "
                f"(KNETCHECK_LAB_DIR={held_by} knetcheck lab down) or give this lab its own prefix "
                f"with {PREFIX_ENV}=kncl-<word>-"
            )
        _claim_file(prefix, claims_dir).write_text(f"{root.resolve()}\n")


def may_sweep(
    prefix: str, root: Path, running: Callable[[Path], bool], claims_dir: Path = CLAIMS_DIR
) -> bool:
    """Whether the lab in ``root`` may sweep ``prefix``: nobody else running holds it."""
    held_by = owner(prefix, claims_dir)
    return held_by is None or held_by.resolve() == root.resolve() or not running(held_by)


def release(prefix: str, root: Path, claims_dir: Path = CLAIMS_DIR) -> None:
    """Drop the claim if it is ``root``'s."""
    with _locked(claims_dir):
        held_by = owner(prefix, claims_dir)
        if held_by is not None and held_by.resolve() == root.resolve():
            _claim_file(prefix, claims_dir).unlink(missing_ok=True)
