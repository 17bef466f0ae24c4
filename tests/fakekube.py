"""A fake Kubernetes API server on 127.0.0.1 for the existing provider, the plugin and the sweep.

It answers over real HTTP (aiohttp in a thread), so the code under test goes through the
official client, its kubeconfig loading and its error handling; nothing is patched. It serves
only the few paths knetcheck reads or writes outside a cluster's workloads, keeps namespaces in
memory, and records every request so tests can assert what was created and deleted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key) != value.lstrip("="):
                return False
        elif term not in labels:
            return False
    return True


def _stamp(age: dt.timedelta = dt.timedelta(0)) -> str:
    return (dt.datetime.now(dt.UTC) - age).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeKube:
    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    daemonsets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    ingressclasses: list[dict[str, Any]] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)
    forbidden: set[str] = field(default_factory=set)
    """Paths answered with 403, as for credentials with narrow RBAC."""
    requests: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""

    # ---- state helpers used by tests
    def add_namespace(self, name: str, labels: dict[str, str] | None = None,
                      age: dt.timedelta = dt.timedelta(0)) -> None:
        self.namespaces[name] = {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels or {}, "creationTimestamp": _stamp(age)},
            "status": {"phase": "Active"},
        }

    def add_daemonset(self, namespace: str, name: str) -> None:
        self.daemonsets[(namespace, name)] = {
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": []}}},
        }

    def add_service(self, namespace: str, name: str, type_: str, lb_ip: str | None = None) -> None:
        status = {"loadBalancer": {"ingress": [{"ip": lb_ip}]} if lb_ip else {}}
        self.services.append({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": type_, "ports": [{"port": 80}]}, "status": status,
        })

    def deleted(self) -> list[str]:
        return [path.rsplit("/", 1)[1] for method, path in self.requests
                if method == "DELETE" and path.startswith("/api/v1/namespaces/")]

    def write_kubeconfig(self, path: Path, context: str = "fake") -> Path:
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "t"}}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "fake"}}],
        }
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        return path

    # ---- HTTP
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/version", self._version)
        app.router.add_get("/version/", self._version)
        app.router.add_get("/api/v1/namespaces", self._list_namespaces)
        app.router.add_post("/api/v1/namespaces", self._create_namespace)
        app.router.add_delete("/api/v1/namespaces/{name}", self._delete_namespace)
        app.router.add_get("/apis/apps/v1/namespaces/{ns}/daemonsets/{name}", self._get_daemonset)
        app.router.add_get("/apis/networking.k8s.io/v1/ingressclasses", self._list_ingressclasses)
        app.router.add_get("/api/v1/services", self._list_services)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.path in self.forbidden:
            return _status(403, "Forbidden", f"forbidden: {request.path}")
        response: web.StreamResponse = await handler(request)
        return response

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({
            "major": "1", "minor": "32", "gitVersion": "v1.32.0", "gitCommit": "0" * 40,
            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
            "compiler": "gc", "platform": "linux/amd64",
        })

    async def _list_namespaces(self, request: web.Request) -> web.Response:
        selector = request.query.get("labelSelector", "")
        items = [ns for ns in self.namespaces.values() if _matches(ns["metadata"]["labels"], selector)]
        return _list("NamespaceList", items)

    async def _create_namespace(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body["metadata"]["name"]
        if name in self.namespaces:
            return _status(409, "AlreadyExists", f'namespaces "{name}" already exists')
        self.add_namespace(name, body["metadata"].get("labels") or {})
        return web.json_response(self.namespaces[name], status=201)

    async def _delete_namespace(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        ns = self.namespaces.pop(name, None)
        if ns is None:
            return _status(404, "NotFound", f'namespaces "{name}" not found')
        return web.json_response({**ns, "status": {"phase": "Terminating"}})

    async def _get_daemonset(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        if key not in self.daemonsets:
            return _status(404, "NotFound", f'daemonsets.apps "{key[1]}" not found')
        return web.json_response(self.daemonsets[key])

    async def _list_ingressclasses(self, request: web.Request) -> web.Response:
        return _list("IngressClassList", self.ingressclasses, "networking.k8s.io/v1")

    async def _list_services(self, request: web.Request) -> web.Response:
        return _list("ServiceList", self.services)


def _list(kind: str, items: list[dict[str, Any]], api_version: str = "v1") -> web.Response:
    return web.json_response({"apiVersion": api_version, "kind": kind, "metadata": {}, "items": items})


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "message": message,
            "reason": reason, "code": code}
    return web.json_response(body, status=code)


@contextmanager
def serve(fake: FakeKube | None = None) -> Iterator[FakeKube]:
    """Serve ``fake`` on 127.0.0.1 (a free port) in a thread; stopped and joined on exit."""
    fake = fake or FakeKube()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(fake.app())
    started = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port = runner.addresses[0][1]
        fake.url = f"http://127.0.0.1:{port}"
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=main, name="fakekube", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("fake API server did not start")
    try:
        yield fake
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
