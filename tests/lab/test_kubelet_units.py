"""Pure parts of the lab kubelet: status building, images, volumes, env, back-off, probes."""

from __future__ import annotations

import base64
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clusters.lab.kubelet import images
from clusters.lab.kubelet.backoff import Backoff, BackoffPolicy, go_duration
from clusters.lab.kubelet.env import ContainerConfigError, PodFacts, container_env, expand
from clusters.lab.kubelet.klog import format_line
from clusters.lab.kubelet.nodestatus import NodeIdentity, node_object, node_status, ready_condition
from clusters.lab.kubelet.probes import ProbeSpec, ProbeTracker, parse_probe
from clusters.lab.kubelet.status import (
    ContainerView,
    PodView,
    Running,
    Terminated,
    Waiting,
    pod_phase,
    pod_status,
)
from clusters.lab.kubelet.volumes import VolumeError, build_rootfs, materialise, node_path, resolv_conf
from clusters.lab.layout import LabLayout
from clusters.lab.runtime import NetworkStatus

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.55"


# ---- status -----------------------------------------------------------------------------------


def view(*containers: ContainerView, policy: str = "Always", names: tuple[str, ...] = ("c",)) -> PodView:
    return PodView(
        restart_policy=policy,
        init_containers=(),
        containers=containers,
        container_names=names,
        sandbox_ready=True,
        pod_ips=("10.244.1.5",),
        host_ip="172.18.0.3",
        start_time=T0,
    )


def test_running_ready_pod_status_has_the_fields_kubectl_reads() -> None:
    c = ContainerView(
        name="c",
        image=AGNHOST,
        state=Running(T0),
        image_id="x@sha256:" + "a" * 64,
        container_id="containerd://" + "b" * 64,
        ready=True,
        started=True,
    )
    st = pod_status(view(c), {}, T0)
    assert st["phase"] == "Running"
    assert st["podIP"] == "10.244.1.5" and st["podIPs"] == [{"ip": "10.244.1.5"}]
    assert st["hostIP"] == "172.18.0.3" and st["hostIPs"] == [{"ip": "172.18.0.3"}]
    assert st["startTime"] == "2026-01-02T03:04:05Z"
    kinds = [(x["type"], x["status"]) for x in st["conditions"]]
    assert kinds == [
        ("PodReadyToStartContainers", "True"),
        ("Initialized", "True"),
        ("Ready", "True"),
        ("ContainersReady", "True"),
        ("PodScheduled", "True"),
    ]
    assert all(x["lastTransitionTime"] == "2026-01-02T03:04:05Z" for x in st["conditions"])
    (cs,) = st["containerStatuses"]
    assert cs["state"] == {"running": {"startedAt": "2026-01-02T03:04:05Z"}}
    assert cs["lastState"] == {} and cs["restartCount"] == 0 and cs["ready"] and cs["started"]
    assert cs["containerID"].startswith("containerd://")


def test_transition_time_is_kept_while_status_is_unchanged() -> None:
    c = ContainerView(name="c", image=AGNHOST, state=Running(T0), ready=False)
    first = pod_status(view(c), {}, T0)
    later = pod_status(view(c), first, T0 + timedelta(minutes=1))
    assert later == first
    ready = ContainerView(name="c", image=AGNHOST, state=Running(T0), ready=True)
    after = pod_status(view(ready), first, T0 + timedelta(minutes=2))
    by_type = {x["type"]: x for x in after["conditions"]}
    assert by_type["Ready"]["lastTransitionTime"] == "2026-01-02T03:06:05Z"
    assert by_type["Initialized"]["lastTransitionTime"] == "2026-01-02T03:04:05Z"


def test_unready_condition_wording() -> None:
    a = ContainerView(name="a", image=AGNHOST, state=Waiting("ContainerCreating"))
    b = ContainerView(name="b", image=AGNHOST, state=Running(T0), ready=False)
    st = pod_status(view(a, b, names=("a", "b")), {}, T0)
    ready = next(x for x in st["conditions"] if x["type"] == "Ready")
    assert ready["reason"] == "ContainersNotReady"
    assert ready["message"] == "containers with unready status: [a b]"
    assert st["phase"] == "Pending"


@pytest.mark.parametrize(
    ("policy", "code", "phase"),
    [
        ("Never", 1, "Failed"),
        ("Never", 0, "Succeeded"),
        ("OnFailure", 0, "Succeeded"),
        ("OnFailure", 1, "Running"),
        ("Always", 0, "Running"),
    ],
)
def test_phase_of_exited_container(policy: str, code: int, phase: str) -> None:
    term = Terminated(exit_code=code, reason="Error" if code else "Completed", finished_at=T0)
    assert pod_phase(view(ContainerView(name="c", image=AGNHOST, state=term), policy=policy)) == phase


