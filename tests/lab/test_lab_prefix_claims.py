"""Two labs on one machine: a running lab keeps its name prefix, a second lab with another state
directory is refused that prefix (instead of sweeping the first one's namespaces), and the first
lab is untouched; once it is down, the prefix is free again."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from clusters.errors import UsageProblem
from clusters.lab import claims, control, layout
from clusters.lab.netns import list_netns
from clusters.lab.node.underlay import owned_by

pytestmark = pytest.mark.lab


def test_a_second_lab_cannot_take_a_running_labs_prefix() -> None:
    prefix = f"kncl-t-{secrets.token_hex(3)}-"
    first = Path(tempfile.mkdtemp(prefix="knetcheck-claim1-", dir="/run"))
    second = Path(tempfile.mkdtemp(prefix="knetcheck-claim2-", dir="/run"))
    try:
        lab = control.up(control.LabConfig(root=first, nodes=1, prefix=prefix))
        assert claims.owner(prefix) == first.resolve(), "the running lab must hold its prefix"
        before = sorted(n for n in list_netns() if owned_by(prefix, n))
        assert layout.node_netns(lab.nodes[0], prefix) in before

        with pytest.raises(UsageProblem) as err:
            control.up(control.LabConfig(root=second, nodes=1, prefix=prefix))
        assert str(first.resolve()) in str(err.value) and claims.PREFIX_ENV in str(err.value)
        assert control.status(first).running
        assert sorted(n for n in list_netns() if owned_by(prefix, n)) == before, "the first lab was swept"

        control.down(second, prefix=prefix)  # a stray `down` elsewhere must not sweep it either
        assert sorted(n for n in list_netns() if owned_by(prefix, n)) == before
    finally:
        control.down(first, prefix=prefix)
        control.down(second, prefix=prefix)
        shutil.rmtree(first, ignore_errors=True)
        shutil.rmtree(second, ignore_errors=True)
    assert claims.owner(prefix) is None
    assert [n for n in list_netns() if owned_by(prefix, n)] == []
