"""netexec's ``/shell``: ``/bin/sh -c <cmd>`` with combined output, as ``exec.Command(...).CombinedOutput()``.

Probes call ``/agnhost connect …`` through it, but the lab has no ``/agnhost`` file: a simple command
naming agnhost runs this module directly (argument list, no shell). Anything with shell syntax goes to
``/bin/sh`` unchanged, as on a real pod.
"""

from __future__ import annotations

import logging
import os
import sys

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


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH", "")) if p)
    return env


def run(command: str) -> tuple[str, str]:
    """Run ``command``; return (combined output, Go error text or "")."""
    import subprocess  # clusters.proc.run cannot interleave stdout and stderr as CombinedOutput does

    argv = self_argv(command) or ["/bin/sh", "-c", command]
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
