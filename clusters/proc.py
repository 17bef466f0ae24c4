"""The one way this project runs a subprocess: an argument list, a timeout, and a useful error.

Shell strings are never used, so a pod name or path can never be interpreted by a shell, and
every call has a timeout so a hung ``docker exec`` cannot hang a nightly run.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from clusters.errors import CommandFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandResult:
    """What a finished command printed and how it ended."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    stdin: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> CommandResult:
    """Run ``argv`` and return its output; raise :class:`CommandFailed` on failure when ``check``.

    A timeout always raises, whatever ``check`` says: a command that did not finish has no
    result a caller could reason about.
    """
    args = [str(a) for a in argv]
    log.debug("run %s (timeout %.0fs)", args, timeout)
    data = stdin.encode() if isinstance(stdin, str) else stdin
    try:
        proc = subprocess.run(
            args,
            input=data,
            capture_output=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise CommandFailed(args, None, err, timed_out=True) from None
    except FileNotFoundError:
        raise CommandFailed(args, 127, f"{args[0]}: command not found") from None
    result = CommandResult(
        argv=tuple(args),
        returncode=proc.returncode,
        stdout=proc.stdout.decode(errors="replace"),
        stderr=proc.stderr.decode(errors="replace"),
    )
    if check and not result.ok:
        raise CommandFailed(args, result.returncode, result.stderr or result.stdout)
    return result