def test_crashloop_container_keeps_pod_running() -> None:
    term = Terminated(exit_code=1, reason="Error", finished_at=T0, started_at=T0)
    c = ContainerView(
        name="c",
        image=AGNHOST,
        state=Waiting("CrashLoopBackOff", "back-off 10s ..."),
        last_state=term,
        restart_count=3,
    )
    st = pod_status(view(c), {}, T0)
    assert st["phase"] == "Running"
    cs = st["containerStatuses"][0]
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert cs["lastState"]["terminated"]["exitCode"] == 1 and cs["restartCount"] == 3


def test_pending_init_container_condition() -> None:
    init = ContainerView(name="setup", image=AGNHOST, state=Running(T0))
    pv = PodView(
        restart_policy="Always",
        init_containers=(init,),
        containers=(ContainerView(name="c", image=AGNHOST, state=Waiting("PodInitializing")),),
        container_names=("c",),
        init_names=("setup",),
        sandbox_ready=True,
        start_time=T0,
    )
    st = pod_status(pv, {}, T0)
    assert st["phase"] == "Pending"
    cond = next(x for x in st["conditions"] if x["type"] == "Initialized")
    assert (cond["status"], cond["reason"]) == ("False", "ContainersNotInitialized")
    assert cond["message"] == "containers with incomplete status: [setup]"
    assert st["initContainerStatuses"][0]["ready"] is False


# ---- images -----------------------------------------------------------------------------------


def test_agnhost_drops_leading_entrypoint_and_appends_args() -> None:
    argv = images.resolve(AGNHOST, ["/agnhost", "netexec"], ["--http-port=8080"])
    assert argv == (sys.executable, "-m", "clusters.lab.programs.agnhost", "netexec", "--http-port=8080")


def test_agnhost_default_cmd_is_pause_and_args_alone_follow_entrypoint() -> None:
    assert images.resolve(AGNHOST, [], [])[3:] == ("pause",)
    assert images.resolve("registry.k8s.io/e2e-test-images/agnhost:2.66.1", [], ["serve-hostname"])[3:] == (
        "serve-hostname",
    )
    assert images.resolve("registry.k8s.io/pause:3.10", [], [])[3:] == ("pause",)


def test_unknown_image_fails_like_a_pull() -> None:
    with pytest.raises(images.ImagePullError) as err:
        images.resolve("foo:1", [], [])
    msg = str(err.value)
    assert msg.startswith(
        'failed to pull and unpack image "docker.io/library/foo:1": the lab cannot run this image'
    )
    assert "registry.k8s.io/e2e-test-images/agnhost" in msg


def test_image_reference_normalisation() -> None:
    assert images.parse_image("busybox").normalized == "docker.io/library/busybox:latest"
    assert images.parse_image("quay.io/x/y:1").normalized == "quay.io/x/y:1"
    assert images.parse_image("localhost:5000/y").repository == "localhost:5000/y"
    assert images.parse_image(AGNHOST).image_id.startswith("registry.k8s.io/e2e-test-images/agnhost@sha256:")


# ---- back-off ---------------------------------------------------------------------------------


def test_crash_backoff_schedule_doubles_to_the_cap() -> None:
    b = Backoff(BackoffPolicy(base=10, cap=300))
    now = 0.0
    assert not b.in_backoff("c", now, now)  # first crash restarts at once
    delays = []
    for _ in range(7):
        b.next("c", now, now)
        delays.append(b.get("c"))
        now += 1  # crashes one second after each restart
        assert b.in_backoff("c", now, now)
        now += b.get("c")
        assert not b.in_backoff("c", now - b.get("c"), now)
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    assert [go_duration(d) for d in delays[:6]] == ["10s", "20s", "40s", "1m20s", "2m40s", "5m0s"]


def test_crash_backoff_resets_after_ten_minutes() -> None:
    b = Backoff(BackoffPolicy(base=10, cap=300))
    b.next("c", 0, 0)
    b.next("c", 5, 5)
    assert b.get("c") == 20
    b.next("c", 5 + 601, 5 + 601)
    assert b.get("c") == 10


def test_go_duration_small_values() -> None:
    assert go_duration(0.2) == "200ms"
    assert go_duration(1.5) == "1.5s"


# ---- env --------------------------------------------------------------------------------------


