"""The lab ingress controller as a process: a real nginx on loopback, fed by a lab API server.

No network namespace: the controller, nginx and two agnhost ``netexec`` backends (answering
their ``HOSTNAME`` for every path through ``--http-override=/hostname``) listen on free
127.0.0.1 ports; Services and EndpointSlices point at those backends. Requests carry a Host
header (HTTP) or SNI (HTTPS). Everything started here is stopped in ``finally``.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from clusters.lab.api import RunningApiServer, start_api_server, write_kubeconfig
from clusters.lab.controllers.client import MERGE_PATCH, Kube
from clusters.lab.programs.ingress.nginx import active_workers, alive, children_of
from clusters.proc import run
from tests.lab.coredns_support import REPO, free_port, poll

pytestmark = pytest.mark.skipif(
    not (os.path.exists("/usr/sbin/nginx") and shutil.which("openssl")),
    reason="needs /usr/sbin/nginx and openssl",
)

NS = "ingtest"
PUBLISH_NS = "ingress-nginx"
LB_IP = "172.18.255.200"
MODULE = "clusters.lab.programs.ingress"
JSON = dict[str, Any]


class Proc:
    """A child process whose output is appended to a file (O_APPEND: nginx's access log, opened
    separately on /dev/stdout, and our own writes never overwrite each other)."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._fh = log.open("ab")
        self.proc = subprocess.Popen(
            argv, cwd=REPO, stdout=self._fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._fh.close()
        return self.proc.returncode


@dataclass
class Env:
    kube: Kube
    kubeconfig: Path
    tmp: Path
    backends: dict[str, int]
    http: int = 0
    https: int = 0
    healthz: int = 0
    controller: Proc | None = None

    def ctl(self) -> Proc:
        assert self.controller is not None
        return self.controller


# -- objects ------------------------------------------------------------------------------------


def create(kube: Kube, path: str, obj: JSON) -> JSON:
    return kube.create(path, obj)


def backend_objects(kube: Kube, name: str, port: int, *, ready: bool = True) -> None:
    create(
        kube,
        f"/api/v1/namespaces/{NS}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"ports": [{"port": 80, "targetPort": port}]},
        },
    )
    create(
        kube,
        f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices",
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-abcde", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}],
        },
    )


def path_rule(path: str, path_type: str, svc: str) -> JSON:
    return {
        "path": path,
        "pathType": path_type,
        "backend": {"service": {"name": svc, "port": {"number": 80}}},
    }


def make_ingress(kube: Kube, name: str, rules: list[JSON], **spec: Any) -> JSON:
    annotations = spec.pop("annotations", {})
    body = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"ingressClassName": "nginx", "rules": rules, **spec},
    }
    return create(kube, f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses", body)


def host_rule(host: str, *paths: JSON) -> JSON:
    return {"host": host, "http": {"paths": list(paths)}}


def tls_secret(kube: Kube, name: str, crt: bytes, key: bytes) -> None:
    create(
        kube,
        f"/api/v1/namespaces/{NS}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()},
        },
    )


def make_cert(tmp: Path, cn: str, san: str, *, expired: bool = False) -> tuple[bytes, bytes]:
    """A self-signed EC certificate; ``expired`` uses ``x509 -days -1`` (notAfter = yesterday):
    OpenSSL 3.0 has no ``-not_after`` (3.4+), and a negative ``-days`` is accepted."""
    key, csr, crt, ext = (tmp / f"{cn}.{s}" for s in ("key", "csr", "crt", "ext"))
    ext.write_text(f"subjectAltName=DNS:{san}\n")
    run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}"],
        timeout=30,
    )  # fmt: skip
    run(
        ["openssl", "x509", "-req", "-in", str(csr), "-signkey", str(key), "-days", "-1" if expired else "30",
         "-extfile", str(ext), "-out", str(crt)],
        timeout=30,
    )  # fmt: skip
    return crt.read_bytes(), key.read_bytes()


# -- clients --------------------------------------------------------------------------------------


