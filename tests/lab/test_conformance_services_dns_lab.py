"""The Services conformance module broken on the embedded lab: a node whose kube-proxy is gone and
whose ``KUBE-SERVICES`` chain was flushed fails ``pytest suites/conformance/test_services.py
--cluster=lab`` (run in a subprocess, attached to a lab this test starts under its own root and
``kncl-t-…`` prefix) with that node's rows marked. A healthy lab passing the Services and DNS
modules is checked by the whole-suite run in ``test_conformance_lab``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k

from clusters.kubeclient import api_client
from clusters.lab.node.shell import shell_argv
from clusters.proc import run

from .conformance_harness import (
    BREAK_CONVERGE,
    SERVICES,
    assert_attached_lab_left_running,
    checks,
    outcomes,
    output,
    own_lab,
    run_suite,
)

pytestmark = pytest.mark.lab
UPSTREAM = {"KNETCHECK_UPSTREAM_NAME": "upstream.lab.test"}
"""A name of the lab upstream resolver's own zone, for ExternalName (it answers the default,
kubernetes.io, as well)."""


def wait_until(what: str, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.5)


def stop_kube_proxy_on(kubeconfig: Path, node: str) -> None:
    """Keep the kube-proxy DaemonSet off ``node`` (its rules stay, as a dead kube-proxy's do), and wait
    for the rollout the template change starts on the other nodes to finish."""
    api: Any = api_client(kubeconfig)
    try:
        apps, core = k.AppsV1Api(api), k.CoreV1Api(api)
        away = {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": [node]}
        patch = {
            "spec": {
                "template": {
                    "spec": {
                        "affinity": {
                            "nodeAffinity": {
                                "requiredDuringSchedulingIgnoredDuringExecution": {
                                    "nodeSelectorTerms": [{"matchExpressions": [away]}]
                                }
                            }
                        }
                    }
                }
            }
        }
        apps.patch_namespaced_daemon_set("kube-proxy", "kube-system", patch)

        def gone() -> bool:
            pods = core.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-proxy").items
            return not any(p.spec is not None and p.spec.node_name == node for p in pods)

        wait_until(f"no kube-proxy pod on {node}", gone)

        def rolled_out() -> bool:
            # The template change rolls kube-proxy on every other node too; until the new pods are
            # Ready there, those nodes miss rules for Services created meanwhile (seen in CI).
            ds = apps.read_namespaced_daemon_set("kube-proxy", "kube-system")
            st = ds.status
            return bool(
                st is not None
                and (st.observed_generation or 0) >= ((ds.metadata.generation if ds.metadata else 0) or 0)
                and st.desired_number_scheduled > 0
                and st.updated_number_scheduled == st.desired_number_scheduled
                and st.number_ready == st.desired_number_scheduled
                and st.number_available == st.desired_number_scheduled
            )

        wait_until("the kube-proxy rollout on the other nodes", rolled_out, timeout=120)
    finally:
        api.close()


def test_a_node_without_service_rules_fails_the_services_module_with_its_rows_marked(
    tmp_path: Path,
) -> None:
    with own_lab("svcdns", tmp_path) as lab:
        worker = next(n for n in lab.nodes if n.endswith("-worker"))
        stop_kube_proxy_on(lab.kubeconfig, worker)
        run(
            shell_argv(lab.root, worker, ["iptables", "-t", "nat", "-F", "KUBE-SERVICES"], lab.prefix),
            timeout=20,
        )

        # Only the two checks asserted below: each broken cell is re-probed until the deadline.
        result = run_suite(
            lab.root,
            tmp_path,
            SERVICES,
            "-k",
            "test_cluster_ip or test_node_port",
            extra_env={**UPSTREAM, **BREAK_CONVERGE},
        )
        out = output(result)
        assert result.returncode == 1, f"the module should fail (exit {result.returncode}):\n{out[-6000:]}"
        assert f"FAILED {SERVICES}::test_cluster_ip" in out, out[-6000:]
        assert f"FAILED {SERVICES}::test_node_port" in out, out[-6000:]

        block = out.split("ClusterIP web: answered by a ready backend", 1)
        assert len(block) == 2, f"no ClusterIP matrix in:\n{out[-6000:]}"
        lines = block[1].splitlines()
        start = lines.index("observed:") + 1
        observed = {row.split()[0]: row.split()[1] for row in lines[start + 1 : start + 6]}
        assert observed == {
            "worker/a": "X",
            "worker/node": "X",
            "worker2/a": ".",
            "worker2/node": ".",
            "control-plane/node": ".",
        }, "\n".join(lines[start - 1 : start + 6])
        assert "worker/a -> web 10.96." in out and "expected allowed, observed BLOCKED" in out

        got = outcomes(tmp_path)
        assert got["test_cluster_ip"] == "failed" and got["test_node_port"] == "failed", got
        check = next(c for c in checks(tmp_path) if c["nodeid"].endswith("::test_cluster_ip"))
        wrong = {m["src"] for m in check["matrices"][0]["wrong"]}
        assert wrong == {"worker/a", "worker/node"}, check["matrices"][0]["wrong"]
        assert_attached_lab_left_running(lab.root)