class Objects:
    def __init__(self) -> None:
        self.cms: dict[str, dict[str, Any]] = {
            "cfg": {"data": {"MODE": "fast", "Corefile": ".:53 {\n}\n"}},
        }
        self.secrets: dict[str, dict[str, Any]] = {
            "creds": {"data": {"password": base64.b64encode(b"s3cret").decode()}},
        }
        self.svcs: list[dict[str, Any]] = [
            {"metadata": {"name": "web-svc"}, "spec": {"clusterIP": "10.96.1.2", "ports": [{"port": 80}]}},
            {"metadata": {"name": "headless"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}},
        ]

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cms.get(name)

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get(name)

    def services(self, namespace: str) -> list[dict[str, Any]]:
        return self.svcs


POD: dict[str, Any] = {
    "metadata": {"name": "p", "namespace": "ns1", "uid": "u-1", "labels": {"app": "x"}},
    "spec": {"nodeName": "knetcheck-lab-worker"},
}
FACTS = PodFacts(pod_ip="10.244.1.5", pod_ips=("10.244.1.5",), host_ip="172.18.0.3", node_name="n")


def test_env_resolution_order_and_sources() -> None:
    container = {
        "name": "c",
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "MODE"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "URL", "value": "http://$(POD_IP):80/$$(x)/$(NOPE)"},
        ],
    }
    env = container_env(POD, container, FACTS, Objects())
    assert env["POD_NAME"] == "p" and env["POD_NS"] == "ns1" and env["POD_IP"] == "10.244.1.5"
    assert env["HOST_IP"] == "172.18.0.3" and env["NODE"] == "knetcheck-lab-worker" and env["APP"] == "x"
    assert env["MODE"] == "fast" and env["PW"] == "s3cret"
    assert env["URL"] == "http://10.244.1.5:80/$(x)/$(NOPE)"
    assert env["HOSTNAME"] == "p"
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1" and env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["WEB_SVC_SERVICE_HOST"] == "10.96.1.2" and env["WEB_SVC_PORT"] == "tcp://10.96.1.2:80"
    assert "HEADLESS_SERVICE_HOST" not in env


def test_env_missing_configmap_key_is_a_config_error() -> None:
    container = {
        "name": "c",
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope"}}}],
    }
    with pytest.raises(ContainerConfigError, match="couldn't find key nope in ConfigMap ns1/cfg"):
        container_env(POD, container, FACTS, Objects())
    missing = {
        "name": "c",
        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}],
    }
    with pytest.raises(ContainerConfigError, match='secret "gone" not found'):
        container_env(POD, missing, FACTS, Objects())


def test_expand_escapes() -> None:
    assert expand("$(A)-$$(A)-$(B)-$", {"A": "1"}) == "1-$(A)-$(B)-$"


# ---- volumes ----------------------------------------------------------------------------------


