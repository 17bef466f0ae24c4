"""A whole lab for end-to-end tests: start one with its own root and name prefix, talk to it the
way a user does (the official client, the real kubectl, probes through the pod proxy), and prove
on the way out that nothing with its prefix is left on the machine.

Shared by the Services/DNS and the faults end-to-end modules, so both probe exactly alike.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client as k

from clusters.kubeclient import api_client
from clusters.lab import control, layout
from clusters.lab.netns import list_netns
from clusters.lab.node.underlay import root_links
from clusters.lab.provider import LabNodeChannel
from clusters.proc import CommandResult, run

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"
Manifest = dict[str, Any]
T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 30.0, every: float = 0.1) -> T:
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` and the last error."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = fn()
        except Exception as exc:  # keep polling; report the last error on timeout
            last, value = exc, None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last})" if last else "")
    )


def parallel(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run probes at once, so a step costs about one probe timeout, not one per probe."""
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(calls)))) as pool:
        return list(pool.map(lambda call: call(), calls))


@dataclass(frozen=True)
class Connect:
    """What ``agnhost connect`` said: exit 0 or a stderr line starting with its verdict."""

    output: str
    error: str

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def verdict(self) -> str:
        """CONNECTED, or the prefix agnhost prints: TIMEOUT, REFUSED, DNS, OTHER, UNKNOWN."""
        if self.ok:
            return "CONNECTED"
        return self.output.strip().split(":", 1)[0].split(None, 1)[0] if self.output.strip() else "NO-OUTPUT"


def responses(answer: dict[str, Any]) -> list[str]:
    """``/dial``'s ``responses`` (absent when the last try failed, so read it, don't trust HTTP 200)."""
    got = answer.get("responses")
    return [str(r) for r in got] if isinstance(got, list) else []


def connected(
    lab: Lab, ns: str, src: str, target: str, protocol: str = "tcp"
) -> Callable[[], tuple[bool, str]]:
    """A :func:`settle` check: ``src`` connects to ``target``."""

    def check() -> tuple[bool, str]:
        probe = lab.connect(ns, src, target, protocol)
        return probe.ok, probe.output.strip() or "connected"

    return check


