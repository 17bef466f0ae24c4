"""The real kubectl (v1.32) against the lab API: the commands people and the suite use."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import kubernetes
import pytest

from clusters.lab.api import RunningApiServer
from tests.lab.conftest import KUBECTL, Kubectl

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: ["netexec", "--http-port=8080"]
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
"""

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: client
  labels: {role: client}
spec:
  nodeName: knetcheck-lab-worker
  containers:
  - name: agnhost
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
"""

NODE = {
    "metadata": {
        "name": "knetcheck-lab-worker",
        "labels": {"kubernetes.io/hostname": "knetcheck-lab-worker"},
    },
    "spec": {"podCIDR": "10.244.1.0/24"},
    "status": {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
            }
        ],
        "addresses": [{"type": "InternalIP", "address": "172.18.0.3"}],
        "nodeInfo": {
            "kubeletVersion": "v1.36.1",
            "osImage": "Debian GNU/Linux 13 (trixie)",
            "kernelVersion": "6.1.0",
            "containerRuntimeVersion": "containerd://2.3.0",
            "architecture": "amd64",
            "operatingSystem": "linux",
            "bootID": "",
            "machineID": "",
            "systemUUID": "",
            "kubeProxyVersion": "",
        },
    },
}


def test_create_get_describe_delete(kubectl: Kubectl, tmp_path: Path) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(MANIFEST)
    out = kubectl("create", "-f", str(manifest))
    assert out.stdout.splitlines() == ["deployment.apps/web created", "service/web created"]
    table = kubectl("get", "deploy,svc").stdout
    assert "deployment.apps/web   0/2" in table
    assert "service/web" in table and "80/TCP" in table
    svc = json.loads(kubectl("get", "svc", "web", "-o", "json").stdout)
    assert svc["spec"]["clusterIP"].startswith("10.96.")
    assert "clusterIP: " + svc["spec"]["clusterIP"] in kubectl("get", "svc", "web", "-o", "yaml").stdout
    described = kubectl("describe", "deployment", "web").stdout
    assert "Replicas:" in described and "StrategyType:           RollingUpdate" in described
    described = kubectl("describe", "service", "web").stdout
    assert "TargetPort:" in described and "8080/TCP" in described
    assert 'service "web" deleted' in kubectl("delete", "svc", "web").stdout
    gone = kubectl("get", "svc", "web", check=False)
    assert gone.returncode == 1
    assert 'Error from server (NotFound): services "web" not found' in gone.stderr


def test_apply_twice_is_unchanged(kubectl: Kubectl, tmp_path: Path) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(MANIFEST)
    assert kubectl("apply", "-f", str(manifest)).stdout.splitlines() == [
        "deployment.apps/web created",
        "service/web created",
    ]
    assert kubectl("apply", "-f", str(manifest)).stdout.splitlines() == [
        "deployment.apps/web unchanged",
        "service/web unchanged",
    ]
    manifest.write_text(MANIFEST.replace("replicas: 2", "replicas: 3"))
    assert "deployment.apps/web configured" in kubectl("apply", "-f", str(manifest)).stdout
    assert kubectl("get", "deploy", "web", "-o", "jsonpath={.spec.replicas}").stdout == "3"


def test_pods_nodes_wide_describe_and_selectors(
    kubectl: Kubectl, lab_api_client: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    kubernetes.client.CoreV1Api(lab_api_client).create_node(NODE)
    (tmp_path / "pod.yaml").write_text(POD)
    kubectl("create", "-f", str(tmp_path / "pod.yaml"))
    all_pods = kubectl("get", "pods", "-A").stdout.splitlines()
    assert all_pods[0].split() == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert all_pods[1].split()[:4] == ["default", "client", "0/1", "Pending"]
    wide = kubectl("get", "pods", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[5:7] == ["IP", "NODE"]
    assert "knetcheck-lab-worker" in wide[1]
    assert kubectl("get", "pods", "-l", "role=client", "-o", "name").stdout == "pod/client\n"
    assert kubectl("get", "pods", "-l", "role=server", "-o", "name").stdout == ""
    assert (
        kubectl("get", "pods", "--field-selector", "spec.nodeName=knetcheck-lab-worker", "-o", "name").stdout
        == "pod/client\n"
    )
    described = kubectl("describe", "pod", "client").stdout
    assert "Node:             knetcheck-lab-worker" in described
    assert "Image:        registry.k8s.io/e2e-test-images/agnhost:2.53" in described
    nodes = kubectl("get", "nodes").stdout.splitlines()
    assert nodes[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert nodes[1].split()[:3] == ["knetcheck-lab-worker", "Ready", "<none>"]
    node = kubectl("describe", "node", "knetcheck-lab-worker").stdout
    assert "InternalIP:  172.18.0.3" in node and "default                     client" in node
    # The pod is bound and no kubelet runs here: DELETE only marks it (graceful deletion), so
    # kubectl must not wait for it to go; the kubelet's final grace-0 DELETE is done by hand.
    assert 'pod "client" deleted' in kubectl("delete", "pod", "client", "--wait=false").stdout
    terminating = kubectl("get", "pods").stdout.splitlines()
    assert terminating[1].split()[:3] == ["client", "0/1", "Terminating"]
    v1 = kubernetes.client.CoreV1Api(lab_api_client)
    uid = v1.read_namespaced_pod("client", "default").metadata.uid
    v1.delete_namespaced_pod(
        "client", "default", body={"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
    )
    assert kubectl("get", "pods", "-o", "name").stdout == ""


def test_get_watch_prints_new_objects(
    kubectl: Kubectl, lab_kubeconfig: Path, tmp_path: Path, lab_api_client: kubernetes.client.ApiClient
) -> None:
    home = tmp_path / "home"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "KUBECONFIG": str(lab_kubeconfig)}
    proc = subprocess.Popen(
        [KUBECTL, "get", "configmaps", "--watch", "--request-timeout=20s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        header = proc.stdout.readline()
        assert header.split() == ["NAME", "DATA", "AGE"]
        assert proc.stdout.readline().startswith("kube-root-ca.crt")
        kubernetes.client.CoreV1Api(lab_api_client).create_namespaced_config_map(
            "default", {"metadata": {"name": "watched"}, "data": {"a": "1", "b": "2"}}
        )
        line = proc.stdout.readline()
        assert line.split()[:2] == ["watched", "2"]
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_server_side_validation_errors_reach_kubectl(kubectl: Kubectl, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndatta: {}\n")
    out = kubectl("create", "-f", str(bad), check=False)
    assert out.returncode == 1
    assert 'unknown field "datta"' in out.stderr


def test_version_and_api_resources(kubectl: Kubectl) -> None:
    out = kubectl("version", "-o", "json", check=False)
    assert json.loads(out.stdout)["serverVersion"]["gitVersion"] == "v1.36.1"
    resources = kubectl("api-resources", "--no-headers").stdout
    for name in ("pods", "deployments", "networkpolicies", "endpointslices", "leases", "ingresses"):
        assert any(line.split()[0] == name for line in resources.splitlines()), name


@pytest.mark.parametrize(
    "kind",
    [
        "pods",
        "services",
        "deployments",
        "daemonsets",
        "events",
        "networkpolicies",
        "ingresses",
        "endpointslices",
        "endpoints",
        "namespaces",
        "serviceaccounts",
    ],
)
def test_get_every_kind_succeeds(kubectl: Kubectl, lab_api: RunningApiServer, kind: str) -> None:
    out = kubectl("get", kind, "-A", check=False)
    assert out.returncode == 0, out.stderr
