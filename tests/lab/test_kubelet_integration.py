"""The lab kubelet against the real lab API server, with a fake runtime that needs no netns.

FakeRuntime's "sandboxes" touch no network: every pod gets 127.0.0.1 and its processes run in
the root namespace, where the test programs only use loopback ports the test picked. Probes use
the loopback connector (which refuses anything outside 127.0.0.0/8).
"""

from __future__ import annotations

import re
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from clusters.lab.api import RunningApiServer
from clusters.lab.controllers.client import Kube
from clusters.lab.kubelet.backoff import BackoffPolicy
from clusters.lab.kubelet.kubelet import Kubelet
from clusters.lab.kubelet.nodecontext import KubeletConfig
from clusters.lab.kubelet.podio import LabPodIO, container_log_path
from clusters.lab.kubelet.probes import loopback_connector
from clusters.lab.layout import LabLayout
from clusters.lab.runtime import NetworkStatus, ProcessSpec, Sandbox, SandboxError

NODE = "knetcheck-lab-worker"
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.55"
NOT_INIT = "Network plugin returns error: cni plugin not initialized"
SANDBOX_MSG = (
    'Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox "'
    + "f" * 64
    + '": plugin type="bridge" failed (add): failed to allocate for range 0: no IP addresses available'
)

JSON = dict[str, Any]


class FakeRuntime:
    """A NodeRuntime whose sandboxes are bookkeeping only and whose processes are plain children."""

    node = NODE
    netns = "unused-by-fake"

    def __init__(self) -> None:
        self.ready = True
        self.fail: SandboxError | None = None
        self.sandboxes: set[str] = set()
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.sandbox_calls = 0

    def network_status(self) -> NetworkStatus:
        return NetworkStatus(ready=self.ready, message="" if self.ready else NOT_INIT)

    def run_pod_sandbox(self, pod_uid: str, namespace: str, name: str) -> Sandbox:
        self.sandbox_calls += 1
        if self.fail is not None:
            raise self.fail
        self.sandboxes.add(pod_uid)
        return Sandbox(pod_uid=pod_uid, netns="fake", ips=("127.0.0.1",), sandbox_id=secrets.token_hex(32))

    def stop_pod_sandbox(self, pod_uid: str) -> None:
        self.sandboxes.discard(pod_uid)

    def start_process(self, sandbox: Sandbox | None, spec: ProcessSpec) -> int:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "ab") as logf:
            proc = subprocess.Popen(
                list(spec.argv),
                env=dict(spec.env),
                cwd=spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[proc.pid] = proc
        return proc.pid

    def process_returncode(self, pid: int) -> int | None:
        return self.procs[pid].poll()

    def node_exec_argv(self, argv: Sequence[str]) -> list[str]:
        return list(argv)

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Env:
    def __init__(self, kube: Kube, runtime: FakeRuntime, kubelet: Kubelet, layout: LabLayout) -> None:
        self.kube = kube
        self.runtime = runtime
        self.kubelet = kubelet
        self.layout = layout

    def create_pod(self, name: str, containers: list[JSON], **spec: Any) -> JSON:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": NODE, "containers": containers, "terminationGracePeriodSeconds": 5, **spec},
        }
        return self.kube.create("/api/v1/namespaces/default/pods", body)

    def pod(self, name: str) -> JSON | None:
        try:
            return self.kube.get(f"/api/v1/namespaces/default/pods/{name}")
        except Exception as err:
            if getattr(err, "status", 0) == 404:
                return None
            raise

    def status(self, name: str) -> JSON:
        return (self.pod(name) or {}).get("status") or {}

    def container(self, name: str) -> JSON:
        statuses = self.status(name).get("containerStatuses") or [{}]
        return dict(statuses[0])

    def events(self, name: str) -> list[JSON]:
        body = self.kube.get("/api/v1/namespaces/default/events")
        return [e for e in body.get("items") or [] if e["involvedObject"].get("name") == name]

    def event(self, name: str, reason: str) -> JSON | None:
        self.kubelet.recorder.flush(5)
        return next((e for e in self.events(name) if e["reason"] == reason), None)

    def node(self) -> JSON:
        return self.kube.get(f"/api/v1/nodes/{NODE}")


