"""The lab's process-level contract: preflight lines, bootstrap manifests, CLI answers.

The lab itself runs in tests/lab (end to end); these need no root and start nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clusters.lab import bootstrap, cli, control, preflight
from clusters.lab.node.underlay import owned_by
from clusters.recipes import load_recipe
from clusters.validate import validate_manifest


@pytest.mark.parametrize("cni", ["lab", "lab-vxlan", "lab-nopolicy"])
def test_bootstrap_objects_are_valid_kubernetes(cni: str) -> None:
    objects = bootstrap.all_objects(load_recipe(cni))
    assert {o["kind"] for o in objects} >= {"Namespace", "Service", "Endpoints", "DaemonSet"}
    for obj in objects:
        validate_manifest(obj)


def test_cni_mode_follows_the_recipe() -> None:
    assert bootstrap.cni_mode(load_recipe("lab")) == ("host-gw", "enforce")
    assert bootstrap.cni_mode(load_recipe("lab-vxlan")) == ("vxlan", "enforce")
    assert bootstrap.cni_mode(load_recipe("lab-nopolicy")) == ("vxlan", "off")


def test_sweeping_the_default_lab_spares_test_labs() -> None:
    assert owned_by("kncl-", "kncl-n-worker") and owned_by("kncl-", "kncl-underlay")
    assert not owned_by("kncl-", "kncl-t-ab12cd-n-worker")
    assert not owned_by("kncl-", "kncl-t-ab12cd-underlay")
    assert owned_by("kncl-t-ab12cd-", "kncl-t-ab12cd-p-0123456789abc")


def test_preflight_names_root_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight.os, "geteuid", lambda: 1000)
    found = preflight.problems()
    assert found and "needs root" in found[0]


def test_preflight_names_the_debian_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(preflight, "CNI_PLUGIN_DIR", tmp_path)
    lines = preflight.problems()
    assert any("apt-get install containernetworking-plugins" in ln for ln in lines)


def test_status_of_a_lab_that_never_ran(tmp_path: Path) -> None:
    st = control.status(tmp_path)
    assert not st.running and st.pid is None


def test_stale_pid_file_is_not_running(tmp_path: Path) -> None:
    (tmp_path / "lab.pid").write_text("999999999\n")
    assert not control.status(tmp_path).running


def test_cli_kubeconfig_without_a_lab_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--root", str(tmp_path), "kubeconfig"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["knetcheck lab: the lab is not running: run `knetcheck lab up` first"]


def test_cli_status_not_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--root", str(tmp_path), "status"]) == 1
    assert capsys.readouterr().out.strip() == "not running"


def test_cli_rejects_unknown_lab_cni(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--root", str(tmp_path), "up", "--cni", "calico"])
    assert exc.value.code == 2
