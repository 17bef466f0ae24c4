"""Probe verdicts from agnhost's and the API server's answers, and the Prober over real HTTP.

The parsing cases use the exact shapes agnhost netexec produces (reference §4): /shell answers 200
with the command's combined output and ``"error": "exit status 1"``; /dial answers 200 even when
every try failed and keeps "responses" only when the last try answered. The Prober runs against a
fake API server that answers the pods/proxy URLs, through the official client.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from fakekube import FakeKube, serve

from clusters.capabilities import Capability
from clusters.handle import Cluster, NoNodeChannel
from clusters.recipes import load_recipe
from suites.probe import (
    ExecChannel,
    PodRef,
    ProbeJob,
    ProbeKind,
    Prober,
    classify_connect,
    converge,
    parse_dial,
    parse_shell,
    proxy_path,
    repro_command,
)
from suites.verdict import ProbeResult, Verdict

SRC = PodRef("x-r1", "a", "netexec")


def shell_body(output: str = "", error: str = "") -> bytes:
    doc = {}
    if output:
        doc["output"] = output
    if error:
        doc["error"] = error
    return json.dumps(doc).encode()


# ---- /shell + agnhost connect ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "verdict"),
    [
        ("TIMEOUT\n", Verdict.TIMEOUT),
        ("REFUSED\n", Verdict.REFUSED),
        ("TIMEOUT: read udp 10.0.0.1:40000->10.0.0.2:81: i/o timeout\n", Verdict.TIMEOUT),
        ("REFUSED: read udp 10.0.0.1:40000->10.0.0.2:81: read: connection refused\n", Verdict.REFUSED),
        ("DNS: lookup s-x-b on 10.96.0.10:53: no such host\n", Verdict.DNS_ERROR),
        ("OTHER: dial tcp 10.0.0.2:80: connect: no route to host\n", Verdict.UNREACHABLE),
        ("UNKNOWN: read udp 10.0.0.1:4->10.0.0.2:81: read: no route to host\n", Verdict.UNREACHABLE),
        ("UNKNOWN: address 10.0.0.2: missing port in address\n", Verdict.PROBE_ERROR),
        ("sh: /agnhost: not found\n", Verdict.PROBE_ERROR),
    ],
)
def test_shell_connect_failures_by_stderr_prefix(output: str, verdict: Verdict) -> None:
    got, detail, out = parse_shell(200, shell_body(output, "exit status 1"))
    assert got is verdict
    assert output.strip().splitlines()[0] in detail
    assert out == ""


def test_shell_without_error_is_connected() -> None:
    assert parse_shell(200, shell_body())[0] is Verdict.CONNECTED
    assert parse_shell(200, b'{"output":""}')[0] is Verdict.CONNECTED


def test_shell_killed_command_is_a_probe_error_naming_the_go_error() -> None:
    verdict, detail, _ = parse_shell(200, shell_body("", "signal: killed"))
    assert verdict is Verdict.PROBE_ERROR and "signal: killed" in detail


def test_shell_answer_that_is_not_json_is_a_probe_error() -> None:
    assert parse_shell(200, b"<html>nope</html>")[0] is Verdict.PROBE_ERROR


def test_api_server_proxy_errors_are_probe_errors_with_its_message() -> None:
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": 503,
        "reason": "ServiceUnavailable",
        "message": "error trying to reach service: dial tcp 10.0.0.1:8080: i/o timeout",
    }
    verdict, detail, _ = parse_shell(503, json.dumps(status).encode())
    assert verdict is Verdict.PROBE_ERROR
    assert (
        detail
        == "API server answered 503: error trying to reach service: dial tcp 10.0.0.1:8080: i/o timeout"
    )
    assert parse_dial(503, json.dumps(status).encode())[0] is Verdict.PROBE_ERROR
    assert parse_shell(404, b"404 page not found")[1] == "API server answered 404: 404 page not found"


def test_classify_connect_uses_only_the_first_line() -> None:
    assert classify_connect("\nTIMEOUT\nsomething else")[0] is Verdict.TIMEOUT


# ---- /dial -----------------------------------------------------------------------------------


def test_dial_success_returns_the_responder() -> None:
    verdict, _, who = parse_dial(200, b'{"responses":["a"]}')
    assert (verdict, who) == (Verdict.CONNECTED, "a")


def test_dial_all_failed_is_200_with_errors_and_not_connected() -> None:
    body = json.dumps(
        {"errors": ['Get "http://10.0.0.2:80/hostname": dial tcp 10.0.0.2:80: connect: connection refused']}
    )
    verdict, detail, who = parse_dial(200, body.encode())
    assert verdict is Verdict.REFUSED and "connection refused" in detail and who == ""


def test_dial_last_try_failed_drops_earlier_successes() -> None:
    # tries=2, the first answered: netexec omits "responses" because the LAST try failed
    body = {
        "errors": ["reading from udp connection failed. err:'read udp 10.0.0.1:5->10.0.0.2:81: i/o timeout'"]
    }
    assert parse_dial(200, json.dumps(body).encode())[0] is Verdict.TIMEOUT


def test_dial_last_try_answered_is_connected_even_with_earlier_errors() -> None:
    body = {"responses": ["b"], "errors": ['Get "http://10.0.0.2:80/hostname": context deadline exceeded']}
    assert parse_dial(200, json.dumps(body).encode())[:1] == (Verdict.CONNECTED,)


def test_dial_http_timeout_wording() -> None:
    err = (
        'Get "http://10.0.0.2:80/hostname": context deadline exceeded '
        "(Client.Timeout exceeded while awaiting headers)"
    )
    assert parse_dial(200, json.dumps({"errors": [err]}).encode())[0] is Verdict.TIMEOUT


def test_dial_400_unresolvable_host_is_dns_error_other_400_is_probe_error() -> None:
    dns = b"host and/or port param are invalid. lookup nosuch on 10.96.0.10:53: no such host\n"
    assert parse_dial(400, dns)[0] is Verdict.DNS_ERROR
    assert parse_dial(400, b"request parameter not specified. <nil>\n")[0] is Verdict.PROBE_ERROR


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        ("udp dial failed. err:dial udp 10.0.0.2:81: connect: network is unreachable", Verdict.UNREACHABLE),
        (
            "reading from udp connection failed. err:'read udp 1.2.3.4:5->10.0.0.2:81: read: "
            "connection refused'",
            Verdict.REFUSED,
        ),
        ('Get "http://10.0.0.2:80/hostname": EOF', Verdict.HTTP_ERROR),
        (
            'Get "http://10.0.0.2:80/hostname": dial tcp 10.0.0.2:80: connect: no route to host',
            Verdict.UNREACHABLE,
        ),
    ],
)
def test_dial_error_wordings(error: str, verdict: Verdict) -> None:
    assert parse_dial(200, json.dumps({"errors": [error]}).encode())[0] is verdict


def test_dial_with_neither_key_is_a_probe_error() -> None:
    assert parse_dial(200, b"{}")[0] is Verdict.PROBE_ERROR


# ---- commands and paths ----------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return make_cluster(tmp_path / "kubeconfig")


def make_cluster(kubeconfig: Path) -> Cluster:
    return Cluster(
        name="t",
        provider="existing",
        kubeconfig=kubeconfig,
        context=None,
        cni=load_recipe("kindnet"),
        capabilities=frozenset({Capability.NETWORK_POLICY}),
        node_channel=NoNodeChannel("none"),
    )


def test_repro_command_repeats_the_connect_probe_through_the_proxy(cluster: Cluster) -> None:
    job = ProbeJob(SRC, "10.0.1.5", 81, "UDP", timeout=1)
    argv = shlex.split(repro_command(cluster, job))
    assert argv[:-1] == ["kubectl", f"--kubeconfig={cluster.kubeconfig}", "get", "--raw"]
    assert argv[-1] == proxy_path(job)
    assert urllib.parse.unquote(argv[-1]).endswith(
        "/pods/a:8080/proxy/shell?cmd=/agnhost connect 10.0.1.5:81 --timeout=1s --protocol=udp"
    )


def test_repro_command_for_dial_repeats_the_proxy_request(cluster: Cluster) -> None:
    job = ProbeJob(SRC, "10.0.1.5", 80, kind=ProbeKind.DIAL)
    argv = shlex.split(repro_command(cluster, job))
    assert argv[-3:-1] == ["get", "--raw"]
    assert argv[-1] == proxy_path(job)


def test_proxy_paths_encode_the_command_and_dial_query() -> None:
    shell = proxy_path(ProbeJob(SRC, "fd00::5", 80, timeout=1.5))  # shell-quoted: [] are glob characters
    assert shell == (
        "/api/v1/namespaces/x-r1/pods/a:8080/proxy/shell?cmd=%2Fagnhost%20connect%20"
        "%27%5Bfd00%3A%3A5%5D%3A80%27%20--timeout%3D1.5s%20--protocol%3Dtcp"
    )
    dial = proxy_path(ProbeJob(SRC, "10.0.0.2", 81, "UDP", ProbeKind.DIAL))
    assert dial.endswith("/dial?host=10.0.0.2&port=81&request=hostname&protocol=udp&tries=1")


def test_probe_jobs_reject_no_timeout_and_unknown_protocols() -> None:
    with pytest.raises(ValueError, match="timeout"):
        ProbeJob(SRC, "10.0.0.2", 80, timeout=0)
    with pytest.raises(ValueError, match="ICMP"):
        ProbeJob(SRC, "10.0.0.2", 80, "ICMP")


# ---- the Prober over HTTP --------------------------------------------------------------------


@dataclass
class ProxyFake(FakeKube):
    """FakeKube plus pods/proxy: answers /shell and /dial by target, after ``delay`` seconds."""

    delay: float = 0.0
    shell: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    """target ("ip:port") -> (status, body); unknown targets connect."""
    in_flight: int = 0
    max_in_flight: int = 0
    seen: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}/proxy/{rest:.*}", self._proxy)
        return app

    async def _proxy(self, request: web.Request) -> web.Response:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            name = request.match_info["name"]
            if not name.endswith(":8080"):
                return web.Response(status=400, text=f"bad target {name}")
            if request.match_info["rest"] == "dial":
                self.seen.append(f"dial {request.query['host']}:{request.query['port']}")
                return web.json_response({"responses": [request.query["host"]]})
            cmd = shlex.split(request.query["cmd"])
            self.seen.append(cmd[2])
            status, body = self.shell.get(cmd[2], (200, shell_body()))
            return web.Response(status=status, body=body, content_type="application/json")
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture
def fake() -> Iterator[ProxyFake]:
    with serve(ProxyFake()) as running:
        assert isinstance(running, ProxyFake)
        yield running


@pytest.fixture
def proxied(fake: ProxyFake, tmp_path: Path) -> Cluster:
    return make_cluster(fake.write_kubeconfig(tmp_path / "kubeconfig"))


def test_prober_maps_answers_to_verdicts(fake: ProxyFake, proxied: Cluster) -> None:
    fake.shell["10.0.0.3:80"] = (200, shell_body("REFUSED\n", "exit status 1"))
    status = {
        "kind": "Status",
        "code": 503,
        "message": "error trying to reach service: dial tcp 10.0.0.9:8080: i/o timeout",
    }
    fake.shell["10.0.0.4:80"] = (503, json.dumps(status).encode())
    jobs = {n: ProbeJob(SRC, f"10.0.0.{n}", 80) for n in (2, 3, 4)}
    jobs[5] = ProbeJob(SRC, "10.0.0.5", 80, kind=ProbeKind.DIAL)
    with Prober.through_proxy(proxied) as prober:
        results = prober.probe_all(jobs)
    assert {k: r.verdict for k, r in results.items()} == {
        2: Verdict.CONNECTED,
        3: Verdict.REFUSED,
        4: Verdict.PROBE_ERROR,
        5: Verdict.CONNECTED,
    }
    assert "error trying to reach service" in results[4].detail and "/proxy/shell" in results[4].detail
    assert results[5].output == "10.0.0.5"
    assert urllib.parse.unquote(results[3].command).endswith(
        "/agnhost connect 10.0.0.3:80 --timeout=1s --protocol=tcp'"
    )


def test_prober_runs_a_step_concurrently(fake: ProxyFake, proxied: Cluster) -> None:
    fake.delay = 0.3
    jobs = {n: ProbeJob(SRC, f"10.0.1.{n}", 80) for n in range(12)}
    with Prober.through_proxy(proxied, max_workers=12) as prober:
        results = prober.probe_all(jobs)
    assert all(r.verdict is Verdict.CONNECTED for r in results.values())
    assert sorted(fake.seen) == sorted(f"10.0.1.{n}:80" for n in range(12))
    assert fake.max_in_flight > 1


def test_prober_with_one_worker_never_overlaps(fake: ProxyFake, proxied: Cluster) -> None:
    fake.delay = 0.05
    with Prober.through_proxy(proxied, max_workers=1) as prober:
        prober.probe_all({n: ProbeJob(SRC, f"10.0.2.{n}", 80) for n in range(3)})
    assert fake.max_in_flight == 1


def test_unreachable_api_server_is_a_probe_error(tmp_path: Path) -> None:
    with serve(FakeKube()) as gone:
        kubeconfig = gone.write_kubeconfig(tmp_path / "kubeconfig")
    cluster = make_cluster(kubeconfig)  # the server has stopped: connections are refused
    with Prober.through_proxy(cluster) as prober:
        result = prober.probe(ProbeJob(SRC, "10.0.0.2", 80))
    assert result.verdict is Verdict.PROBE_ERROR
    assert result.detail.startswith(
        "no answer from the API server for GET /api/v1/namespaces/x-r1/pods/a:8080"
    )


def test_prober_turns_a_crashing_channel_into_probe_errors() -> None:
    class Crashing:
        def run(self, job: ProbeJob) -> ProbeResult:
            raise RuntimeError("boom")

        def close(self) -> None:
            pass

    result = Prober(Crashing()).probe(ProbeJob(SRC, "10.0.0.2", 80))
    assert result.verdict is Verdict.PROBE_ERROR and "boom" in result.detail


# ---- convergence -----------------------------------------------------------------------------


@dataclass
class ScriptedChannel:
    """Each target's verdicts in order; the last one repeats. Records every probe."""

    script: dict[str, list[Verdict]]
    calls: list[str] = field(default_factory=list)

    def run(self, job: ProbeJob) -> ProbeResult:
        self.calls.append(job.host)
        seq = self.script[job.host]
        verdict = seq[min(self.calls.count(job.host) - 1, len(seq) - 1)]
        return ProbeResult(verdict, "", f"probe {job.host}", 0.0)

    def close(self) -> None:
        pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_converge_reprobes_only_wrong_cells_until_right() -> None:
    channel = ScriptedChannel(
        {
            "ok": [Verdict.TIMEOUT],
            "slow": [Verdict.CONNECTED, Verdict.CONNECTED, Verdict.TIMEOUT],
            "flaky": [Verdict.PROBE_ERROR, Verdict.TIMEOUT],
        }
    )
    jobs = {h: ProbeJob(SRC, h, 80) for h in channel.script}
    clock = FakeClock()
    outcome = converge(
        Prober(channel),
        jobs,
        lambda _k, r: r.reachable is False,
        timeout=10,
        interval=1,
        clock=clock,
        sleep=clock.sleep,
    )
    assert outcome.ok and outcome.wrong == ()
    assert outcome.rounds == 3
    assert outcome.history == (("slow", "flaky"), ("slow",))
    assert channel.calls.count("ok") == 1 and channel.calls.count("slow") == 3
    assert outcome.results["flaky"].verdict is Verdict.TIMEOUT


