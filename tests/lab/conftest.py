"""Shared fixtures for the lab's tests: an API server on a free loopback port, clients for it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes
import pytest

from clusters.lab.api import RunningApiServer, start_api_server, write_kubeconfig
from clusters.proc import CommandResult, run

KUBECTL = "/usr/bin/kubectl"


@pytest.fixture
def lab_api() -> Iterator[RunningApiServer]:
    """A fresh lab API server (no state dir, default PodIO), stopped after the test."""
    server = start_api_server(port=0)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def lab_api_client(lab_api: RunningApiServer) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=lab_api.url))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def lab_kubeconfig(lab_api: RunningApiServer, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", lab_api.url)


Kubectl = Callable[..., CommandResult]


@pytest.fixture
def kubectl(lab_kubeconfig: Path, tmp_path: Path) -> Kubectl:
    """Run the real kubectl against the lab API; a private HOME keeps its discovery cache per test."""
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "KUBECONFIG": str(lab_kubeconfig),
    }

    def call(*args: str, stdin: str | None = None, check: bool = True) -> CommandResult:
        return run([KUBECTL, *args], timeout=30, stdin=stdin, env=env, check=check)

    return call
