"""Errors that reach a person as one line: what is wrong and how to fix it.

A platform engineer running the suite at 3 a.m. should never read a traceback for bad input,
so every expected failure is one of these, and the CLI and the pytest plugin print ``str(err)``.
"""

from __future__ import annotations


class KnetcheckError(Exception):
    """An expected failure whose message is one line naming the problem and the fix."""


class UsageProblem(KnetcheckError):
    """Bad input from the user: an unknown CNI, an unreadable kubeconfig, an unsupported option."""


class ClusterUnavailable(KnetcheckError):
    """The cluster could not be obtained or reached (no Docker engine, no root for the lab, …)."""


class CommandFailed(KnetcheckError):
    """A subprocess failed; the message carries the command, its exit code and the tail of stderr."""

    def __init__(self, argv: list[str], returncode: int | None, stderr: str, *, timed_out: bool = False):
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        self.timed_out = timed_out
        tail = " | ".join(line for line in stderr.strip().splitlines()[-5:] if line.strip())
        status = "timed out" if timed_out else f"exited {returncode}"
        super().__init__(f"command {' '.join(argv)!r} {status}" + (f": {tail}" if tail else ""))
