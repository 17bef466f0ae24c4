"""agnhost's cobra root: pick the subcommand, parse its flags, and fail the way cobra does.

Only the chosen subcommand's module is imported, so ``pause`` (the image's default CMD) starts fast.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from importlib import import_module
from types import ModuleType

from clusters.lab.programs.agnhost.flags import KLOG_FLAGS, FlagError, FlagKind, HelpRequested, parse, usage

ROOT = "agnhost"
COMMANDS = {
    "connect": "connect",
    "netexec": "netexec",
    "pause": "pause",
    "porter": "porter",
    "serve-hostname": "serve_hostname",
}
# Real agnhost subcommands the lab does not run: say so plainly rather than "unknown command".
NOT_IN_LAB = frozenset(
    {
        "audit-proxy",
        "crd-conversion-webhook",
        "dns-server-list",
        "dns-suffix",
        "entrypoint-tester",
        "etc-hosts",
        "fake-gitserver",
        "fake-registry-server",
        "grpc-health-checking",
        "guestbook",
        "inclusterclient",
        "liveness",
        "logs-generator",
        "mounttest",
        "nettest",
        "no-snat-test",
        "no-snat-test-proxy",
        "port-forward-tester",
        "resource-consumer-controller",
        "tcp-reset",
        "test-webserver",
        "webhook",
        "mounttest-user",
        "net",
    }
)
DEFAULT_CMD = ("pause",)  # the image's CMD: a pod with neither command nor args runs this


def _err(text: str) -> int:
    sys.stderr.write(text)
    return 1


def _root_help() -> str:
    names = "\n".join(f"  {name}" for name in sorted(COMMANDS))
    return (
        f"Usage:\n  {ROOT} [command]\n\nAvailable Commands (lab):\n{names}\n\n"
        f"Flags:\n  -h, --help   help for {ROOT}\n"
    )


def _split_command(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """Find the subcommand as cobra does: the first word that is not a (persistent) flag or its value."""
    takes_value = {f.name for f in KLOG_FLAGS if f.kind is not FlagKind.BOOL}
    rest = list(argv)
    i = 0
    while i < len(rest):
        word = rest[i]
        if not word.startswith("-") or word == "-":
            return word, rest[:i] + rest[i + 1 :]
        if word == "--":
            return None, rest
        if "=" not in word and word.lstrip("-").replace("-", "_") in takes_value:
            i += 1
        i += 1
    return None, rest


def _setup_logging() -> None:
    """Go's ``log`` format on stderr: ``2006/01/02 15:04:05 message``."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%Y/%m/%d %H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def main(argv: Sequence[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Go dies of SIGINT unless a command catches it
    name, rest = _split_command(argv or DEFAULT_CMD)
    if name is None:
        if any(a in ("-h", "--help") for a in rest):
            sys.stdout.write(_root_help())
            return 0
        return _err(_root_help())
    if name in NOT_IN_LAB:
        return _err(
            f'Error: agnhost subcommand "{name}" is not implemented by the knetcheck lab; '
            f"use one of: {', '.join(sorted(COMMANDS))}\n"
        )
    if name not in COMMANDS:
        return _err(f'Error: unknown command "{name}" for "{ROOT}"\nRun \'{ROOT} --help\' for usage.\n')
    module: ModuleType = import_module(f"clusters.lab.programs.agnhost.{COMMANDS[name]}")
    help_text = usage(f"{ROOT} {name}", module.USE, module.FLAGS)
    try:
        parsed = parse(module.FLAGS, rest)
    except HelpRequested:
        sys.stdout.write(f"{module.SHORT}\n\n{help_text}")
        return 0
    except FlagError as exc:
        return _err(f"Error: {exc}\n{help_text}")
    exact, most = getattr(module, "EXACT_ARGS", None), getattr(module, "MAX_ARGS", -1)
    if exact is not None and len(parsed.args) != exact:
        return _err(f"Error: accepts {exact} arg(s), received {len(parsed.args)}\n{help_text}")
    if most >= 0 and len(parsed.args) > most:
        return _err(f"Error: accepts at most {most} arg(s), received {len(parsed.args)}\n{help_text}")
    if name != "pause":
        _setup_logging()
    code: int = module.main(parsed)
    return code
