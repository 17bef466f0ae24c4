"""The real kubectl's rollout verbs work against the lab controllers: they read the same status
fields and conditions on a real cluster, so this is where the fidelity of status shows."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from clusters.lab.controllers.client import meta
from clusters.proc import CommandResult, run

from .controllers_lab import DEPLOY, RS, Lab, deployment, eventually, lab_fixture  # noqa: F401

KUBECTL = "/usr/bin/kubectl"

pytestmark = pytest.mark.skipif(not os.access(KUBECTL, os.X_OK), reason="needs /usr/bin/kubectl")


def kubectl(lab: Lab, tmp: Path, *args: str) -> CommandResult:
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "KUBECONFIG": str(lab.kubeconfig)}
    return run([KUBECTL, *args], timeout=60, env=env)


def test_kubectl_rollout_status_and_restart(lab: Lab, tmp_path: Path) -> None:
    lab.kube.create(DEPLOY, deployment("web", 3))
    out = kubectl(lab, tmp_path, "rollout", "status", "deployment/web", "--timeout=30s").stdout
    assert 'deployment "web" successfully rolled out' in out
    kubectl(lab, tmp_path, "rollout", "restart", "deployment/web")
    out = kubectl(lab, tmp_path, "rollout", "status", "deployment/web", "--timeout=30s").stdout
    assert 'deployment "web" successfully rolled out' in out
    eventually(lambda: len(lab.list(RS)) == 2, "two replica sets after the restart")
    live = [rs for rs in lab.list(RS) if rs["spec"]["replicas"] == 3]
    assert len(live) == 1 and meta(live[0])["annotations"]["deployment.kubernetes.io/revision"] == "2"
    described = kubectl(lab, tmp_path, "describe", "deployment", "web").stdout
    assert "ScalingReplicaSet" in described
    assert re.search(rf"NewReplicaSet:\s+{meta(live[0])['name']} \(3/3 replicas created\)", described)
    assert re.search(r"Progressing\s+True\s+NewReplicaSetAvailable", described)


def test_kubectl_rollout_restart_daemonset(lab: Lab, tmp_path: Path) -> None:
    ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {
                    "containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.39"}]
                },
            },
        },
    }
    lab.kube.create("/apis/apps/v1/namespaces/default/daemonsets", ds)
    out = kubectl(lab, tmp_path, "rollout", "status", "daemonset/agent", "--timeout=30s").stdout
    assert 'daemon set "agent" successfully rolled out' in out
    before = {meta(p)["name"] for p in lab.pods(selector="app=agent")}
    kubectl(lab, tmp_path, "rollout", "restart", "daemonset/agent")
    out = kubectl(lab, tmp_path, "rollout", "status", "daemonset/agent", "--timeout=30s").stdout
    assert 'daemon set "agent" successfully rolled out' in out
    after = {meta(p)["name"] for p in lab.pods(selector="app=agent")}
    assert len(after) == 2 and not (before & after)
