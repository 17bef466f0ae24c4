"""Readiness, liveness and startup probes, run from the node against the pod IP.

As on a real node, httpGet and tcpSocket probes come from the node's network namespace (a
NetworkPolicy that blocks the node blocks the probe, and a broken pod route fails it). The
socket is made by a :data:`Connector`; the kubelet's default creates it inside the node netns
(:func:`clusters.lab.netns.socket_in_netns`). Result wording follows the kubelet's prober so
``Unhealthy`` events read like a real cluster's.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clusters.lab.netns import socket_in_netns

log = logging.getLogger(__name__)

Connector = Callable[[str, int, float], socket.socket]
"""(ip, port, timeout) → a connected TCP socket, or OSError."""
Executor = Callable[[Sequence[str], float], tuple[int | None, str]]
"""(command, timeout) → (exit code or None on timeout, combined output)."""

KUBE_PROBE_AGENT = "kube-probe/1.36"


@dataclass(frozen=True)
class ProbeSpec:
    kind: str
    """``readiness``, ``liveness`` or ``startup``."""
    action: str
    """``httpGet``, ``tcpSocket``, ``exec`` or ``grpc``."""
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    port: int = 0
    path: str = "/"
    scheme: str = "HTTP"
    host: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    message: str = ""


def _port(value: Any, container: Mapping[str, Any]) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.isdigit():
        return int(text)
    for port in container.get("ports") or []:
        if port.get("name") == text:
            return int(port["containerPort"])
    raise ValueError(f"unknown named port {text!r}")


def parse_probe(kind: str, probe: Mapping[str, Any], container: Mapping[str, Any]) -> ProbeSpec:
    common: dict[str, Any] = {
        "kind": kind,
        "initial_delay": float(probe.get("initialDelaySeconds", 0)),
        "period": float(probe.get("periodSeconds", 10)),
        "timeout": float(probe.get("timeoutSeconds", 1)),
        "success_threshold": int(probe.get("successThreshold", 1)),
        "failure_threshold": int(probe.get("failureThreshold", 3)),
    }
    if "httpGet" in probe:
        h = probe["httpGet"]
        return ProbeSpec(
            action="httpGet",
            port=_port(h.get("port"), container),
            path=str(h.get("path") or "/"),
            scheme=str(h.get("scheme", "HTTP")),
            host=str(h.get("host", "")),
            headers=tuple((str(x["name"]), str(x["value"])) for x in h.get("httpHeaders") or []),
            **common,
        )
    if "tcpSocket" in probe:
        t = probe["tcpSocket"]
        return ProbeSpec(
            action="tcpSocket", port=_port(t.get("port"), container), host=str(t.get("host", "")), **common
        )
    if "exec" in probe:
        return ProbeSpec(
            action="exec", command=tuple(str(w) for w in probe["exec"].get("command") or []), **common
        )
    if "grpc" in probe:
        return ProbeSpec(action="grpc", port=int(probe["grpc"].get("port", 0)), **common)
    raise ValueError("probe has no handler (httpGet, tcpSocket, exec or grpc)")


def _dial_error(ip: str, port: int, err: OSError) -> str:
    if isinstance(err, TimeoutError | socket.timeout):
        return f"dial tcp {ip}:{port}: i/o timeout"
    text = {
        111: "connection refused",
        113: "no route to host",
        101: "network is unreachable",
    }.get(err.errno or 0, (err.strerror or str(err)).lower())
    return f"dial tcp {ip}:{port}: connect: {text}"


def http_probe(spec: ProbeSpec, ip: str, connect: Connector) -> ProbeResult:
    host = spec.host or ip
    url = f"{spec.scheme.lower()}://{host}:{spec.port}{spec.path}"
    if spec.scheme.upper() == "HTTPS":
        return ProbeResult(False, f'Get "{url}": the lab prober does not speak HTTPS')
    try:
        sock = connect(host, spec.port, spec.timeout)
    except OSError as err:
        if isinstance(err, TimeoutError | socket.timeout):
            return ProbeResult(
                False,
                f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)',
            )
        return ProbeResult(False, f'Get "{url}": {_dial_error(host, spec.port, err)}')
    conn = http.client.HTTPConnection(host, spec.port, timeout=spec.timeout)
    conn.sock = sock
    try:
        sock.settimeout(spec.timeout)
        headers = {"User-Agent": KUBE_PROBE_AGENT, "Accept": "*/*", "Connection": "close"}
        headers.update(dict(spec.headers))
        conn.request("GET", spec.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read(10 * 1024)
    except TimeoutError:
        return ProbeResult(
            False, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
        )
    except (OSError, http.client.HTTPException) as err:
        return ProbeResult(False, f'Get "{url}": {err}')
    finally:
        conn.close()
    if 200 <= resp.status < 400:
        return ProbeResult(True, body.decode(errors="replace"))
    return ProbeResult(False, f"HTTP probe failed with statuscode: {resp.status}")


def tcp_probe(spec: ProbeSpec, ip: str, connect: Connector) -> ProbeResult:
    host = spec.host or ip
    try:
        connect(host, spec.port, spec.timeout).close()
    except OSError as err:
        return ProbeResult(False, _dial_error(host, spec.port, err))
    return ProbeResult(True)


def exec_probe(spec: ProbeSpec, execute: Executor) -> ProbeResult:
    code, output = execute(spec.command, spec.timeout)
    if code is None:
        return ProbeResult(False, f"command {list(spec.command)!r} timed out")
    if code == 0:
        return ProbeResult(True, output)
    return ProbeResult(False, output.strip() or f"command {list(spec.command)!r} exited {code}")


def run_probe(spec: ProbeSpec, ip: str, connect: Connector, execute: Executor) -> ProbeResult:
    if spec.action == "httpGet":
        return http_probe(spec, ip, connect)
    if spec.action == "tcpSocket":
        return tcp_probe(spec, ip, connect)
    if spec.action == "exec":
        return exec_probe(spec, execute)
    return ProbeResult(False, "the lab prober does not support grpc probes")


def netns_connector(netns: str) -> Connector:
    """Connect from inside the lab namespace ``netns`` (the root namespace gets no route)."""

    def connect(ip: str, port: int, timeout: float) -> socket.socket:
        sock = socket_in_netns(netns)
        try:
            sock.settimeout(timeout)
            sock.connect((ip, port))
        except BaseException:
            sock.close()
            raise
        return sock

    return connect


def loopback_connector(ip: str, port: int, timeout: float) -> socket.socket:
    """Tests only: connect in the current namespace, refusing anything but 127.0.0.0/8."""
    if not ip.startswith("127."):
        raise OSError(101, f"loopback connector refuses {ip}")
    return socket.create_connection((ip, port), timeout=timeout)


class ProbeTracker:
    """Threshold logic of a prober worker: the result flips only after enough equal runs."""

    def __init__(self, spec: ProbeSpec) -> None:
        self.spec = spec
        # Readiness starts as failure, liveness as success, startup as unknown (prober worker.go).
        self.result: bool | None = {"readiness": False, "liveness": True}.get(spec.kind)
        self._last: bool | None = None
        self._run = 0

    def observe(self, ok: bool) -> bool:
        """Feed one probe outcome; returns True when the reported result changed."""
        if ok == self._last:
            self._run += 1
        else:
            self._last, self._run = ok, 1
        threshold = self.spec.success_threshold if ok else self.spec.failure_threshold
        if ok != self.result and self._run >= threshold:
            self.result = ok
            return True
        return False


ResultCallback = Callable[[ProbeSpec, bool], None]
FailureCallback = Callable[[ProbeSpec, ProbeResult], None]


class ProbeWorker:
    """One probe of one container instance, on its own thread until :meth:`stop`."""

    def __init__(
        self,
        spec: ProbeSpec,
        ip: str,
        connect: Connector,
        execute: Executor,
        on_change: ResultCallback,
        on_failure: FailureCallback,
        name: str,
    ) -> None:
        self.spec = spec
        self.tracker = ProbeTracker(spec)
        self._ip = ip
        self._connect = connect
        self._execute = execute
        self._on_change = on_change
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"probe-{name}", daemon=True)

    @property
    def result(self) -> bool:
        return bool(self.tracker.result)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        if self._stop.wait(self.spec.initial_delay):
            return
        while not self._stop.is_set():
            try:
                outcome = run_probe(self.spec, self._ip, self._connect, self._execute)
            except Exception as err:  # a prober bug must not kill the pod worker
                log.warning("%s probe errored: %s", self.spec.kind, err)
                outcome = ProbeResult(False, str(err))
            if self._stop.is_set():
                return
            if not outcome.ok:
                self._on_failure(self.spec, outcome)
            if self.tracker.observe(outcome.ok):
                self._on_change(self.spec, bool(self.tracker.result))
            if self.spec.kind == "startup" and self.tracker.result:
                return
            self._stop.wait(self.spec.period)
