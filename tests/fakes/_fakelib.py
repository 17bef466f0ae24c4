"""Shared helpers for the fake kind/docker/kubectl/helm executables used by the contract tests.

Each fake appends ``{"tool", "argv", "stdin"}`` as one JSON line to the file named by
``FAKE_CALLS`` and keeps the clusters it "created" in the JSON file named by ``FAKE_STATE``.
Knobs: ``FAKE_KIND_VERSION``, ``FAKE_DOCKER_DOWN=1``, ``FAKE_DOCKER_IMAGES`` (comma list of
local images), ``FAKE_FAIL`` (a substring: any call whose argv contains it exits 1).
Standard library only: the fakes run under whatever python3 is on PATH.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def record(tool: str, argv: list[str], stdin: str | None = None) -> None:
    path = os.environ.get("FAKE_CALLS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"tool": tool, "argv": argv, "stdin": stdin}) + "\n")


def load_state() -> dict[str, Any]:
    path = os.environ.get("FAKE_STATE", "")
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            state: dict[str, Any] = json.load(fh)
            return state
    return {"clusters": {}}


def save_state(state: dict[str, Any]) -> None:
    path = os.environ.get("FAKE_STATE", "")
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(state, fh, indent=1)


def fail(message: str, code: int = 1) -> None:
    sys.stderr.write(message + "\n")
    sys.exit(code)


def maybe_fail(tool: str, argv: list[str]) -> None:
    needle = os.environ.get("FAKE_FAIL")
    if needle and needle in " ".join([tool, *argv]):
        fail(f"error: fake failure injected for {needle!r}")


def flag(argv: list[str], name: str) -> str | None:
    """The value of ``--name value`` or ``--name=value``."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def kubeconfig_text(cluster: str) -> str:
    return (
        f"# fake-kind-cluster: {cluster}\n"
        "apiVersion: v1\nkind: Config\n"
        f"current-context: kind-{cluster}\n"
        f"clusters:\n- name: kind-{cluster}\n  cluster:\n    server: https://127.0.0.1:6443\n"
        f"contexts:\n- name: kind-{cluster}\n  context:\n"
        f"    cluster: kind-{cluster}\n    user: kind-{cluster}\n"
        f"users:\n- name: kind-{cluster}\n  user:\n    token: fake\n"
    )


def cluster_of_kubeconfig(path: str | None) -> str | None:
    if not path or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        first = fh.readline()
    prefix = "# fake-kind-cluster: "
    return first[len(prefix) :].strip() if first.startswith(prefix) else None
