"""netexec's ``/shell``: ``/bin/sh -c <cmd>`` with combined output, as ``exec.Command(...).CombinedOutput()``.

Probes call ``/agnhost connect …`` through it, but the lab has no ``/agnhost`` file: a simple command
naming agnhost runs this module directly (argument list, no shell). Anything with shell syntax goes to
``/bin/sh`` unchanged, as on a real pod.

A well-formed ``/agnhost connect HOST:PORT [flags]`` runs the same connect code in this process (in
the request's thread, with its stdout/stderr captured per thread), because a Python start per probe
costs ~0.1 s of CPU: a policy sweep of hundreds of probes took tens of seconds on two cores, where
Go's agnhost starts in milliseconds. The socket is opened in this pod's network namespace either way.
Anything else (usage errors, help) still runs as a child process for the exact cobra text.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from typing import Any, TextIO

from clusters.lab.programs.agnhost.golang import exit_error, strerror

log = logging.getLogger(__name__)

# Upstream has no limit; a cap keeps a forgotten `sleep` from pinning a thread for ever.
SHELL_TIMEOUT_S = 600.0
_SELF_NAMES = ("/agnhost", "agnhost")
_SHELL_SYNTAX = frozenset("|&;<>()$`\\\n*?[#~{}")
# <root>/clusters/lab/programs/agnhost/shell.py -> <root>, so the child can import this package
_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 4))


def self_argv(command: str) -> list[str] | None:
    """The argv running this module for a plain ``/agnhost <args>`` command, else None."""
    stripped = command.strip()
    if not stripped or stripped.split(None, 1)[0] not in _SELF_NAMES:
        return None
    if any(ch in _SHELL_SYNTAX for ch in stripped):
        return None
    import shlex

    try:
        words = shlex.split(stripped)
    except ValueError:
        return None
    return [sys.executable, "-m", "clusters.lab.programs.agnhost", *words[1:]]


_local = threading.local()
_install = threading.Lock()


class _PerThread(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr: a thread running an in-process command writes to its
    own buffer; every other thread writes to the real stream."""

    def __init__(self, real: TextIO) -> None:
        self._real = real

    def write(self, text: str) -> int:
        buffer: io.StringIO | None = getattr(_local, "buffer", None)
        return (buffer if buffer is not None else self._real).write(text)

    def flush(self) -> None:
        if getattr(_local, "buffer", None) is None:
            self._real.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _capture_streams() -> None:
    with _install:
        if not isinstance(sys.stderr, _PerThread):
            sys.stderr = _PerThread(sys.stderr)
        if not isinstance(sys.stdout, _PerThread):
            sys.stdout = _PerThread(sys.stdout)


def connect_in_process(args: list[str]) -> tuple[str, str] | None:
    """``agnhost connect`` with ``args`` run here: (combined output, Go error text), or None when the
    arguments are not a plain connect call (the child process then prints cobra's own message)."""
    from clusters.lab.programs.agnhost import connect
    from clusters.lab.programs.agnhost.flags import FlagError, HelpRequested, parse

    try:
        parsed = parse(connect.FLAGS, args)
    except (FlagError, HelpRequested):
        return None
    if len(parsed.args) != connect.EXACT_ARGS:
        return None
    _capture_streams()
    _local.buffer = io.StringIO()
    try:
        code = connect.main(parsed)
        output = _local.buffer.getvalue()
    finally:
        _local.buffer = None
    return output, exit_error(code) if code else ""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH", "")) if p)
    return env


def run(command: str) -> tuple[str, str]:
    """Run ``command``; return (combined output, Go error text or "")."""
    import subprocess  # clusters.proc.run cannot interleave stdout and stderr as CombinedOutput does

    argv = self_argv(command)
    if argv is not None and argv[3:4] == ["connect"]:
        fast = connect_in_process(argv[4:])
        if fast is not None:
            return fast
    argv = argv or ["/bin/sh", "-c", command]
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=SHELL_TIMEOUT_S,
            env=_env(),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output if isinstance(exc.output, bytes) else b""
        return out.decode(errors="replace"), "signal: killed"
    except OSError as exc:
        return "", f"fork/exec {argv[0]}: {strerror(exc.errno)}"
    return proc.stdout.decode(errors="replace"), exit_error(proc.returncode) if proc.returncode else ""