@pytest.fixture
def env(
    lab_api: RunningApiServer, lab_api_client: kubernetes.client.ApiClient, tmp_path: Path
) -> Iterator[Env]:
    layout = LabLayout(tmp_path / "lab")
    runtime = FakeRuntime()
    config = KubeletConfig(
        crash_backoff=BackoffPolicy(base=0.2, cap=1.0),
        image_backoff=BackoffPolicy(base=0.5, cap=1.0),
        retry_backoff=BackoffPolicy(base=0.2, cap=0.5),
        sync_period=0.1,
        node_status_period=0.5,
        shutdown_grace=2.0,
    )
    kubelet = Kubelet(NODE, lab_api_client, runtime, layout, config=config, connector=loopback_connector)
    kubelet.start()
    try:
        yield Env(Kube(lab_api_client), runtime, kubelet, layout)
    finally:
        kubelet.stop()
        leftovers = [pid for pid, p in runtime.procs.items() if p.poll() is None]
        runtime.kill_all()
        assert not leftovers, f"processes left running after kubelet.stop(): {leftovers}"
        assert not runtime.sandboxes, f"sandboxes left after kubelet.stop(): {runtime.sandboxes}"
        assert not (layout.root / "pods").exists() or not any((layout.root / "pods").iterdir())


def test_node_registers_ready_and_follows_the_runtime_network(env: Env) -> None:
    node = env.node()
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == NODE and labels["kubernetes.io/os"] == "linux"
    assert "node-role.kubernetes.io/control-plane" not in labels
    assert node["spec"]["podCIDR"] == "10.244.1.0/24"
    assert {"type": "InternalIP", "address": "172.18.0.3"} in node["status"]["addresses"]

    def ready() -> JSON:
        return next(c for c in env.node()["status"]["conditions"] if c["type"] == "Ready")

    assert ready()["status"] == "True" and ready()["reason"] == "KubeletReady"
    env.runtime.ready = False
    cond = eventually(lambda: (c := ready())["status"] == "False" and c, "node NotReady")
    assert cond["reason"] == "KubeletNotReady"
    assert cond["message"] == (
        "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
        "message:Network plugin returns error: cni plugin not initialized"
    )
    env.runtime.ready = True
    eventually(lambda: ready()["status"] == "True", "node Ready again")
    journal = (env.layout.node_fs(NODE) / "var/log/kubelet.log").read_text()
    assert (
        '] "Container runtime network not ready" networkReady="NetworkReady=false '
        'reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"'
    ) in journal


