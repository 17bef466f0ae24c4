"""The ``knetcheck`` console script: help for every option, one line and exit 2 for every mistake."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from clusters import options
from clusters.errors import ClusterUnavailable
from clusters.proc import CommandResult, run
from faults import cli

SCRIPT = Path(sys.executable).parent / "knetcheck"


def knetcheck(*args: str) -> CommandResult:
    """The installed console script, as a person would run it."""
    return run([str(SCRIPT), *args], timeout=120, check=False, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for spec in options.OPTIONS:
        if spec.env:
            monkeypatch.delenv(spec.env, raising=False)


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_help_lists_subcommands() -> None:
    result = knetcheck("--help")
    assert result.returncode == 0
    assert "test" in result.stdout and "run the suite with pytest" in result.stdout
    assert "lab" in result.stdout and "embedded lab" in result.stdout


def test_test_help_shows_every_option_with_its_help() -> None:
    result = knetcheck("test", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps help; compare word sequences
    for spec in options.OPTIONS:
        assert spec.flag in text
        assert " ".join(spec.help_line().split()[:6]) in text, spec.flag


def test_bad_cluster_from_the_script_is_one_line_exit_2() -> None:
    result = knetcheck("test", "--cluster=minikube")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "knetcheck: unknown --cluster 'minikube'; choose one of: kind, existing, lab, auto")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["tst"], "knetcheck: argument COMMAND: invalid choice: 'tst'"),
        ([], "knetcheck: say what to do: test or lab"),
        (["test", "--nodes=0"], "knetcheck: --nodes wants a whole number of nodes >= 1, got '0'"),
        (["test", "--cluster=kind", "--cni=canal"], "knetcheck: unknown CNI 'canal'; choose one of:"),
        (["test", "--no-such-flag"], "knetcheck: unrecognized arguments: --no-such-flag"),
        (["test", "--cluster=existing", "--kubeconfig=/nonexistent/kc"],
         "knetcheck: kubeconfig /nonexistent/kc does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert one_line(capsys).startswith(expected)


def test_test_runs_pytest_on_the_suites_with_options_and_extra_args(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_main(args: list[str]) -> int:
        seen.append(list(args))
        return 5

    monkeypatch.setattr(pytest, "main", fake_main)
    assert cli.main(["test", "--cluster=lab", "--keep-cluster", "--", "-k", "dns", "-x"]) == 5
    (args,) = seen
    suites_dir = Path(__file__).resolve().parent.parent / "suites"
    targets = [a for a in args if a.startswith(str(suites_dir))]
    assert targets == [str(suites_dir / d) for d in cli.SUITE_DIRS if (suites_dir / d).is_dir()]
    assert args[len(targets):] == ["--cluster=lab", "--keep-cluster", "-k", "dns", "-x"]


def test_test_with_a_path_after_dashes_runs_only_that(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(pytest, "main", lambda args: seen.append(list(args)) or 0)
    target = tmp_path / "test_one.py"
    target.write_text("")
    assert cli.main(["test", "--cluster=lab", "--", f"{target}::test_x"]) == 0
    assert seen == [["--cluster=lab", f"{target}::test_x"]]


def test_lab_delegates_to_the_lab_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    fake = types.ModuleType("fake_lab_cli")
    fake.main = lambda argv: calls.append(list(argv)) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_lab_cli", fake)
    monkeypatch.setitem(cli._DELEGATES, "lab", ("fake_lab_cli", "the embedded lab", "lab things"))
    assert cli.main(["lab", "up", "--nodes", "2"]) == 3
    assert calls == [["up", "--nodes", "2"]]


def test_lab_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def fail(argv: list[str]) -> int:
        raise ClusterUnavailable("the lab needs root: run as root or use --cluster=kind")

    fake = types.ModuleType("fake_lab_cli")
    fake.main = fail  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_lab_cli", fake)
    monkeypatch.setitem(cli._DELEGATES, "lab", ("fake_lab_cli", "the embedded lab", "lab things"))
    assert cli.main(["lab", "up"]) == 2
    assert one_line(capsys) == "knetcheck: the lab needs root: run as root or use --cluster=kind"


def test_missing_lab_cli_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli._DELEGATES, "lab", ("clusters.no_such_lab_cli", "the embedded lab", "lab"))
    assert cli.main(["lab", "up"]) == 2
    assert one_line(capsys) == ("knetcheck: the embedded lab is not available in this installation "
                                "(clusters.no_such_lab_cli is missing)")