def volume_pod(volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns1", "uid": "uid-vol"}, "spec": {"volumes": volumes}}


def test_configmap_items_and_secret_decoding(tmp_path: Path) -> None:
    layout = LabLayout(tmp_path)
    pod = volume_pod(
        [
            {
                "name": "cfg",
                "configMap": {
                    "name": "cfg",
                    "items": [{"key": "Corefile", "path": "dir/Corefile", "mode": 0o600}],
                },
            },
            {"name": "sec", "secret": {"secretName": "creds", "defaultMode": 0o400}},
            {"name": "scratch", "emptyDir": {}},
        ]
    )
    vols = materialise(pod, layout, "n1", FACTS, Objects())
    corefile = vols["cfg"] / "dir" / "Corefile"
    assert corefile.read_text() == ".:53 {\n}\n"
    assert (corefile.stat().st_mode & 0o777) == 0o600
    assert not (vols["cfg"] / "MODE").exists()  # items select keys
    assert (vols["sec"] / "password").read_bytes() == b"s3cret"
    assert (vols["sec"] / "..data").is_symlink()
    assert vols["scratch"].is_dir()


def test_configmap_update_swaps_data_atomically(tmp_path: Path) -> None:
    layout = LabLayout(tmp_path)
    objects = Objects()
    pod = volume_pod([{"name": "cfg", "configMap": {"name": "cfg"}}])
    vols = materialise(pod, layout, "n1", FACTS, objects)
    first = (vols["cfg"] / "..data").resolve()
    objects.cms["cfg"] = {"data": {"MODE": "slow"}}
    materialise(pod, layout, "n1", FACTS, objects)
    assert (vols["cfg"] / "MODE").read_text() == "slow"
    assert not (vols["cfg"] / "Corefile").exists()
    assert not first.exists()


def test_missing_configmap_is_a_mount_error(tmp_path: Path) -> None:
    pod = volume_pod([{"name": "config-volume", "configMap": {"name": "coredns"}}])
    with pytest.raises(VolumeError) as err:
        materialise(pod, LabLayout(tmp_path), "n1", FACTS, Objects())
    assert (
        str(err.value)
        == 'MountVolume.SetUp failed for volume "config-volume" : configmap "coredns" not found'
    )


def test_hostpath_maps_into_the_node_tree_and_rootfs_links_mounts(tmp_path: Path) -> None:
    layout = LabLayout(tmp_path)
    pod = volume_pod(
        [
            {"name": "cni", "hostPath": {"path": "/etc/cni/../cni/net.d", "type": "DirectoryOrCreate"}},
            {"name": "cfg", "configMap": {"name": "cfg"}},
        ]
    )
    vols = materialise(pod, layout, "n1", FACTS, Objects())
    assert vols["cni"] == layout.node_fs("n1") / "etc/cni/net.d" and vols["cni"].is_dir()
    assert node_path(layout, "n1", "/../../etc") == layout.node_fs("n1") / "etc"
    container = {
        "name": "c",
        "volumeMounts": [
            {"name": "cni", "mountPath": "/host/etc/cni/net.d"},
            {"name": "cfg", "mountPath": "/etc/config"},
        ],
    }
    root = build_rootfs(pod, container, vols, layout, "n1", "10.244.1.5")
    (root / "host/etc/cni/net.d/10-x.conflist").write_text("{}")
    assert (vols["cni"] / "10-x.conflist").read_text() == "{}"
    assert (root / "etc/config/MODE").read_text() == "fast"
    assert "10.244.1.5\tp" in (root / "etc/hosts").read_text()
    assert (root / "etc/hostname").read_text() == "p\n"
    assert "nameserver 10.96.0.10" in (root / "etc/resolv.conf").read_text()


def test_hostpath_type_check(tmp_path: Path) -> None:
    pod = volume_pod([{"name": "x", "hostPath": {"path": "/nope", "type": "Directory"}}])
    with pytest.raises(VolumeError, match="hostPath type check failed: /nope is not a directory"):
        materialise(pod, LabLayout(tmp_path), "n1", FACTS, Objects())


def test_resolv_conf_cluster_first() -> None:
    text = resolv_conf({"metadata": {"namespace": "x"}, "spec": {}}, "")
    assert text == (
        "search x.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    )


# ---- node status and probes -------------------------------------------------------------------


def test_node_ready_condition_wording() -> None:
    bad = NetworkStatus(ready=False, message="Network plugin returns error: cni plugin not initialized")
    assert ready_condition(bad) == (
        "False",
        "KubeletNotReady",
        "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
        "message:Network plugin returns error: cni plugin not initialized",
    )
    assert ready_condition(NetworkStatus(True, "")) == (
        "True",
        "KubeletReady",
        "kubelet is posting ready status",
    )


def test_node_object_shape() -> None:
    ident = NodeIdentity("knetcheck-lab-control-plane", "172.18.0.2", "10.244.0.0/24", True, True)
    node = node_object(ident)
    assert node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] == ""
    assert node["spec"]["taints"] == [
        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
    ]
    assert node["spec"]["podCIDRs"] == ["10.244.0.0/24"]
    st = node_status(ident, NetworkStatus(True, ""), [], T0)
    assert st["addresses"][0] == {"type": "InternalIP", "address": "172.18.0.2"}
    assert st["capacity"]["pods"] == "110"


def test_probe_thresholds() -> None:
    spec = parse_probe(
        "readiness",
        {"httpGet": {"port": "http", "path": "/ready"}, "successThreshold": 2, "failureThreshold": 2},
        {"ports": [{"name": "http", "containerPort": 8080}]},
    )
    assert (spec.port, spec.path, spec.timeout, spec.period) == (8080, "/ready", 1.0, 10.0)
    t = ProbeTracker(spec)
    assert t.result is False
    assert not t.observe(True) and t.observe(True) and t.result is True
    assert not t.observe(False) and t.observe(False) and t.result is False
    live = ProbeTracker(ProbeSpec(kind="liveness", action="tcpSocket", failure_threshold=3))
    assert [live.observe(False) for _ in range(3)] == [False, False, True]


def test_klog_line_format() -> None:
    line = format_line(
        "E", "kubelet.go:3002", "Container runtime network not ready", T0, 42, networkReady='a "b"'
    )
    assert line == (
        'E0102 03:04:05.000000      42 kubelet.go:3002] "Container runtime network not ready" '
        'networkReady="a \\"b\\""\n'
    )


def test_kill_group_escalates_to_sigkill_after_the_grace_period() -> None:
    import subprocess

    from clusters.lab.kubelet import procs

    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"  # the handler is in place
        exits = procs.kill_group([proc.pid], 0.3, lambda pid: procs.from_returncode(proc.poll()))
        assert exits[proc.pid] == procs.Exit(137, 9)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