def test_pod_runs_with_kubelet_status_fields_probes_and_logs(env: Env) -> None:
    port = free_port()
    pod = env.create_pod(
        "web",
        [
            {
                "name": "netexec",
                "image": AGNHOST,
                "args": ["netexec", f"--http-port={port}", "--udp-port=-1"],
                "readinessProbe": {"httpGet": {"path": "/hostname", "port": port}, "periodSeconds": 1},
            }
        ],
    )
    uid = pod["metadata"]["uid"]
    eventually(lambda: env.container("web").get("ready"), "container ready", timeout=60)
    st = env.status("web")
    assert st["phase"] == "Running"
    assert st["podIP"] == "127.0.0.1" and st["podIPs"] == [{"ip": "127.0.0.1"}]
    assert st["hostIP"] == "172.18.0.3" and st["hostIPs"] == [{"ip": "172.18.0.3"}]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", st["startTime"])
    assert [c["type"] for c in st["conditions"]] == [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    conds = {c["type"]: c for c in st["conditions"]}
    assert set(conds) == {
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
        "PodScheduled",
    }
    assert all(c["status"] == "True" and c["lastTransitionTime"] for c in conds.values())
    cs = env.container("web")
    assert re.fullmatch(r"containerd://[0-9a-f]{64}", cs["containerID"])
    assert cs["imageID"].startswith("registry.k8s.io/e2e-test-images/agnhost@sha256:")
    assert cs["image"] == AGNHOST and cs["started"] is True and cs["restartCount"] == 0
    assert "startedAt" in cs["state"]["running"]
    assert env.event("web", "Pulled")["message"] == f'Container image "{AGNHOST}" already present on machine'
    assert env.event("web", "Created")["message"] == "Created container: netexec"
    started = env.event("web", "Started")
    assert started["message"] == "Started container netexec"
    assert started["involvedObject"]["fieldPath"] == "spec.containers{netexec}"
    assert started["source"] == {"component": "kubelet", "host": NODE}
    podio = LabPodIO(env.layout, "unused")
    path = podio.log_path("default", "web", "netexec")
    assert path is not None and path.name == "0.log"
    assert path.parent.parent.name == f"default_web_{uid}"


def test_crashing_container_goes_to_crashloopbackoff(env: Env) -> None:
    closed = free_port()
    pod = env.create_pod(
        "crash",
        [
            {
                "name": "c",
                "image": AGNHOST,
                "args": ["connect", f"127.0.0.1:{closed}", "--timeout=1s"],
            }
        ],
    )
    uid = pod["metadata"]["uid"]

    def looping() -> JSON | None:
        cs = env.container("crash")
        waiting = (cs.get("state") or {}).get("waiting") or {}
        return cs if waiting.get("reason") == "CrashLoopBackOff" and cs.get("restartCount", 0) >= 2 else None

    cs = eventually(looping, "CrashLoopBackOff with restarts", timeout=60)
    msg = cs["state"]["waiting"]["message"]
    assert re.fullmatch(rf"back-off \d+ms restarting failed container=c pod=crash_default\({uid}\)", msg)
    assert cs["lastState"]["terminated"]["exitCode"] == 1
    assert cs["lastState"]["terminated"]["reason"] == "Error"
    assert env.status("crash")["phase"] == "Running"
    backoff = env.event("crash", "BackOff")
    assert backoff is not None and backoff["type"] == "Warning"
    assert backoff["message"] == f"Back-off restarting failed container c in pod crash_default({uid})"
    podio = LabPodIO(env.layout, "unused")
    previous = podio.previous_log_path("default", "crash", "c")
    assert previous is not None and "REFUSED" in previous.read_text()


def test_unknown_image_fails_to_pull(env: Env) -> None:
    env.create_pod("nope", [{"name": "c", "image": "docker.io/library/foo:1"}])

    def reason() -> str:
        return str(((env.container("nope").get("state") or {}).get("waiting") or {}).get("reason", ""))

    eventually(lambda: reason() == "ImagePullBackOff", "ImagePullBackOff")
    eventually(lambda: reason() == "ErrImagePull", "ErrImagePull on the next try")
    waiting = env.container("nope")["state"]["waiting"]
    assert waiting["message"].startswith(
        'failed to pull and unpack image "docker.io/library/foo:1": the lab cannot run this image'
    )
    failed = [e["message"] for e in env.events("nope") if e["reason"] == "Failed"]
    assert any(m.startswith('Failed to pull image "docker.io/library/foo:1": failed to pull') for m in failed)
    assert "Error: ErrImagePull" in failed
    assert env.status("nope")["phase"] == "Pending"


def test_sandbox_error_keeps_pod_pending_then_recovers(env: Env) -> None:
    env.runtime.fail = SandboxError("FailedCreatePodSandBox", SANDBOX_MSG)
    env.create_pod("sb", [{"name": "c", "image": AGNHOST}])
    event = eventually(lambda: env.event("sb", "FailedCreatePodSandBox"), "FailedCreatePodSandBox event")
    assert event["message"] == SANDBOX_MSG and event["type"] == "Warning"
    calls = env.runtime.sandbox_calls
    eventually(lambda: env.runtime.sandbox_calls > calls, "a retry")
    st = env.status("sb")
    assert st["phase"] == "Pending"
    assert env.container("sb")["state"] == {"waiting": {"reason": "ContainerCreating"}}
    ready_to_start = next(c for c in st["conditions"] if c["type"] == "PodReadyToStartContainers")
    assert ready_to_start["status"] == "False"
    env.runtime.fail = None
    eventually(lambda: env.status("sb").get("phase") == "Running", "pod Running after recovery")
    journal = (env.layout.node_fs(NODE) / "var/log/kubelet.log").read_text()
    assert (
        '"RunPodSandbox from runtime service failed" err="rpc error: code = Unknown desc = failed to setup'
        in journal
    )


def test_init_container_then_completion_with_restart_never(env: Env) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        port = listener.getsockname()[1]
        env.create_pod(
            "job",
            [{"name": "main", "image": AGNHOST, "args": ["connect", f"127.0.0.1:{port}", "--timeout=2s"]}],
            initContainers=[
                {"name": "init", "image": AGNHOST, "args": ["connect", f"127.0.0.1:{port}", "--timeout=2s"]}
            ],
            restartPolicy="Never",
        )
        eventually(lambda: env.status("job").get("phase") == "Succeeded", "pod Succeeded", timeout=60)
    finally:
        listener.close()
    st = env.status("job")
    assert st["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert st["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PodCompleted")
    assert not env.runtime.sandboxes  # a finished pod gives its network back


def test_pod_delete_stops_container_and_removes_pod(env: Env) -> None:
    env.create_pod("gone", [{"name": "c", "image": AGNHOST, "args": ["pause"]}])
    eventually(lambda: env.status("gone").get("phase") == "Running", "pod Running")
    (pid,) = [p for p, proc in env.runtime.procs.items() if proc.poll() is None]
    env.kube.delete("/api/v1/namespaces/default/pods/gone", {"gracePeriodSeconds": 5})
    eventually(lambda: env.pod("gone") is None, "pod object removed")
    proc = env.runtime.procs[pid]
    proc.wait(10)
    # SIGTERM, not SIGKILL: agnhost pause exits 2 on it, or dies of it before its handler is set.
    assert proc.returncode in (2, -15)
    eventually(lambda: not env.runtime.sandboxes, "sandbox released")
    assert (
        eventually(lambda: env.event("gone", "Killing"), "Killing event")["message"] == "Stopping container c"
    )


def test_failing_liveness_probe_restarts_the_container(env: Env) -> None:
    port, dead = free_port(), free_port()
    env.create_pod(
        "live",
        [
            {
                "name": "c",
                "image": AGNHOST,
                "args": ["netexec", f"--http-port={port}", "--udp-port=-1"],
                "livenessProbe": {
                    "httpGet": {"path": "/", "port": dead},
                    "periodSeconds": 1,
                    "failureThreshold": 1,
                },
            }
        ],
    )
    eventually(lambda: env.container("live").get("restartCount", 0) >= 1, "a liveness restart", timeout=60)
    unhealthy = env.event("live", "Unhealthy")
    assert unhealthy is not None and unhealthy["type"] == "Warning"
    assert unhealthy["message"] == (
        f'Liveness probe failed: Get "http://127.0.0.1:{dead}/": '
        f"dial tcp 127.0.0.1:{dead}: connect: connection refused"
    )
    killing = eventually(lambda: env.event("live", "Killing"), "Killing event")
    assert killing["message"] == "Container c failed liveness probe, will be restarted"


def test_kubectl_reads_the_kubelet_status(env: Env, kubectl: Any) -> None:
    closed = free_port()
    env.create_pod("crash", [{"name": "c", "image": AGNHOST, "args": ["connect", f"127.0.0.1:{closed}"]}])
    env.create_pod("nope", [{"name": "c", "image": "docker.io/library/foo:1"}])

    def shown(pod: str, wanted: str) -> bool:
        # The back-off in this test is 200 ms, so the status column moves: poll kubectl itself.
        row = kubectl("get", "pods", pod, "--no-headers").stdout.split()
        return row[2] == wanted

    eventually(lambda: shown("crash", "CrashLoopBackOff"), "kubectl showing CrashLoopBackOff", timeout=60)
    eventually(lambda: shown("nope", "ImagePullBackOff"), "kubectl showing ImagePullBackOff")
    eventually(lambda: shown("nope", "ErrImagePull"), "kubectl showing ErrImagePull")
    described = kubectl("describe", "pod", "crash").stdout
    assert "Back-off restarting failed container c in pod crash_default(" in described
    assert "Last State:     Terminated" in described


def test_exec_readiness_probe_runs_in_the_container_context(env: Env) -> None:
    port = free_port()
    env.create_pod(
        "execprobe",
        [
            {
                "name": "c",
                "image": AGNHOST,
                "args": ["netexec", f"--http-port={port}", "--udp-port=-1"],
                "readinessProbe": {
                    "exec": {"command": ["/agnhost", "connect", f"127.0.0.1:{port}", "--timeout=1s"]},
                    "periodSeconds": 1,
                    "timeoutSeconds": 5,
                },
            }
        ],
    )
    eventually(lambda: env.container("execprobe").get("ready"), "ready through an exec probe", timeout=60)


def test_graceful_deletion_kills_reports_a_terminal_phase_and_deletes(env: Env) -> None:
    # A finalizer keeps the object after deletion, so the kubelet's side of a graceful delete is
    # visible: containers stopped, terminal phase reported, then the kubelet's own final delete.
    body = env.create_pod("held", [{"name": "c", "image": AGNHOST, "args": ["pause"]}])
    patch = {"metadata": {"finalizers": ["knetcheck.test/hold"]}}
    env.kube.patch("/api/v1/namespaces/default/pods/held", patch)
    eventually(lambda: env.status("held").get("phase") == "Running", "pod Running")
    pids = [p for p, proc in env.runtime.procs.items() if proc.poll() is None]
    env.kube.delete("/api/v1/namespaces/default/pods/held", {"gracePeriodSeconds": 5})
    st = eventually(
        lambda: (s := env.status("held")).get("phase") in ("Failed", "Succeeded") and s, "terminal"
    )
    term = st["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] in (2, 143) and term["reason"] == "Error"
    assert all(env.runtime.procs[p].poll() is not None for p in pids)
    env.kube.patch("/api/v1/namespaces/default/pods/held", {"metadata": {"finalizers": None}})
    eventually(lambda: env.pod("held") is None, "pod removed once the finalizer is gone")
    time.sleep(0.1)  # let a late update reach the kubelet: it must not start the pod again
    assert not [p for p, proc in env.runtime.procs.items() if proc.poll() is None]
    assert body["metadata"]["uid"] not in {w.uid for w in env.kubelet.pod_workers() if not w.done.is_set()}


def test_a_shortened_grace_period_kills_sooner(env: Env) -> None:
    port = free_port()
    args = ["netexec", f"--http-port={port}", "--udp-port=-1", "--delay-shutdown=120"]
    # Ready, not just Running: a SIGTERM before netexec has set its handler kills it at once (as
    # in a real container), and the grace period would never be seen.
    probe = {"tcpSocket": {"port": port}, "periodSeconds": 1}
    containers = [{"name": "c", "image": AGNHOST, "args": args, "readinessProbe": probe}]
    pod = env.create_pod("slow", containers, terminationGracePeriodSeconds=60)
    eventually(lambda: env.container("slow").get("ready"), "container ready", timeout=60)
    (pid,) = [p for p, proc in env.runtime.procs.items() if proc.poll() is None]
    log_file = container_log_path(env.layout, NODE, "default", "slow", pod["metadata"]["uid"], "c", 0)
    env.kube.delete("/api/v1/namespaces/default/pods/slow")

    def sigterm_seen() -> bool:
        try:
            return "Sleeping 120 seconds before terminating" in log_file.read_text(errors="replace")
        except FileNotFoundError as err:
            gone = f"the container log is gone while the pod should be terminating: {env.pod('slow')}"
            raise AssertionError(gone) from err

    eventually(sigterm_seen, "the container to get SIGTERM (its delay-shutdown line)")
    assert env.runtime.procs[pid].poll() is None  # it traps SIGTERM and has 60 s left
    started = time.monotonic()
    env.kube.delete("/api/v1/namespaces/default/pods/slow", {"gracePeriodSeconds": 2})
    eventually(lambda: env.pod("slow") is None, "pod removed after the shortened grace", timeout=20)
    assert time.monotonic() - started < 15
    assert env.runtime.procs[pid].wait(5) == -9  # SIGKILLed, not exited on its own