def test_converge_stops_at_the_deadline_and_reports_what_stayed_wrong() -> None:
    channel = ScriptedChannel({"never": [Verdict.CONNECTED], "fine": [Verdict.TIMEOUT]})
    clock = FakeClock()
    outcome = converge(
        Prober(channel),
        {h: ProbeJob(SRC, h, 80) for h in channel.script},
        lambda _k, r: r.verdict is Verdict.TIMEOUT,
        timeout=5,
        interval=1,
        clock=clock,
        sleep=clock.sleep,
    )
    assert outcome.wrong == ("never",)
    assert not outcome.ok
    assert clock.now <= 5
    assert outcome.rounds == 5  # the first probe, then a retry each second while one more fits


# ---- the exec channel ------------------------------------------------------------------------

FAKE_KUBECTL = """#!{python}
import sys
target = sys.argv[sys.argv.index("connect") + 1]
answers = {{"10.0.0.2:80": (0, ""), "10.0.0.3:80": (1, "REFUSED\\ncommand terminated with exit code 1\\n"),
           "10.0.0.4:80": (1, 'Error from server (BadRequest): the lab API does not support pods/exec\\n')}}
code, err = answers[target]
sys.stderr.write(err)
sys.exit(code)
"""


def test_exec_channel_reads_agnhost_stderr_and_kubectl_errors(
    tmp_path: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    kubectl = bindir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable), encoding="utf-8")
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    prober = Prober(ExecChannel(cluster))
    results = prober.probe_all({n: ProbeJob(SRC, f"10.0.0.{n}", 80) for n in (2, 3, 4)})
    assert [results[n].verdict for n in (2, 3, 4)] == [
        Verdict.CONNECTED,
        Verdict.REFUSED,
        Verdict.PROBE_ERROR,
    ]
    assert "does not support pods/exec" in results[4].detail
    dial = prober.probe(ProbeJob(SRC, "10.0.0.2", 80, kind=ProbeKind.DIAL))
    assert dial.verdict is Verdict.PROBE_ERROR


