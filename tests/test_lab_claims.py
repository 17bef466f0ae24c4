"""Name-prefix claims: one lab never sweeps the namespaces of another running lab."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusters.errors import UsageProblem
from clusters.lab import claims


def test_a_running_lab_elsewhere_keeps_its_prefix(tmp_path: Path) -> None:
    claims_dir, mine, theirs = tmp_path / "claims", tmp_path / "mine", tmp_path / "theirs"
    live = {theirs}
    claims.claim("kncl-", theirs, live.__contains__, claims_dir)
    with pytest.raises(UsageProblem) as err:
        claims.claim("kncl-", mine, live.__contains__, claims_dir)
    message = str(err.value)
    assert "\n" not in message and str(theirs) in message and "KNETCHECK_LAB_PREFIX" in message
    assert not claims.may_sweep("kncl-", mine, live.__contains__, claims_dir)
    assert claims.may_sweep("kncl-", theirs, live.__contains__, claims_dir)
    # another prefix is free; releasing someone else's claim does nothing
    claims.claim("kncl-ci-", mine, live.__contains__, claims_dir)
    claims.release("kncl-", mine, claims_dir)
    assert claims.owner("kncl-", claims_dir) == theirs.resolve()


def test_a_dead_owners_prefix_is_taken_over_and_released(tmp_path: Path) -> None:
    claims_dir, mine, crashed = tmp_path / "claims", tmp_path / "mine", tmp_path / "crashed"
    claims.claim("kncl-t-ab12-", crashed, lambda _root: False, claims_dir)
    assert claims.may_sweep("kncl-t-ab12-", mine, lambda _root: False, claims_dir)
    claims.claim("kncl-t-ab12-", mine, lambda _root: False, claims_dir)
    assert claims.owner("kncl-t-ab12-", claims_dir) == mine.resolve()
    claims.release("kncl-t-ab12-", mine, claims_dir)
    assert claims.owner("kncl-t-ab12-", claims_dir) is None


@pytest.mark.parametrize("prefix", ["kncl-", "kncl-ci-", "kncl-t-3fa9c1-"])
def test_good_prefixes(prefix: str) -> None:
    assert claims.check_prefix(prefix) == prefix


@pytest.mark.parametrize(
    "prefix", ["", "lab-", "kncl", "kncl-CI-", "kncl-a-b-c-", "kncl-verylongword1-", "kncl-x y-"]
)
def test_bad_prefixes_are_one_line(prefix: str) -> None:
    with pytest.raises(UsageProblem) as err:
        claims.check_prefix(prefix)
    assert "\n" not in str(err.value) and "kncl-ci-" in str(err.value)


def test_the_env_sets_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(claims.PREFIX_ENV, "kncl-ci-")
    assert claims.default_prefix() == "kncl-ci-"
    monkeypatch.setenv(claims.PREFIX_ENV, "oops")
    with pytest.raises(UsageProblem):
        claims.default_prefix()
    monkeypatch.delenv(claims.PREFIX_ENV)
    assert claims.default_prefix() == "kncl-"


def test_the_last_release_leaves_no_files(tmp_path: Path) -> None:
    claims_dir = tmp_path / "claims"
    claims.claim("kncl-", tmp_path / "a", lambda _root: False, claims_dir)
    claims.claim("kncl-ci-", tmp_path / "b", lambda _root: False, claims_dir)
    claims.release("kncl-", tmp_path / "a", claims_dir)
    assert sorted(f.name for f in claims_dir.iterdir()) == [".lock", "kncl-ci"]
    claims.release("kncl-ci-", tmp_path / "b", claims_dir)
    assert not claims_dir.exists()
