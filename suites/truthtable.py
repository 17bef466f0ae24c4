"""Expectations as data: from x to truth tables per port/protocol, as the upstream netpol framework has them.

A table starts from a default and is carved with wildcard peers (``Peer(namespace="x")`` = every pod
of x), so a test states its intent in a few lines. Observed tables come from probes; a cell is
True (connected), False (blocked) or None (unknown: the probe could not ask). Comparing gives the
wrong cells, and the unknown ones separately, because "could not ask" is never "blocked".
Tables are immutable: every edit returns a new table, so an expectation cannot drift under a test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Cell = bool | None
"""True = connected, False = blocked, None = unknown."""

SYMBOLS: Mapping[Cell, str] = {True: ".", False: "X", None: "?"}


def symbol(cell: Cell) -> str:
    return SYMBOLS[cell]


@dataclass(frozen=True, order=True)
class PortProtocol:
    port: int
    protocol: str = "TCP"

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}"


@dataclass(frozen=True)
class Peer:
    """A wildcard over ``ns/pod`` keys: a None field matches anything."""

    namespace: str | None = None
    pod: str | None = None

    def matches(self, key: str) -> bool:
        ns, _, pod = key.partition("/")
        return (self.namespace is None or self.namespace == ns) and (self.pod is None or self.pod == pod)


def _peer(value: Peer | str) -> Peer:
    if isinstance(value, Peer):
        return value
    ns, sep, pod = value.partition("/")
    return Peer(ns, pod) if sep else Peer(namespace=ns)


@dataclass(frozen=True)
class TruthTable:
    froms: tuple[str, ...]
    tos: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    """``rows[i][j]`` is the cell from ``froms[i]`` to ``tos[j]``."""

    def __post_init__(self) -> None:
        if len(self.rows) != len(self.froms) or any(len(r) != len(self.tos) for r in self.rows):
            raise ValueError(f"truth table shape {len(self.froms)}x{len(self.tos)} does not match its rows")

    # ---- building
    @classmethod
    def filled(cls, froms: Sequence[str], tos: Sequence[str] | None = None, value: Cell = True) -> TruthTable:
        """Every cell ``value``: the default an expectation starts from."""
        tos = froms if tos is None else tos
        return cls(tuple(froms), tuple(tos), tuple(tuple(value for _ in tos) for _ in froms))

    @classmethod
    def from_function(
        cls, froms: Sequence[str], tos: Sequence[str], cell: Callable[[str, str], Cell]
    ) -> TruthTable:
        return cls(tuple(froms), tuple(tos), tuple(tuple(cell(s, d) for d in tos) for s in froms))

    def _index(self, src: str, dst: str) -> tuple[int, int]:
        try:
            return self.froms.index(src), self.tos.index(dst)
        except ValueError:
            raise KeyError(f"no cell {src} -> {dst} in this truth table") from None

    def get(self, src: str, dst: str) -> Cell:
        i, j = self._index(src, dst)
        return self.rows[i][j]

    def where(self, src: Peer | str, dst: Peer | str, value: Cell) -> TruthTable:
        """A copy with every cell from a ``src`` match to a ``dst`` match set to ``value``.

        Like upstream's ``Reachability.ExpectPeer``: ``where(Peer(), "x", False)`` = nothing reaches x.
        A bare ``"ns"`` is every pod of ns; ``"ns/pod"`` is one pod.
        """
        sp, dp = _peer(src), _peer(dst)
        return TruthTable(
            self.froms,
            self.tos,
            tuple(
                tuple(
                    value if sp.matches(s) and dp.matches(d) else c
                    for d, c in zip(self.tos, row, strict=True)
                )
                for s, row in zip(self.froms, self.rows, strict=True)
            ),
        )

    def set(self, src: str, dst: str, value: Cell) -> TruthTable:
        self._index(src, dst)
        return self.where(_peer(src), _peer(dst), value)

    def with_cells(self, cells: Mapping[tuple[str, str], Cell]) -> TruthTable:
        for src, dst in cells:
            self._index(src, dst)
        return TruthTable.from_function(self.froms, self.tos, lambda s, d: cells.get((s, d), self.get(s, d)))

    # ---- reading
    def cells(self) -> Iterator[tuple[str, str, Cell]]:
        for s, row in zip(self.froms, self.rows, strict=True):
            for d, c in zip(self.tos, row, strict=True):
                yield s, d, c

    def count(self, value: Cell) -> int:
        return sum(1 for _, _, c in self.cells() if c is value)

    def compare(self, observed: TruthTable, *, ignore_loopback: bool = False) -> Comparison:
        """Compare this (expected) table with ``observed``; both must have the same rows and columns.

        ``ignore_loopback`` skips pod-to-itself cells, as upstream does, because CNIs differ there
        (kubernetes #95879)."""
        if (self.froms, self.tos) != (observed.froms, observed.tos):
            raise ValueError("expected and observed truth tables have different rows or columns")
        wrong: list[Mismatch] = []
        unknown: list[Mismatch] = []
        for (s, d, want), (_, _, got) in zip(self.cells(), observed.cells(), strict=True):
            if ignore_loopback and s == d:
                continue
            if got is None or want is None:
                unknown.append(Mismatch(s, d, want, got))
            elif got != want:
                wrong.append(Mismatch(s, d, want, got))
        return Comparison(self, observed, tuple(wrong), tuple(unknown), ignore_loopback)

    def pretty(self, cell_text: Callable[[str, str, Cell], str] | None = None) -> str:
        """The matrix with row and column headers: ``.`` connected, ``X`` blocked, ``?`` unknown."""
        text = cell_text or (lambda _s, _d, c: symbol(c))
        grid = [
            [text(s, d, c) for d, c in zip(self.tos, row, strict=True)]
            for s, row in zip(self.froms, self.rows, strict=True)
        ]
        return render_grid(self.froms, self.tos, grid)

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": list(self.froms),
            "to": list(self.tos),
            "cells": {
                s: {d: c for d, c in zip(self.tos, row, strict=True)}
                for s, row in zip(self.froms, self.rows, strict=True)
            },
        }