def test_verdict_reachability() -> None:
    assert Verdict.CONNECTED.reachable is True
    assert Verdict.HTTP_ERROR.reachable is True
    assert Verdict.TIMEOUT.reachable is False and Verdict.UNREACHABLE.reachable is False
    assert Verdict.PROBE_ERROR.reachable is None and Verdict.DNS_ERROR.reachable is None
    summary = ProbeResult(Verdict.TIMEOUT, "TIMEOUT", "kubectl exec …", 1.0).summary()
    assert summary == "timeout (TIMEOUT) --- run 'kubectl exec …'"


# ---- end to end through the lab's API server and the lab's agnhost netexec (all on 127.0.0.1) ----


class LoopbackPodIO:
    """Connects every pod/port to one netexec on 127.0.0.1: the proxy leg without any pod network."""

    def __init__(self, port: int) -> None:
        self.port = port

    def log_path(self, namespace: str, pod: str, container: str) -> Path | None:
        return None

    async def open_connection(self, pod: Any, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def netexec_port() -> Iterator[int]:
    port = _free_port()
    argv = [
        sys.executable,
        "-m",
        "clusters.lab.programs.agnhost",
        "netexec",
        f"--http-port={port}",
        "--udp-port=-1",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("lab netexec did not start listening") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def test_end_to_end_through_the_lab_api_proxy(netexec_port: int, tmp_path: Path) -> None:
    import kubernetes
    import yaml

    from clusters.lab.api import start_api_server

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    open_port, closed_port = listener.getsockname()[1], _free_port()
    with listener, start_api_server(pod_io=LoopbackPodIO(netexec_port)) as api:
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "lab",
            "clusters": [{"name": "lab", "cluster": {"server": api.url}}],
            "users": [{"name": "lab", "user": {"token": "t"}}],
            "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}],
        }
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(doc), encoding="utf-8")
        cluster = make_cluster(kubeconfig)
        core = kubernetes.client.CoreV1Api(cluster.api_client)
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x-r1"}})
        core.create_namespaced_pod(
            "x-r1",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "a"},
                "spec": {"containers": [{"name": "netexec", "image": "agnhost"}]},
            },
        )
        jobs = {
            "open": ProbeJob(SRC, "127.0.0.1", open_port),
            "closed": ProbeJob(SRC, "127.0.0.1", closed_port),
            "dial-closed": ProbeJob(SRC, "127.0.0.1", closed_port, kind=ProbeKind.DIAL),
            "no-pod": ProbeJob(PodRef("x-r1", "nosuch", "netexec"), "127.0.0.1", open_port),
        }
        with Prober.through_proxy(cluster) as prober:
            results = prober.probe_all(jobs)
    assert results["open"].verdict is Verdict.CONNECTED
    assert results["closed"].verdict is Verdict.REFUSED
    assert results["dial-closed"].verdict is Verdict.REFUSED
    assert results["no-pod"].verdict is Verdict.PROBE_ERROR
    assert "404" in results["no-pod"].detail
