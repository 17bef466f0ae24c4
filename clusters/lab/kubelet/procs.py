"""Watching and stopping container processes by pid.

The runtime starts a container with ``start_process`` and hands back a pid (the launcher execs,
so it is the program's pid and a child of this process). The kubelet reaps it with ``waitpid``
to learn the exit code, and signals its process group when it leads one (the runtime starts
containers in a new session), which stops helper children too, as a cgroup kill would.
A runtime that keeps its children's ``Popen`` objects reaps them itself; :func:`poller_for`
asks it instead, so the two never race for the same exit status.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)

UNKNOWN_EXIT = 255
"""Exit code reported when the process was not ours to reap and is gone."""


@dataclass(frozen=True)
class Exit:
    code: int
    """Exit status, or 128 + signal number (what the kubelet reports for a killed container)."""
    signal: int = 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def poll(pid: int) -> Exit | None:
    """The exit of ``pid`` if it has ended (reaping it), else ``None``."""
    try:
        wpid, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        if _alive(pid):
            return None
        log.warning("pid %d ended but was not our child: exit code unknown", pid)
        return Exit(UNKNOWN_EXIT)
    if wpid == 0:
        return None
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return Exit(128 + sig, sig)
    return Exit(os.waitstatus_to_exitcode(status))


def send(pid: int, sig: int) -> None:
    """Signal the container: its whole process group when it leads one."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


Poller = Callable[[int], "Exit | None"]


def from_returncode(code: int | None) -> Exit | None:
    """A ``Popen.returncode`` (negative for a signal) as an :class:`Exit`."""
    if code is None:
        return None
    return Exit(128 - code, -code) if code < 0 else Exit(code)


@runtime_checkable
class ReapingRuntime(Protocol):
    """A runtime that reaps its own children (LabNodeRuntime keeps their Popen objects)."""

    def process_returncode(self, pid: int) -> int | None: ...


def poller_for(runtime: object) -> Poller:
    """How to learn whether a container of ``runtime`` exited: ask it when it reaps, else waitpid."""
    if isinstance(runtime, ReapingRuntime):
        return lambda pid: from_returncode(runtime.process_returncode(pid))
    return poll


def wait(pid: int, timeout: float, step: float = 0.02, poller: Poller = poll) -> Exit | None:
    deadline = time.monotonic() + timeout
    while True:
        result = poller(pid)
        if result is not None or time.monotonic() >= deadline:
            return result
        time.sleep(step)


SIGTERM = signal.SIGTERM


def kill_group(pids: list[int], grace: float, poller: Poller = poll) -> dict[int, Exit]:
    """SIGTERM every pid, wait up to ``grace`` seconds, SIGKILL the rest; returns their exits."""
    exits: dict[int, Exit] = {}
    leaders = {pid for pid in pids if leads_group(pid)}
    for pid in pids:
        send(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    pending = list(pids)
    while pending:
        for pid in list(pending):
            result = poller(pid)
            if result is not None:
                exits[pid] = result
                pending.remove(pid)
        if not pending:
            break
        if time.monotonic() >= deadline:
            for pid in pending:
                send(pid, signal.SIGKILL)
            for pid in pending:
                exits[pid] = wait(pid, 10.0, poller=poller) or Exit(128 + signal.SIGKILL, signal.SIGKILL)
            break
        time.sleep(0.02)
    kill_leftovers(leaders)
    return exits


def kill_leftovers(leaders: set[int]) -> None:
    """SIGKILL the process groups of stopped containers: children the program left behind (a
    shell spawned by netexec /shell) die with it, as they would in a cgroup kill."""
    for pid in leaders:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False