def render_grid(froms: Sequence[str], tos: Sequence[str], grid: Sequence[Sequence[str]]) -> str:
    """Columns as wide as their header, the corner marked ``-`` like upstream's tables."""
    left = max([1, *(len(s) for s in froms)])
    widths = [max(len(d), *(len(row[j]) for row in grid)) if grid else len(d) for j, d in enumerate(tos)]
    lines = [" ".join(["-".ljust(left), *(d.ljust(w) for d, w in zip(tos, widths, strict=True))]).rstrip()]
    for s, row in zip(froms, grid, strict=True):
        lines.append(
            " ".join([s.ljust(left), *(c.ljust(w) for c, w in zip(row, widths, strict=True))]).rstrip()
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Mismatch:
    src: str
    dst: str
    expected: Cell
    observed: Cell

    def describe(self) -> str:
        want = {True: "allowed", False: "blocked", None: "unknown"}[self.expected]
        got = {True: "CONNECTED", False: "BLOCKED", None: "NOT PROBED (probe error)"}[self.observed]
        return f"{self.src} -> {self.dst}: expected {want}, observed {got}"


@dataclass(frozen=True)
class Comparison:
    expected: TruthTable
    observed: TruthTable
    wrong: tuple[Mismatch, ...]
    """Cells where the network answered, differently from the expectation."""
    unknown: tuple[Mismatch, ...]
    """Cells the probe could not judge: a failure, but never evidence of blocking or allowing."""
    ignore_loopback: bool = False

    @property
    def ok(self) -> bool:
        return not self.wrong and not self.unknown

    @property
    def bad_cells(self) -> list[tuple[str, str]]:
        return [(m.src, m.dst) for m in (*self.wrong, *self.unknown)]

    def diff(self) -> str:
        """``.`` agrees, ``X`` wrong, ``?`` unknown, ``-`` ignored (loopback)."""
        wrong = {(m.src, m.dst) for m in self.wrong}
        unknown = {(m.src, m.dst) for m in self.unknown}

        def mark(s: str, d: str, _c: Cell) -> str:
            if self.ignore_loopback and s == d:
                return "-"
            if (s, d) in wrong:
                return "X"
            return "?" if (s, d) in unknown else "."

        return self.expected.pretty(mark)

    def summary(self) -> str:
        total = len(self.expected.froms) * len(self.expected.tos)
        if self.ignore_loopback:
            total -= len(set(self.expected.froms) & set(self.expected.tos))
        right = total - len(self.wrong) - len(self.unknown)
        return f"{right}/{total} right, {len(self.wrong)} wrong, {len(self.unknown)} unknown"

    def render(self, title: str = "") -> str:
        head = f"{title}: " if title else ""
        return "\n".join(
            [
                f"{head}{self.summary()}",
                "expected:",
                self.expected.pretty(),
                "observed:",
                self.observed.pretty(),
                "comparison:",
                self.diff(),
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "expected": self.expected.to_dict(),
            "observed": self.observed.to_dict(),
            "wrong": [m.__dict__ for m in self.wrong],
            "unknown": [m.__dict__ for m in self.unknown],
            "ignore_loopback": self.ignore_loopback,
        }


def compare_all(
    expected: Mapping[PortProtocol, TruthTable],
    observed: Mapping[PortProtocol, TruthTable],
    *,
    ignore_loopback: bool = False,
) -> dict[PortProtocol, Comparison]:
    """One comparison per port/protocol; a port missing from ``observed`` is a usage error."""
    missing = sorted(str(pp) for pp in expected if pp not in observed)
    if missing:
        raise KeyError(f"no observed truth table for {', '.join(missing)}")
    return {
        pp: expected[pp].compare(observed[pp], ignore_loopback=ignore_loopback) for pp in sorted(expected)
    }


def render_all(comparisons: Mapping[PortProtocol, Comparison], only_failed: bool = False) -> str:
    parts = [c.render(str(pp)) for pp, c in comparisons.items() if not (only_failed and c.ok)]
    return "\n\n".join(parts)


def keys(namespaces: Iterable[str], pods: Iterable[str]) -> list[str]:
    """``ns/pod`` keys for every namespace x pod, namespace-major (the upstream row order)."""
    pod_list = list(pods)
    return [f"{ns}/{pod}" for ns in namespaces for pod in pod_list]