def get(port: int, host: str, path: str) -> tuple[int, str, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace"), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def get_tls(port: int, host: str, path: str) -> tuple[int, str, bytes]:
    """GET over TLS with SNI ``host``, no verification; returns status, body, the served cert (DER)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True) or b""
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    return int(head.split()[1]), body, der


def subject(der: bytes) -> dict[str, str]:
    text = run(
        ["openssl", "x509", "-inform", "DER", "-noout", "-subject", "-nameopt", "multiline"],
        timeout=30,
        stdin=der,
    ).stdout
    return dict(re.findall(r"^\s+(\w+)\s+=\s(.*)$", text, re.M))


def routed(env: Env, host: str, path: str, want: tuple[int, str]) -> Callable[[], bool]:
    def check() -> bool:
        status, body, _ = get(env.http, host, path)
        return (status, body.strip()) == want

    return check


def settled(ctl: Proc) -> bool:
    """nginx runs exactly one accepting worker: no reload is in its two-generation window."""
    masters = [p for p in children_of(ctl.proc.pid) if _comm(p) == "nginx"]
    return len(masters) == 1 and len(active_workers(masters[0])) == 1


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def wait_for(env: Env, host: str, path: str, want: tuple[int, str], what: str = "") -> None:
    """Poll until ``host``+``path`` answers ``want`` from a settled nginx (then it stays so)."""
    poll(routed(env, host, path, want), 60, what or f"{host}{path} → {want}")
    poll(lambda: settled(env.ctl()), 30, "nginx reload settled")
    assert routed(env, host, path, want)(), f"{host}{path} stopped answering {want}"


def wait_until(env: Env, check: Callable[[], bool], what: str) -> None:
    poll(check, 60, what)
    poll(lambda: settled(env.ctl()), 30, "nginx reload settled")


# -- fixtures -------------------------------------------------------------------------------------


def start_controller(env: Env, name: str) -> Proc:
    env.http, env.https, env.healthz = free_port(), free_port(), free_port()
    argv = [
        sys.executable, "-m", MODULE,
        "--ingress-class=nginx", "--controller-class=k8s.io/ingress-nginx",
        "--watch-ingress-without-class=true", f"--publish-service={PUBLISH_NS}/ingress-nginx-controller",
        "--election-id=ingress-nginx-leader", "--validating-webhook=:8443",
        "--http-port", str(env.http), "--https-port", str(env.https),
        f"--healthz-port={env.healthz}", "--healthz-host=127.0.0.1", "--bind-address=127.0.0.1",
        f"--kubeconfig={env.kubeconfig}", f"--conf-dir={env.tmp / name}",
    ]  # fmt: skip
    proc = Proc(argv, env.tmp / f"{name}.log")
    try:
        poll(lambda: healthz(env.healthz) == 200 or proc.proc.poll() is not None, 60, "controller healthz")
        assert proc.proc.poll() is None, proc.output()
    except BaseException:
        proc.stop()
        raise
    return proc


def healthz(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("ingress")
    api: RunningApiServer = start_api_server(port=0)
    procs: list[Proc] = []
    client: Any = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=api.url))
    try:
        kube = Kube(client)
        for ns in (NS, PUBLISH_NS):
            create(
                kube,
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            )
        create(
            kube,
            "/apis/networking.k8s.io/v1/ingressclasses",
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "IngressClass",
                "metadata": {"name": "nginx"},
                "spec": {"controller": "k8s.io/ingress-nginx"},
            },
        )
        backends: dict[str, int] = {}
        for name in ("one", "two"):
            port = free_port()
            argv = [sys.executable, "-m", "clusters.lab.programs.agnhost", "netexec",
                    f"--http-port={port}", "--udp-port=-1", "--http-override=/hostname"]  # fmt: skip
            procs.append(Proc(argv, tmp / f"backend-{name}.log", env={"HOSTNAME": name}))
            backends[name] = port
        for name, port in backends.items():
            poll(lambda p=port, n=name: get(p, "x", "/")[1] == n, 60, f"backend {name}")  # type: ignore[misc]
            backend_objects(kube, name, port)
        backend_objects(kube, "empty", free_port(), ready=False)
        create(
            kube,
            f"/api/v1/namespaces/{PUBLISH_NS}/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "ingress-nginx-controller"},
                "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "targetPort": 80}]},
            },
        )
        kube.patch(
            f"/api/v1/namespaces/{PUBLISH_NS}/services/ingress-nginx-controller/status",
            {"status": {"loadBalancer": {"ingress": [{"ip": LB_IP, "ipMode": "VIP"}]}}},
            MERGE_PATCH,
        )
        e = Env(kube, write_kubeconfig(tmp / "kubeconfig", api.url), tmp, backends)
        e.controller = start_controller(e, "main")
        procs.append(e.controller)
        yield e
    finally:
        for p in reversed(procs):
            p.stop()
        client.close()
        api.stop()


# -- routing --------------------------------------------------------------------------------------


def test_host_and_path_routing_prefix_vs_exact(env: Env) -> None:
    make_ingress(
        env.kube,
        "routes",
        [
            host_rule("a.test", path_rule("/foo", "Prefix", "one"), path_rule("/exact", "Exact", "two")),
            host_rule("b.test", path_rule("/", "Prefix", "two")),
        ],
    )
    wait_for(env, "a.test", "/foo", (200, "one"))
    assert get(env.http, "a.test", "/foo/bar")[:2] == (200, "one")
    assert get(env.http, "a.test", "/foobar")[:2] == (404, "default backend - 404")
    assert get(env.http, "a.test", "/exact")[:2] == (200, "two")
    assert get(env.http, "a.test", "/exact/more")[:2] == (404, "default backend - 404")
    assert get(env.http, "b.test", "/anything/at/all")[:2] == (200, "two")


def test_unknown_host_gets_the_default_backend_404(env: Env) -> None:
    status, body, _ = get(env.http, "nobody.test", "/foo")
    assert (status, body) == (404, "default backend - 404")


def test_missing_service_and_service_without_endpoints_answer_503(env: Env) -> None:
    make_ingress(
        env.kube,
        "broken",
        [
            host_rule(
                "broken.test", path_rule("/ghost", "Prefix", "ghost"), path_rule("/empty", "Prefix", "empty")
            )
        ],
    )
    wait_until(env, lambda: get(env.http, "broken.test", "/ghost")[0] == 503, "503 for a missing service")
    status, body, _ = get(env.http, "broken.test", "/empty/x")
    assert status == 503 and "503 Service Temporarily Unavailable" in body
    out = env.ctl().output()
    assert (
        f'Error obtaining Endpoints for Service "{NS}/ghost": '
        f'no object matching key "{NS}/ghost" in local store' in out
    )
    assert re.search(
        rf'^W\d{{4}} [\d:.]+ +\d+ \S+\] Service "{NS}/empty" does not have any active Endpoint\.$', out, re.M
    )


def test_ingress_change_reloads_nginx(env: Env) -> None:
    make_ingress(env.kube, "swap", [host_rule("swap.test", path_rule("/", "Prefix", "one"))])
    wait_for(env, "swap.test", "/", (200, "one"))
    reloads = env.ctl().output().count("Backend successfully reloaded")
    path = f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses/swap"
    patch = {"spec": {"rules": [host_rule("swap.test", path_rule("/", "Prefix", "two"))]}}
    env.kube.patch(path, patch, MERGE_PATCH)
    wait_for(env, "swap.test", "/", (200, "two"), "the patched backend")
    poll(
        lambda: env.ctl().output().count("Backend successfully reloaded") > reloads, 60, "the reload log line"
    )


def test_ingress_of_another_class_is_ignored(env: Env) -> None:
    make_ingress(
        env.kube,
        "foreign",
        [host_rule("foreign.test", path_rule("/", "Prefix", "one"))],
        ingressClassName="other",
    )
    make_ingress(env.kube, "marker", [host_rule("marker.test", path_rule("/", "Prefix", "one"))])
    wait_for(env, "marker.test", "/", (200, "one"))  # created after: synced by now
    assert get(env.http, "foreign.test", "/")[:2] == (404, "default backend - 404")
    assert (
        '"Ignoring ingress because of error while validating ingress class" '
        f'ingress="{NS}/foreign" error="ingress class \\"other\\" is not handled by k8s.io/ingress-nginx"'
    ) in env.ctl().output()


# -- TLS ------------------------------------------------------------------------------------------


def test_https_serves_the_secret_certificate_and_http_redirects_308(env: Env) -> None:
    crt, key = make_cert(env.tmp, "secure.test", "secure.test")
    tls_secret(env.kube, "secure-tls", crt, key)
    make_ingress(
        env.kube,
        "secure",
        [host_rule("secure.test", path_rule("/", "Prefix", "one"))],
        tls=[{"hosts": ["secure.test"], "secretName": "secure-tls"}],
    )
    wait_until(
        env,
        lambda: subject(get_tls(env.https, "secure.test", "/")[2]).get("commonName") == "secure.test",
        "served cert",
    )
    status, body, _ = get_tls(env.https, "secure.test", "/hostname")
    assert (status, body) == (200, "one")
    status, _, headers = get(env.http, "secure.test", "/some/path?q=1")
    assert status == 308
    assert headers["location"] == f"https://secure.test:{env.https}/some/path?q=1"


def test_ssl_redirect_annotation_false_keeps_plain_http(env: Env) -> None:
    crt, key = make_cert(env.tmp, "plain.test", "plain.test")
    tls_secret(env.kube, "plain-tls", crt, key)
    make_ingress(
        env.kube,
        "plain",
        [host_rule("plain.test", path_rule("/", "Prefix", "two"))],
        tls=[{"hosts": ["plain.test"], "secretName": "plain-tls"}],
        annotations={"nginx.ingress.kubernetes.io/ssl-redirect": "false"},
    )
    wait_for(env, "plain.test", "/", (200, "two"))


def test_expired_certificate_is_served_and_logged(env: Env) -> None:
    crt, key = make_cert(env.tmp, "expired.test", "expired.test", expired=True)
    tls_secret(env.kube, "expired-tls", crt, key)
    make_ingress(
        env.kube,
        "expired",
        [host_rule("expired.test", path_rule("/", "Prefix", "one"))],
        tls=[{"hosts": ["expired.test"], "secretName": "expired-tls"}],
    )
    wait_until(
        env,
        lambda: subject(get_tls(env.https, "expired.test", "/")[2]).get("commonName") == "expired.test",
        "expired cert",
    )
    line = re.compile(
        r'SSL certificate for server "expired\.test" expired \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000 UTC\)$',
        re.M,
    )
    assert line.search(env.ctl().output())


def test_missing_secret_serves_the_fake_certificate(env: Env) -> None:
    make_ingress(
        env.kube,
        "nosecret",
        [host_rule("nosecret.test", path_rule("/", "Prefix", "one"))],
        tls=[{"hosts": ["nosecret.test"], "secretName": "nope"}],
    )
    wait_until(env, lambda: get(env.http, "nosecret.test", "/")[0] == 308, "TLS host configured")
    names = subject(get_tls(env.https, "nosecret.test", "/")[2])
    assert names == {
        "organizationName": "Acme Co",
        "commonName": "Kubernetes Ingress Controller Fake Certificate",
    }
    out = env.ctl().output()
    assert (
        f'Error getting SSL certificate "{NS}/nope": local SSL certificate {NS}/nope was not found. '
        "Using default certificate" in out
    )


def test_certificate_for_another_host_falls_back_to_the_fake(env: Env) -> None:
    crt, key = make_cert(env.tmp, "elsewhere.test", "elsewhere.test")
    tls_secret(env.kube, "wrong-tls", crt, key)
    make_ingress(
        env.kube,
        "wrong",
        [host_rule("wrong.test", path_rule("/", "Prefix", "one"))],
        tls=[{"hosts": ["wrong.test"], "secretName": "wrong-tls"}],
    )
    wait_until(env, lambda: get(env.http, "wrong.test", "/")[0] == 308, "TLS host configured")
    assert (
        subject(get_tls(env.https, "wrong.test", "/")[2])["commonName"]
        == "Kubernetes Ingress Controller Fake Certificate"
    )
    out = env.ctl().output()
    assert (
        f'SSL certificate "{NS}/wrong-tls" does not contain a Common Name or Subject Alternative Name '
        'for server "wrong.test": x509: certificate is valid for elsewhere.test, not wrong.test' in out
    )
    assert re.search(r"\] Using default certificate$", out, re.M)


# -- status, health, shutdown ---------------------------------------------------------------------


def test_status_is_published_from_the_publish_service(env: Env) -> None:
    make_ingress(env.kube, "status", [host_rule("status.test", path_rule("/", "Prefix", "one"))])
    path = f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses/status"

    def published() -> list[JSON]:
        got = env.kube.get(path)
        return list(((got.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])

    assert poll(published, 60, "ingress status") == [{"ip": LB_IP}]


def test_healthz_answers_200_and_other_paths_404(env: Env) -> None:
    assert healthz(env.healthz) == 200
    conn = http.client.HTTPConnection("127.0.0.1", env.healthz, timeout=2)
    try:
        conn.request("GET", "/metrics")
        assert conn.getresponse().status == 404
    finally:
        conn.close()


def test_sigterm_stops_nginx_and_clears_status(env: Env) -> None:
    """A second controller: its nginx master and workers must all be gone after SIGTERM."""
    first = (env.http, env.https, env.healthz)
    proc = start_controller(env, "second")
    try:
        make_ingress(env.kube, "lastone", [host_rule("lastone.test", path_rule("/", "Prefix", "one"))])
        poll(routed(env, "lastone.test", "/", (200, "one")), 60, "second controller routing")
        masters = [p for p in children_of(proc.proc.pid) if _comm(p) == "nginx"]
        assert len(masters) == 1
        workers = children_of(masters[0])
        assert workers
        assert proc.stop() == 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(p) for p in (*masters, *workers)):
            time.sleep(0.05)
        assert not [p for p in (*masters, *workers) if alive(p)]
        assert "Exiting with 0" in proc.output()
        assert "removing value from ingress status" in proc.output()
    finally:
        proc.stop()
        env.http, env.https, env.healthz = first
