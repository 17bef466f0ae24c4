"""pods/log and pods|services/proxy through a fake PodIO (no namespaces needed)."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from clusters.lab.api import RunningApiServer, start_api_server, write_kubeconfig
from clusters.proc import run


class Echo(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        payload = json.dumps(
            {"method": self.command, "path": self.path, "body": body, "x-test": self.headers.get("X-Test")}
        ).encode()
        self.send_response(218 if self.path.startswith("/teapot") else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Backend", "echo")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echo_port() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


class FakePodIO:
    """Connections go to the echo server when the pod port is 8080; logs come from a directory."""

    def __init__(self, echo_port: int, logs: Path) -> None:
        self.echo_port = echo_port
        self.logs = logs
        self.dialed: list[tuple[str, int]] = []

    def log_path(self, namespace: str, pod: str, container: str) -> Path | None:
        path = self.logs / f"{namespace}_{pod}_{container}.log"
        return path if path.exists() else None

    async def open_connection(
        self, pod: Mapping[str, Any], port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.dialed.append((pod["metadata"]["name"], port))
        if port != 8080:
            raise ConnectionRefusedError(111, "Connection refused")
        return await asyncio.open_connection("127.0.0.1", self.echo_port)


@pytest.fixture
def fake_io(echo_port: int, tmp_path: Path) -> FakePodIO:
    return FakePodIO(echo_port, tmp_path)


@pytest.fixture
def server(fake_io: FakePodIO) -> Iterator[RunningApiServer]:
    srv = start_api_server(pod_io=fake_io)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: RunningApiServer) -> Iterator[kubernetes.client.ApiClient]:
    c = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=server.url))
    try:
        yield c
    finally:
        c.close()


def make_pod(v1: kubernetes.client.CoreV1Api, name: str = "web", ready: bool = True) -> None:
    v1.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "agnhost:2.53",
                        "ports": [{"name": "http", "containerPort": 8080}],
                    }
                ]
            },
        },
    )
    v1.patch_namespaced_pod_status(
        name,
        "default",
        {
            "status": {
                "phase": "Running",
                "podIP": "10.244.1.5",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            }
        },
    )


def test_pod_proxy_forwards_method_path_query_body(
    server: RunningApiServer, client: kubernetes.client.ApiClient, fake_io: FakePodIO
) -> None:
    v1 = kubernetes.client.CoreV1Api(client)
    make_pod(v1)
    req = urllib.request.Request(
        f"{server.url}/api/v1/namespaces/default/pods/web:8080/proxy/echo/x?msg=hi+there",
        data=b'{"k": "v"}',
        method="POST",
        headers={"Content-Type": "application/json", "X-Test": "yes"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        got = json.loads(resp.read())
    assert got == {"method": "POST", "path": "/echo/x?msg=hi+there", "body": '{"k": "v"}', "x-test": "yes"}
    assert fake_io.dialed == [("web", 8080)]


def test_pod_proxy_named_port_status_and_headers(
    server: RunningApiServer, client: kubernetes.client.ApiClient
) -> None:
    v1 = kubernetes.client.CoreV1Api(client)
    make_pod(v1)
    resp = client.call_api(
        *client.param_serialize("GET", "/api/v1/namespaces/default/pods/web:http/proxy/teapot")
    )
    resp.read()
    assert resp.status == 218
    assert resp.getheader("X-Backend") == "echo"
    assert json.loads(resp.data)["path"] == "/teapot"


def test_pod_proxy_refused_is_503_with_real_wording(client: kubernetes.client.ApiClient) -> None:
    v1 = kubernetes.client.CoreV1Api(client)
    make_pod(v1)
    with pytest.raises(ApiException) as err:
        v1.connect_get_namespaced_pod_proxy_with_path("web:9090", "default", "x")
    assert err.value.status == 503
    body = json.loads(err.value.body)
    assert body["reason"] == "ServiceUnavailable"
    assert (
        body["message"]
        == "error trying to reach service: dial tcp 10.244.1.5:9090: connect: connection refused"
    )


def test_service_proxy_reaches_a_ready_pod(
    server: RunningApiServer, client: kubernetes.client.ApiClient
) -> None:
    v1 = kubernetes.client.CoreV1Api(client)
    v1.create_namespaced_service(
        "default",
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )
    with pytest.raises(ApiException) as err:
        v1.connect_get_namespaced_service_proxy_with_path("web:80", "default", "x")
    assert err.value.status == 503
    assert json.loads(err.value.body)["message"] == 'no endpoints available for service "web"'
    make_pod(v1)
    with urllib.request.urlopen(
        f"{server.url}/api/v1/namespaces/default/services/web:80/proxy/hello", timeout=10
    ) as resp:
        assert json.loads(resp.read())["path"] == "/hello"


def test_logs_served_from_pod_io(client: kubernetes.client.ApiClient, fake_io: FakePodIO) -> None:
    v1 = kubernetes.client.CoreV1Api(client)
    make_pod(v1)
    (fake_io.logs / "default_web_web.log").write_text(
        "2026-01-01T00:00:00.000000000Z stdout F line one\n"
        "2026-01-01T00:00:01.000000000Z stderr F line two\n"
        "plain three\n"
    )
    assert v1.read_namespaced_pod_log("web", "default") == "line one\nline two\nplain three\n"
    assert v1.read_namespaced_pod_log("web", "default", tail_lines=1) == "plain three\n"
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_pod_log("web", "default", container="nope")
    assert err.value.status == 400
    assert json.loads(err.value.body)["message"] == "container nope is not valid for pod web"


def test_logs_missing_is_waiting_to_start(client: kubernetes.client.ApiClient) -> None:
    v1 = kubernetes.client.CoreV1Api(client)
    make_pod(v1, name="new")
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_pod_log("new", "default")
    assert err.value.status == 400
    assert (
        json.loads(err.value.body)["message"]
        == 'container "web" in pod "new" is waiting to start: ContainerCreating'
    )


def test_kubectl_logs(
    server: RunningApiServer, client: kubernetes.client.ApiClient, fake_io: FakePodIO, tmp_path: Path
) -> None:
    v1 = kubernetes.client.CoreV1Api(client)
    make_pod(v1)
    (fake_io.logs / "default_web_web.log").write_text("hello from the lab\n")
    kubeconfig = write_kubeconfig(tmp_path / "kc", server.url)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig)}
    out = run(["/usr/bin/kubectl", "logs", "web"], timeout=30, env=env)
    assert out.stdout == "hello from the lab\n"
    out = run(
        ["/usr/bin/kubectl", "get", "--raw", "/api/v1/namespaces/default/pods/web:8080/proxy/k?a=b"],
        timeout=30,
        env=env,
    )
    assert json.loads(out.stdout)["path"] == "/k?a=b"
