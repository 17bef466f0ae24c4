"""The kind node channel: a kind node is a Docker container, so ``docker exec`` reaches it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from clusters.errors import UsageProblem
from clusters.proc import CommandResult, run


@dataclass(frozen=True)
class DockerExecChannel:
    """Runs argv in a node container of one kind cluster; other containers are refused.

    The result is returned whatever the exit code: callers such as the doctor read failures
    (a missing conf file, an empty iptables chain) as evidence.
    """

    cluster: str

    def _check_node(self, node: str) -> None:
        pattern = rf"{re.escape(self.cluster)}-(control-plane|worker)\d*"
        if not re.fullmatch(pattern, node):
            c = self.cluster
            raise UsageProblem(
                f"{node!r} is not a node of kind cluster {self.cluster!r}; "
                f"its nodes are {c}-control-plane, {c}-worker, {c}-worker2, …"
            )

    def exec(self, node: str, argv: Sequence[str], stdin: str | None, timeout: float) -> CommandResult:
        self._check_node(node)
        interactive = ["-i"] if stdin is not None else []
        return run(["docker", "exec", *interactive, node, *argv], timeout=timeout, stdin=stdin, check=False)