def agnhost_pod(
    name: str,
    labels: dict[str, str],
    node: str | None = None,
    args: Sequence[str] = ("netexec", "--http-port=8080", "--udp-port=8081"),
) -> Manifest:
    """An agnhost pod that is Ready only once its server listens; it tolerates the control
    plane's taint so a client can be pinned to every node."""
    spec: Manifest = {
        "tolerations": [{"key": CONTROL_PLANE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
        "containers": [
            {
                "name": "agnhost",
                "image": AGNHOST,
                "args": list(args),
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            }
        ],
    }
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


@dataclass(frozen=True)
class PodView:
    """The few pod facts these tests read, with the client's Optionals resolved once."""

    name: str
    uid: str
    node: str
    ip: str
    phase: str
    ready: bool
    deleting: bool
    waiting: str | None  # the first container's waiting reason (CrashLoopBackOff, ...)
    restarts: int
    last_exit_code: int | None

    @classmethod
    def of(cls, pod: k.V1Pod) -> PodView:
        meta, spec, status = pod.metadata, pod.spec, pod.status
        assert meta is not None and spec is not None
        conditions = (status.conditions if status else None) or []
        statuses = (status.container_statuses if status else None) or []
        first = statuses[0] if statuses else None
        state = first.state if first else None
        last = first.last_state.terminated if first and first.last_state else None
        return cls(
            name=str(meta.name),
            uid=str(meta.uid),
            node=str(spec.node_name or ""),
            ip=str((status.pod_ip if status else None) or ""),
            phase=str((status.phase if status else None) or ""),
            ready=any(c.type == "Ready" and c.status == "True" for c in conditions),
            deleting=meta.deletion_timestamp is not None,
            waiting=str(state.waiting.reason) if state and state.waiting else None,
            restarts=int(first.restart_count) if first else 0,
            last_exit_code=int(last.exit_code) if last else None,
        )

    @property
    def serving(self) -> bool:
        """Running, with an IP, and Ready (its server listens)."""
        return self.phase == "Running" and bool(self.ip) and self.ready


@dataclass(frozen=True)
class ServiceView:
    name: str
    cluster_ip: str
    ports: tuple[tuple[int, str, int | None], ...]  # (port, protocol, nodePort)
    lb_ips: tuple[str, ...]

    @classmethod
    def of(cls, svc: k.V1Service) -> ServiceView:
        assert svc.metadata is not None and svc.spec is not None
        ingress = (
            svc.status.load_balancer.ingress if svc.status and svc.status.load_balancer else None
        ) or []
        return cls(
            name=str(svc.metadata.name),
            cluster_ip=str(svc.spec.cluster_ip or ""),
            ports=tuple((int(p.port), str(p.protocol), p.node_port) for p in svc.spec.ports or []),
            lb_ips=tuple(str(i.ip) for i in ingress if i.ip),
        )


class Lab:
    def __init__(self, root: Path, prefix: str, status: control.LabStatus) -> None:
        self.root, self.prefix, self.status = root, prefix, status
        self.client = api_client(status.kubeconfig)
        self.core = k.CoreV1Api(self.client)
        self.apps = k.AppsV1Api(self.client)
        self.discovery = k.DiscoveryV1Api(self.client)
        self.channel = LabNodeChannel(root, prefix)
        self.home = root / "kubectl-home"
        self.home.mkdir(exist_ok=True)

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.status.nodes

    @property
    def workers(self) -> list[str]:
        return [n for n in self.nodes if "control-plane" not in n]

    def node_ip(self, node: str) -> str:
        return str(layout.node_ip(self.nodes.index(node)))

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> CommandResult:
        env = {"PATH": os.environ["PATH"], "HOME": str(self.home), "KUBECONFIG": str(self.status.kubeconfig)}
        return run(["kubectl", *args], timeout=30, stdin=stdin, env=env, check=check)

    def apply(self, ns: str, *manifests: Manifest) -> None:
        """``kubectl apply`` of a stream of JSON documents."""
        self.kubectl("apply", "-n", ns, "-f", "-", stdin="\n".join(json.dumps(m) for m in manifests))

    def namespace(self, name: str) -> None:
        meta = k.V1ObjectMeta(name=name)
        self.core.create_namespace(k.V1Namespace(api_version="v1", kind="Namespace", metadata=meta))

    def ready_pod(self, ns: str, name: str) -> PodView | None:
        pod = PodView.of(self.core.read_namespaced_pod(name, ns))
        return pod if pod.serving else None

    def pods(self, ns: str, selector: str) -> list[PodView]:
        """The selected pods that are not being deleted."""
        views = (PodView.of(p) for p in self.core.list_namespaced_pod(ns, label_selector=selector).items)
        return [p for p in views if not p.deleting]

    def service(self, ns: str, name: str) -> ServiceView:
        return ServiceView.of(self.core.read_namespaced_service(name, ns))

    def config_data(self, ns: str, name: str, key: str) -> str:
        data = self.core.read_namespaced_config_map(name, ns).data or {}
        return str(data[key])

    def _endpoint_addresses(self, ns: str, service: str, keep: Callable[[Any], bool]) -> list[str]:
        """Addresses of the Service's EndpointSlice endpoints whose conditions ``keep`` accepts
        (None conditions count as ready, as the API defines)."""
        slices = self.discovery.list_namespaced_endpoint_slice(
            ns, label_selector=f"kubernetes.io/service-name={service}"
        ).items
        return sorted(
            str(a) for s in slices for e in s.endpoints or [] if keep(e.conditions) for a in e.addresses or []
        )

    def ready_endpoints(self, ns: str, service: str) -> list[str]:
        return self._endpoint_addresses(ns, service, lambda c: c is None or c.ready is not False)

    def serving_endpoints(self, ns: str, service: str) -> list[str]:
        """Ready ones and serving terminating ones: kube-proxy falls back to the latter when none is
        ready (KEP-1669), so traffic still flows to them."""
        return self._endpoint_addresses(
            ns,
            service,
            lambda c: c is None or c.ready is not False or (c.serving is not False and bool(c.terminating)),
        )

    def _proxy(self, ns: str, pod: str, path: str, query: dict[str, str]) -> Any:
        url = f"/api/v1/namespaces/{ns}/pods/{pod}:8080/proxy/{path}?{urllib.parse.urlencode(query)}"
        return json.loads(self.kubectl("get", "--raw", url).stdout)

    def dial(
        self,
        ns: str,
        src: str,
        host: str,
        port: int,
        request: str = "hostname",
        protocol: str = "http",
        tries: int = 1,
    ) -> dict[str, Any]:
        """netexec ``/dial`` from ``src``: JSON with ``responses`` and/or ``errors``."""
        query = {
            "host": host,
            "port": str(port),
            "request": request,
            "protocol": protocol,
            "tries": str(tries),
        }
        answer: dict[str, Any] = self._proxy(ns, src, "dial", query)
        return answer

    def connect(self, ns: str, src: str, target: str, protocol: str = "tcp", timeout: str = "1s") -> Connect:
        """``agnhost connect`` run by ``src``'s netexec ``/shell``, resolving names as the pod does."""
        cmd = f"/agnhost connect {target} --timeout={timeout} --protocol={protocol}"
        answer = self._proxy(ns, src, "shell", {"cmd": cmd})
        return Connect(output=str(answer.get("output", "")), error=str(answer.get("error", "")))


def assert_nothing_left(prefix: str) -> None:
    assert [n for n in list_netns() if n.startswith(prefix)] == []
    assert root_links(prefix) == []


@contextmanager
def started_lab(tag: str) -> Iterator[Lab]:
    """A 3-node lab (default ``lab`` CNI, NetworkPolicy enforced) under its own root and prefix."""
    root = Path(tempfile.mkdtemp(prefix=f"knetcheck-{tag}-", dir="/run"))
    prefix = f"kncl-t-{secrets.token_hex(3)}-"
    try:
        status = control.up(control.LabConfig(root=root, nodes=3, cni="lab", prefix=prefix))
        yield Lab(root, prefix, status)
    finally:
        control.down(root, prefix=prefix)
        shutil.rmtree(root, ignore_errors=True)
    assert_nothing_left(prefix)


def settle(what: str, checks: dict[str, Callable[[], tuple[bool, str]]], timeout: float = 20.0) -> None:
    """Run every check at once, re-run only the failing ones until ``timeout`` (rules take time
    to be programmed), then fail once listing every check still wrong with what it saw."""
    pending = dict(checks)
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while pending:
        names = list(pending)
        results = parallel([_guarded(pending[n]) for n in names])
        for name, (ok, detail) in zip(names, results, strict=True):
            seen[name] = detail
            if ok:
                del pending[name]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    wrong = "\n".join(f"  {n}: {seen[n]}" for n in pending)
    assert not pending, (
        f"{what}: {len(pending)} of {len(checks)} checks still wrong after {timeout:.0f}s\n{wrong}"
    )


def _guarded(check: Callable[[], tuple[bool, str]]) -> Callable[[], tuple[bool, str]]:
    def call() -> tuple[bool, str]:
        try:
            return check()
        except Exception as exc:  # a probe we could not make is a wrong cell, shown with its error
            return False, f"probe error: {exc}"

    return call
