"""The ingress conformance module broken on the embedded lab, as a user runs it: ``pytest
suites/conformance/test_ingress.py --cluster=lab`` in a subprocess, attached to a lab this test
starts under its own root and ``kncl-t-…`` prefix (so it runs beside a developer's default-prefix
lab instead of skipping). With the lab's ingress-nginx scaled to zero, an Ingress never gets an
address: the check FAILS with the evidence, and the lab is left running. Every ingress check
passing on a healthy lab (TLS redirect included, one matrix per check) is checked by the
whole-suite run in ``test_conformance_lab``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k

from clusters.kubeclient import api_client

from .conformance_harness import INGRESS, assert_attached_lab_left_running, output, own_lab, run_suite

pytestmark = pytest.mark.lab


def stop_ingress_controller(kubeconfig: Path, timeout: float = 60.0) -> None:
    """Scale ingress-nginx to 0 and wait until its pod is gone: nothing publishes addresses."""
    api: Any = api_client(kubeconfig)
    try:
        apps, core = k.AppsV1Api(api), k.CoreV1Api(api)
        scale = {"spec": {"replicas": 0}}
        apps.patch_namespaced_deployment("ingress-nginx-controller", "ingress-nginx", scale)
        deadline = time.monotonic() + timeout
        while core.list_namespaced_pod("ingress-nginx").items:
            assert time.monotonic() < deadline, f"ingress-nginx pods still there after {timeout:.0f}s"
            time.sleep(0.5)
    finally:
        api.close()


def test_an_ingress_without_address_fails_with_the_evidence(tmp_path: Path) -> None:
    """Not a skip, a finding: the lab has an ingress controller, it just publishes nothing."""
    with own_lab("ingress", tmp_path) as lab:
        stop_ingress_controller(lab.kubeconfig)
        result = run_suite(lab.root, tmp_path, f"{INGRESS}::test_host_routing",
                           extra_env={"KNETCHECK_INGRESS_TIMEOUT": "5"})
        out = output(result)
        assert result.returncode == 1, f"the check should fail (exit {result.returncode}):\n{out[-6000:]}"
        assert f"FAILED {INGRESS}::test_host_routing" in out, out[-6000:]
        assert re.search(r"Ingress kc-\S+/hosts \(class nginx, controller k8s\.io/ingress-nginx\) has no "
                         r"status\.loadBalancer\.ingress after 5s", out), out[-6000:]
        assert re.search(r"look: kubectl --kubeconfig=\S+ -n kc-\S+ describe ingress hosts", out), out[-6000:]
        assert_attached_lab_left_running(lab.root)
