"""The ``knetcheck`` command: ``test`` runs the suite through pytest, ``lab`` manages the embedded lab.

``knetcheck test`` takes exactly the options ``pytest`` takes (both come from
:data:`clusters.options.OPTIONS`), validates them before pytest starts, so a typo costs one line
and not a pytest start-up, and passes anything after ``--`` to pytest unchanged. Every expected
failure is one line on stderr and exit status 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, cast

from clusters import options
from clusters.errors import KnetcheckError

PROG = "knetcheck"
USAGE_EXIT = 2
_DELEGATES = {
    "lab": ("clusters.lab.cli", "the embedded lab", "start, stop, inspect and sweep the embedded lab"),
    "doctor": ("faults.doctor.cli", "the doctor", "diagnose a running cluster's network (exit 1: findings)"),
}
"""Subcommands owned by other packages: ``knetcheck <name> ...`` calls ``<module>.main(argv)``."""
SUITE_DIRS = ("conformance", "chaos")
"""The test packages under ``suites/`` that ``knetcheck test`` runs when no path is given."""


class _Usage(Exception):
    """A command-line mistake; the message is the one line to print."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a mistake as one line instead of a usage dump and a message."""

    def error(self, message: str) -> NoReturn:
        raise _Usage(f"{message} (see {self.prog} --help)")


def _parser() -> _Parser:
    parser = _Parser(prog=PROG, description="Kubernetes network conformance and chaos suite.")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    test = subs.add_parser(
        "test",
        help="run the suite with pytest (options as for pytest; pytest arguments after --)",
        description="Run the knetcheck suite. Arguments after -- go to pytest unchanged, "
        "e.g. knetcheck test --cni=calico -- -k dns -x",
    )
    options.add_to_argparse(test)
    for name, (_, _, summary) in _DELEGATES.items():
        subs.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in _DELEGATES:
            return _delegate(args[0], args[1:])
        return _dispatch(args)
    except (_Usage, KnetcheckError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return USAGE_EXIT


def _dispatch(args: list[str]) -> int:
    ours, extra = _split(args)
    parser = _parser()
    ns = parser.parse_args(ours)
    if ns.command is None:
        raise _Usage(f"say what to do: {' or '.join(['test', *_DELEGATES])} (see {PROG} --help)")
    values = options.given_values(lambda dest: getattr(ns, dest))
    return run_tests(values, extra)


def _split(args: list[str]) -> tuple[list[str], list[str]]:
    """Our arguments, and pytest's (everything after the first ``--``)."""
    if "--" in args:
        at = args.index("--")
        return args[:at], args[at + 1 :]
    return args, []


def run_tests(values: dict[str, object], extra: list[str]) -> int:
    """Validate the options, then run pytest in this process on the suite (or the paths in ``extra``)."""
    import pytest

    options.parse(values)  # fail fast, in one line, before pytest starts
    targets = [] if any(_is_path(a) for a in extra) else _suite_targets()
    return int(pytest.main([*targets, *options.to_argv(values), *extra]))


def _suite_targets() -> list[str]:
    import suites

    root = Path(next(iter(suites.__path__)))  # works for a regular and an editable-install namespace
    return [str(root / name) for name in SUITE_DIRS if (root / name).is_dir()]


def _is_path(arg: str) -> bool:
    return not arg.startswith("-") and Path(arg.split("::", 1)[0]).exists()


def _delegate(name: str, argv: list[str]) -> int:
    module_name, what, _ = _DELEGATES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise
        raise _Usage(f"{what} is not available in this installation ({module_name} is missing)") from None
    entry = cast(Callable[[list[str]], int | None], module.main)
    return int(entry(argv) or 0)
