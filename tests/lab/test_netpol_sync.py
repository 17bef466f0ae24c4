"""The policy sync loop against the lab API server, with a recording applier (no root needed).

It checks the controller's contract: nothing is applied before every informer has listed,
a created/changed/deleted object re-renders the node's rules within the debounce, stale pod
chains are deleted, and the agent's ``POLICY`` switch parses strictly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from clusters.errors import UsageProblem
from clusters.lab.netpol import rules
from clusters.lab.netpol.sync import PolicySync
from clusters.lab.programs.cniagent import config_from_env

IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.53"


class RecordingApplier:
    """A fake kernel: remembers which KNP chains exist and whether FORWARD jumps to ours."""

    def __init__(self) -> None:
        self.chains: set[str] = set()
        self.jump = False
        self.texts: list[str] = []
        self.lock = threading.Lock()

    def current(self) -> rules.Kernel:
        with self.lock:
            return rules.Kernel(frozenset(self.chains), int(self.jump), self.jump)

    def apply(self, text: str) -> None:
        with self.lock:
            for line in text.splitlines():
                if line.startswith(":"):
                    self.chains.add(line[1:].split()[0])
                elif line.startswith("-X "):
                    self.chains.discard(line.split()[1])
                elif line.startswith("-D FORWARD"):
                    raise AssertionError("a first, single jump was deleted")
                elif line == f"-I FORWARD 1 {rules.JUMP}":
                    assert not self.jump, "the jump was added twice"
                    self.jump = True
            self.texts.append(text)

    @property
    def last(self) -> str:
        with self.lock:
            return self.texts[-1] if self.texts else ""


def make_pod(core: Any, namespace: str, name: str, node: str, ip: str, app: str) -> None:
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {
                "nodeName": node,
                "containers": [
                    {"name": "c", "image": IMAGE, "ports": [{"name": "http", "containerPort": 8080}]}
                ],
            },
        },
    )
    core.patch_namespaced_pod_status(name, namespace, {"status": {"phase": "Running", "podIP": ip}})


@pytest.fixture
def cluster(lab_api_client: kubernetes.client.ApiClient) -> kubernetes.client.ApiClient:
    """Two namespaces and nine pods over three nodes (three on w1)."""
    core: Any = kubernetes.client.CoreV1Api(lab_api_client)
    for ns in ("prod", "dev"):
        core.create_namespace({"metadata": {"name": ns}})
    for i in range(9):
        node = f"w{i % 3 + 1}"
        make_pod(
            core, "prod" if i < 5 else "dev", f"p{i}", node, f"10.244.{i % 3 + 1}.{i + 2}", f"app{i % 2}"
        )
    return lab_api_client


@pytest.fixture
def sync(cluster: kubernetes.client.ApiClient) -> Iterator[tuple[PolicySync, RecordingApplier]]:
    applier = RecordingApplier()
    ps = PolicySync("w1", cluster, applier)
    ps.start()
    try:
        assert ps.wait_applied(0, 10), "no first sync"
        yield ps, applier
    finally:
        ps.stop()


def wait_for(
    ps: PolicySync, applier: RecordingApplier, predicate: Any, what: str, timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate(applier.last):
        count = ps.applied_count
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not ps.wait_applied(count, remaining):
            raise AssertionError(f"timed out waiting for {what}; last rules:\n{applier.last}")


DENY = {"metadata": {"name": "deny"}, "spec": {"podSelector": {}}}


def test_first_sync_writes_the_skeleton_and_the_jump(sync: tuple[PolicySync, RecordingApplier]) -> None:
    ps, applier = sync
    assert applier.jump and applier.chains == {rules.FORWARD, rules.INGRESS, rules.EGRESS}
    assert ps.ready()
    assert {p.key for p in ps.model().pods} == {f"{'prod' if i < 5 else 'dev'}/p{i}" for i in range(9)}


def test_policy_create_update_delete_reach_the_rules(
    sync: tuple[PolicySync, RecordingApplier], cluster: kubernetes.client.ApiClient
) -> None:
    ps, applier = sync
    net: Any = kubernetes.client.NetworkingV1Api(cluster)
    start = time.monotonic()
    net.create_namespaced_network_policy("prod", DENY)
    # prod pods on w1: p0 (10.244.1.2) and p3 (10.244.1.5)
    wait_for(ps, applier, lambda t: "-A KNP-INGRESS -d 10.244.1.5/32" in t, "the deny policy")
    elapsed = time.monotonic() - start
    assert "-A KNP-INGRESS -d 10.244.1.2/32" in applier.last
    assert "10.244.1.8/32" not in applier.last  # dev/p6 on w1 is not selected
    assert ps.last is not None and ps.last.chains == 5
    net.patch_namespaced_network_policy(
        "deny", "prod", {"spec": {"podSelector": {"matchLabels": {"app": "app1"}}}}
    )  # now only p3 (app1)
    wait_for(ps, applier, lambda t: "-d 10.244.1.2/32" not in t, "the narrowed selector")
    assert len([c for c in applier.chains if c.startswith("KNP-ING-")]) == 1
    net.delete_namespaced_network_policy("deny", "prod")
    wait_for(ps, applier, lambda t: "-A KNP-INGRESS" not in t, "the delete")
    assert applier.chains == {rules.FORWARD, rules.INGRESS, rules.EGRESS}
    logging.getLogger(__name__).info(
        "policy create -> rules applied (fake iptables): %.0f ms", elapsed * 1000
    )


def test_pod_and_namespace_changes_recompute(
    sync: tuple[PolicySync, RecordingApplier], cluster: kubernetes.client.ApiClient
) -> None:
    ps, applier = sync
    core: Any = kubernetes.client.CoreV1Api(cluster)
    net: Any = kubernetes.client.NetworkingV1Api(cluster)
    allow = {
        "metadata": {"name": "from-team-a"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "app0"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}],
        },
    }
    net.create_namespaced_network_policy("prod", allow)
    wait_for(ps, applier, lambda t: "-A KNP-INGRESS -d 10.244.1.2/32" in t, "the policy")
    assert '-s 10.244.1.8/32 -m comment --comment "prod/from-team-a ingress[0]"' not in applier.last
    core.patch_namespace("dev", {"metadata": {"labels": {"team": "a"}}})
    wait_for(ps, applier, lambda t: "-s 10.244.1.8/32 -m comment" in t, "dev joining team a")
    make_pod(core, "prod", "late", "w1", "10.244.1.40", "app0")
    wait_for(ps, applier, lambda t: "-A KNP-INGRESS -d 10.244.1.40/32" in t, "the new pod")
    # A bound pod's DELETE is graceful: no kubelet runs here, so send its final grace-0 DELETE too.
    uid = core.delete_namespaced_pod("late", "prod").metadata.uid
    core.delete_namespaced_pod("late", "prod", body={"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
    wait_for(ps, applier, lambda t: "10.244.1.40" not in t, "the deleted pod")


def test_nothing_is_applied_before_every_informer_listed(cluster: kubernetes.client.ApiClient) -> None:
    applier = RecordingApplier()
    ps = PolicySync("w1", cluster, applier)
    # not started: the loop's gate is ready(), which needs all three lists
    assert not ps.ready()
    ps._list(*ps._sources[0])
    assert not ps.ready()
    for source in ps._sources[1:]:
        ps._list(*source)
    assert ps.ready() and applier.texts == []
    assert ps.sync_once() is not None and ps.sync_once() is None  # unchanged model: no write
    assert ps.sync_once(force=True) is not None


@pytest.mark.parametrize(("value", "enforce"), [(None, False), ("off", False), ("enforce", True)])
def test_agent_policy_switch(value: str | None, enforce: bool) -> None:
    env = {"NODE_NAME": "w1", "POD_CIDR": "10.244.1.0/24", "PEERS": ""}
    if value is not None:
        env["POLICY"] = value
    assert config_from_env(env, Path("/nonexistent")).policy is enforce


def test_agent_policy_switch_rejects_typos() -> None:
    env = {"NODE_NAME": "w1", "POD_CIDR": "10.244.1.0/24", "PEERS": "", "POLICY": "on"}
    with pytest.raises(UsageProblem, match="POLICY='on' is not supported: use off or enforce"):
        config_from_env(env, Path("/nonexistent"))
