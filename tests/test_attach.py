"""attach(): a Cluster handle from a kubeconfig alone; bad kubeconfigs are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusters.attach import attach
from clusters.errors import UsageProblem


def test_malformed_kubeconfig_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("clusters: [\n")
    with pytest.raises(UsageProblem) as err:
        attach(bad)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"kubeconfig {bad} is not valid YAML at line 2")


def test_missing_kubeconfig_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UsageProblem, match="does not exist: pass --kubeconfig=PATH or set KUBECONFIG"):
        attach(tmp_path / "nope")


def test_unknown_context_names_the_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "kubeconfig"
    cfg.write_text("apiVersion: v1\nkind: Config\ncontexts: [{name: a, context: {cluster: c}}]\n"
                   "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\ncurrent-context: a\n")
    with pytest.raises(UsageProblem, match="has no context 'b'"):
        attach(cfg, "b")
