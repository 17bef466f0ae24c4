"""Truth tables: build from a default plus wildcard exceptions, compare, print in the upstream style."""

from __future__ import annotations

import json

import pytest

from suites.truthtable import Peer, PortProtocol, TruthTable, compare_all, keys, render_all

KEYS = keys(["x", "y"], ["a", "b"])  # x/a x/b y/a y/b


def test_keys_are_namespace_major() -> None:
    assert KEYS == ["x/a", "x/b", "y/a", "y/b"]


def test_filled_default_and_get() -> None:
    table = TruthTable.filled(KEYS)
    assert all(c is True for _, _, c in table.cells())
    assert table.count(True) == 16
    with pytest.raises(KeyError, match="no cell x/a -> q/q"):
        table.get("x/a", "q/q")


def test_where_with_namespace_wildcard_blocks_all_ingress_to_namespace() -> None:
    table = TruthTable.filled(KEYS).where(Peer(), Peer(namespace="x"), False)
    assert [table.get(s, "x/a") for s in KEYS] == [False] * 4
    assert [table.get(s, "y/b") for s in KEYS] == [True] * 4


def test_where_accepts_string_peers_and_later_edits_win() -> None:
    table = TruthTable.filled(KEYS, value=False).where("x", "x", True).set("x/a", "x/b", False)
    assert table.get("x/b", "x/a") is True
    assert table.get("x/a", "x/b") is False
    assert table.get("x/a", "y/a") is False


def test_tables_are_immutable_edits_return_new_tables() -> None:
    base = TruthTable.filled(KEYS)
    edited = base.set("x/a", "y/b", False)
    assert base.get("x/a", "y/b") is True
    assert edited.get("x/a", "y/b") is False


def test_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="shape"):
        TruthTable(("x/a",), ("x/a", "x/b"), ((True,),))


def test_compare_separates_wrong_from_unknown() -> None:
    expected = TruthTable.filled(KEYS).where(Peer(), "y", False)
    observed = expected.with_cells({("x/a", "y/a"): True, ("x/b", "x/a"): None})
    comparison = expected.compare(observed)
    assert [(m.src, m.dst, m.expected, m.observed) for m in comparison.wrong] == [("x/a", "y/a", False, True)]
    assert [(m.src, m.dst) for m in comparison.unknown] == [("x/b", "x/a")]
    assert not comparison.ok
    assert comparison.summary() == "14/16 right, 1 wrong, 1 unknown"
    assert comparison.bad_cells == [("x/a", "y/a"), ("x/b", "x/a")]
    assert "expected blocked, observed CONNECTED" in comparison.wrong[0].describe()


def test_compare_ignores_loopback_when_asked() -> None:
    expected = TruthTable.filled(KEYS, value=False)
    observed = expected.set("x/a", "x/a", True)
    assert not expected.compare(observed).ok
    ignored = expected.compare(observed, ignore_loopback=True)
    assert ignored.ok
    assert ignored.summary() == "12/12 right, 0 wrong, 0 unknown"


def test_compare_needs_same_rows_and_columns() -> None:
    with pytest.raises(ValueError, match="different rows"):
        TruthTable.filled(KEYS).compare(TruthTable.filled(KEYS[:2]))


def test_pretty_print_upstream_symbols_and_headers() -> None:
    table = TruthTable.filled(["x/a", "x/b"]).set("x/a", "x/b", False).set("x/b", "x/a", None)
    assert table.pretty() == "-   x/a x/b\nx/a .   X\nx/b ?   ."


def test_render_shows_expected_observed_and_diff() -> None:
    expected = TruthTable.filled(["x/a", "x/b"]).set("x/a", "x/b", False)
    observed = TruthTable.filled(["x/a", "x/b"]).set("x/b", "x/a", None)
    comparison = expected.compare(observed, ignore_loopback=True)
    text = comparison.render("80/TCP")
    assert text.splitlines()[0] == "80/TCP: 0/2 right, 1 wrong, 1 unknown"
    assert "expected:\n-   x/a x/b\nx/a .   X\nx/b .   ." in text
    assert comparison.diff() == "-   x/a x/b\nx/a -   X\nx/b ?   -"


def test_to_dict_is_json_ready() -> None:
    expected = TruthTable.filled(["x/a", "x/b"]).set("x/a", "x/b", False)
    observed = expected.set("x/b", "x/a", None)
    doc = json.loads(json.dumps(expected.compare(observed).to_dict()))
    assert doc["expected"]["cells"]["x/a"]["x/b"] is False
    assert doc["observed"]["cells"]["x/b"]["x/a"] is None
    assert doc["unknown"] == [{"src": "x/b", "dst": "x/a", "expected": True, "observed": None}]
    assert doc["ok"] is False


def test_compare_all_per_port_and_render_only_failed() -> None:
    tcp, udp = PortProtocol(80), PortProtocol(80, "UDP")
    assert str(udp) == "80/UDP"
    expected = {tcp: TruthTable.filled(KEYS), udp: TruthTable.filled(KEYS)}
    observed = {tcp: TruthTable.filled(KEYS), udp: TruthTable.filled(KEYS).set("x/a", "y/a", False)}
    comparisons = compare_all(expected, observed)
    assert comparisons[tcp].ok and not comparisons[udp].ok
    text = render_all(comparisons, only_failed=True)
    assert text.startswith("80/UDP:") and "80/TCP" not in text
    with pytest.raises(KeyError, match="80/UDP"):
        compare_all(expected, {tcp: observed[tcp]})


def test_from_function_uses_the_cell_function() -> None:
    table = TruthTable.from_function(KEYS, KEYS, lambda s, d: s.split("/")[0] == d.split("/")[0])
    assert table.get("x/a", "x/b") is True
    assert table.get("x/a", "y/b") is False
