"""A pflag/cobra-compatible flag parser, so bad flags fail with the exact errors agnhost prints.

Only what agnhost's commands use: long flags (``--name=value`` or ``--name value``), booleans
(``--tcp``, ``--http=false``), ints, strings and Go durations; positional arguments may be interleaved.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

FlagValue = bool | int | str | float


class FlagKind(enum.Enum):
    BOOL = "bool"
    INT = "int"
    STRING = "string"
    DURATION = "duration"  # stored as float seconds


class Flag(NamedTuple):
    name: str
    kind: FlagKind
    default: FlagValue
    usage: str


class FlagError(Exception):
    """A cobra-style flag error; ``str()`` is the text after ``Error: ``."""


class HelpRequested(Exception):
    """``-h``/``--help`` was given."""


# klog's flags are persistent on agnhost's root command; tests pass e.g. ``--v=4``. Accepted, ignored.
KLOG_FLAGS: tuple[Flag, ...] = tuple(
    Flag(name, kind, default, "klog flag (ignored by the lab)")
    for name, kind, default in (
        ("v", FlagKind.INT, 0),
        ("vmodule", FlagKind.STRING, ""),
        ("logtostderr", FlagKind.BOOL, True),
        ("alsologtostderr", FlagKind.BOOL, False),
        ("stderrthreshold", FlagKind.STRING, "2"),
        ("log_dir", FlagKind.STRING, ""),
        ("log_file", FlagKind.STRING, ""),
        ("log_file_max_size", FlagKind.INT, 1800),
        ("log_backtrace_at", FlagKind.STRING, ":0"),
        ("skip_headers", FlagKind.BOOL, False),
        ("skip_log_headers", FlagKind.BOOL, False),
        ("add_dir_header", FlagKind.BOOL, False),
        ("one_output", FlagKind.BOOL, False),
    )
)

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_UNITS: Mapping[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DUR_PART = re.compile(r"([0-9]*)(\.[0-9]*)?([^0-9.]*)")


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def parse_int(text: str) -> int:
    """Go's strconv.ParseInt(s, 0, 64), which pflag's IntVar uses (so ``0x1F`` works)."""
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax') from None


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds: ``1s``, ``500ms``, ``1m30s``, ``0``."""
    body = text
    sign = 1.0
    if body[:1] in ("+", "-"):
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0.0
    while body:
        match = _DUR_PART.match(body)
        whole, frac, unit = (match.group(1), match.group(2) or "", match.group(3)) if match else ("", "", "")
        if not whole and frac in ("", "."):
            raise ValueError(f'time: invalid duration "{text}"')
        if not unit:
            raise ValueError(f'time: missing unit in duration "{text}"')
        if unit not in _UNITS:
            # the unit runs until the next digit or dot, as in Go
            raise ValueError(f'time: unknown unit "{unit}" in duration "{text}"')
        total += float((whole or "0") + (frac if frac != "." else "")) * _UNITS[unit]
        body = body[len(whole) + len(frac) + len(unit) :]
    return sign * total


def format_duration(seconds: float) -> str:
    """A short Go-like rendering of a duration for log lines (``0s``, ``1.5s``)."""
    return "0s" if seconds == 0 else f"{seconds:g}s"


def _convert(flag: Flag, text: str) -> FlagValue:
    try:
        if flag.kind is FlagKind.BOOL:
            return parse_bool(text)
        if flag.kind is FlagKind.INT:
            return parse_int(text)
        if flag.kind is FlagKind.DURATION:
            return parse_duration(text)
        return text
    except ValueError as exc:
        raise FlagError(f'invalid argument "{text}" for "--{flag.name}" flag: {exc}') from None


class Parsed(NamedTuple):
    """Flag values by name plus the positional arguments, with typed getters for mypy.

    NamedTuple rather than a frozen dataclass: dataclasses costs ~4 ms of import on every pod start.
    """

    values: Mapping[str, FlagValue]
    args: tuple[str, ...]

    def get_int(self, name: str) -> int:
        value = self.values[name]
        assert isinstance(value, int) and not isinstance(value, bool)
        return value

    def get_str(self, name: str) -> str:
        value = self.values[name]
        assert isinstance(value, str)
        return value

    def get_bool(self, name: str) -> bool:
        value = self.values[name]
        assert isinstance(value, bool)
        return value

    def get_duration(self, name: str) -> float:
        value = self.values[name]
        assert isinstance(value, float)
        return value


def parse(flags: Sequence[Flag], argv: Sequence[str]) -> Parsed:
    """Parse ``argv`` as pflag does; raise FlagError or HelpRequested."""
    known = {f.name: f for f in (*flags, *KLOG_FLAGS)}
    values: dict[str, FlagValue] = {f.name: f.default for f in known.values()}
    for f in known.values():
        if f.kind is FlagKind.DURATION and isinstance(f.default, int):
            values[f.name] = float(f.default)
    args: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            args.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            args.append(arg)
            continue
        if not arg.startswith("--"):
            if arg[1] == "h":
                raise HelpRequested
            raise FlagError(f"unknown shorthand flag: '{arg[1]}' in {arg}")
        name, eq, text = arg[2:].partition("=")
        if name == "help":
            raise HelpRequested
        flag = known.get(name) or known.get(name.replace("-", "_"))
        if flag is None:
            raise FlagError(f"unknown flag: --{name}")
        if not eq:
            if flag.kind is FlagKind.BOOL:
                text = "true"
            elif i < len(argv):
                text = argv[i]
                i += 1
            else:
                raise FlagError(f"flag needs an argument: --{name}")
        values[flag.name] = _convert(flag, text)
    return Parsed(values=values, args=tuple(args))


def usage(command_path: str, use_args: str, flags: Sequence[Flag]) -> str:
    """Cobra's usage text for one command (printed after a flag error; ``--help`` adds the summary)."""
    lines = ["Usage:", f"  {command_path} {use_args}[flags]", "", "Flags:"]
    for f in flags:
        kind = "" if f.kind is FlagKind.BOOL else f" {f.kind.value}"
        default = "" if f.default in ("", False) else f" (default {f.default})"
        lines.append(f"      --{f.name}{kind}\t{f.usage}{default}")
    lines.append("  -h, --help\thelp for " + command_path.split()[-1])
    return "\n".join(lines) + "\n"
