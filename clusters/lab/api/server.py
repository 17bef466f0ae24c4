"""The lab's Kubernetes API server: HTTP routing over :mod:`rest`, on its own event loop.

``start_api_server`` runs it in a daemon thread so tests and the lab can use the real
``kubernetes`` client and ``kubectl`` against it; ``python -m clusters.lab.api`` runs it in the
foreground. Plain HTTP on loopback: there is nothing to authenticate in a single-user lab.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from clusters.lab.api import discovery, openapi, podio, resources, status, tables, watch
from clusters.lab.api.hooks import NoPodIO, PodIO
from clusters.lab.api.resources import ResourceType
from clusters.lab.api.rest import PODS, SERVICES, Api, DeleteOptions, WriteOptions, success_status
from clusters.lab.api.selectors import parse_fields, parse_labels
from clusters.lab.api.store import Obj, Store
from clusters.lab.layout import CLUSTER_NAME

log = logging.getLogger(__name__)

JSON = "application/json"


@dataclass(frozen=True)
class Target:
    """What a URL names: a resource type, maybe a namespace, name and subresource."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    rest: str  # path after proxy/


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def respond(obj: Any, code: int = 200, warnings: tuple[str, ...] = ()) -> web.Response:
    resp = web.Response(status=code, body=_dump(obj), content_type=JSON)
    for w in warnings:
        resp.headers.add("Warning", '299 - "' + w.replace('"', '\\"') + '"')
    return resp


def error_response(err: status.ApiError) -> web.Response:
    return respond(err.status(), err.code)


def parse_target(parts: list[str]) -> Target | None:
    """Parse the path after ``/api/v1`` or ``/apis/<g>/<v>`` (``parts[0:2]`` are group, version)."""
    group, version, segs = parts[0], parts[1], parts[2:]
    if segs and segs[0] == "watch":
        segs = segs[1:]
    if not segs:
        return None
    namespace: str | None = None
    if segs[0] == "namespaces" and len(segs) >= 3:
        cand = resources.find(group, version, segs[2])
        if cand is not None and cand.namespaced:
            namespace, segs = segs[1], segs[2:]
    rt = resources.find(group, version, segs[0])
    if rt is None:
        return None
    if rt.namespaced and namespace is None and len(segs) > 1:
        return None
    name = segs[1] if len(segs) > 1 else None
    sub = segs[2] if len(segs) > 2 else None
    rest = "/".join(segs[3:])
    if sub is not None and sub not in rt.subresources:
        return None
    if sub not in (None, "proxy") and len(segs) > 3:
        return None
    return Target(rt, namespace, name, sub, rest)


PROTOBUF = "application/vnd.kubernetes.protobuf"
LAB_MEDIA_TYPES = "application/json, application/yaml"


def check_media_types(request: web.Request) -> None:
    """Refuse protobuf the way the real server refuses a media type it does not speak.

    The lab encodes JSON only. Without this a protobuf body would fail as a confusing JSON decoding
    error, and a client accepting nothing but protobuf would get JSON it cannot parse; the real
    server's 415 and 406 (same reasons and message shapes) tell the client what to send instead.
    """
    if request.body_exists and request.content_type.startswith(PROTOBUF):
        raise status.ApiError(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: "
            f"{LAB_MEDIA_TYPES} (the lab does not speak protobuf)",
        )
    offered = [part.split(";")[0].strip() for part in request.headers.get("Accept", "").split(",")]
    offered = [media for media in offered if media]
    if offered and all(media.startswith(PROTOBUF) for media in offered):
        raise status.ApiError(
            406,
            "NotAcceptable",
            f"only the following media types are accepted: {LAB_MEDIA_TYPES}, "
            "application/json;stream=watch (the lab does not speak protobuf)",
        )


def wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


async def read_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    ctype = request.content_type
    try:
        if "yaml" in ctype:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as err:
        raise status.bad_request(f"error decoding request body: {err}") from None


def write_options(q: Any) -> WriteOptions:
    fv = q.get("fieldValidation", "Warn") or "Warn"
    if fv not in ("Ignore", "Warn", "Strict"):
        raise status.bad_request(f"fieldValidation must be one of Ignore, Warn, Strict, got {fv!r}")
    return WriteOptions(dry_run=q.get("dryRun") == "All", field_validation=fv)


@dataclass
class ApiServer:
    """The aiohttp application around one :class:`Api`."""

    api: Api
    pod_io: PodIO
    address: str = "127.0.0.1:0"
    watches: watch.Watches = field(default_factory=watch.Watches)

    @property
    def store(self) -> Store:
        return self.api.store

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except status.ApiError as err:
            return error_response(err)
        except web.HTTPException:
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as err:
            log.exception("%s %s failed", request.method, request.path)
            return error_response(status.internal(str(err)))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            return respond(discovery.SERVER_VERSION)
        if path == "/api":
            return respond(discovery.api_versions(self.address))
        if path == "/apis":
            return respond(discovery.group_list())
        if parts and parts[0] == "openapi":
            return openapi.handle(request, parts[1:])
        if parts[:2] == ["api", "v1"]:
            gv = ["", "v1"]
            rest = parts[2:]
        elif parts and parts[0] == "apis" and len(parts) >= 2:
            if len(parts) == 2:
                grp = discovery.group(parts[1])
                if grp is None:
                    raise status.path_not_found()
                return respond(grp)
            gv, rest = parts[1:3], parts[3:]
        else:
            raise status.path_not_found()
        if not rest:
            doc = discovery.resource_list(gv[0], gv[1])
            if doc is None:
                raise status.path_not_found()
            return respond(doc)
        target = parse_target([*gv, *rest])
        if target is None:
            raise status.path_not_found()
        check_media_types(request)
        legacy_watch = rest[0] == "watch"
        return await self._resource(request, target, legacy_watch)

    # -- resources ---------------------------------------------------------------------------

    async def _resource(self, request: web.Request, t: Target, legacy_watch: bool) -> web.StreamResponse:
        q = request.query
        method = request.method
        ns = t.namespace or ""
        if t.subresource is not None:
            return await self._subresource(request, t)
        if t.name is None:
            if method == "GET":
                if legacy_watch or q.get("watch") in ("true", "1"):
                    return await self._watch(request, t)
                return self._list(request, t)
            if method == "POST":
                if t.rt.namespaced and t.namespace is None:
                    raise status.method_not_allowed()
                body = await read_body(request)
                written = self.api.create(t.rt, ns, body, write_options(q))
                return respond(written.obj, 201, written.warnings)
            if (
                method == "DELETE"
                and (t.namespace is not None or not t.rt.namespaced)
                and t.rt.kind != "Namespace"
            ):
                labels = parse_labels(q.get("labelSelector"))
                fields = parse_fields(q.get("fieldSelector"), t.rt.field_labels)
                items = self.api.delete_collection(
                    t.rt, t.namespace, labels, fields, await self._delete_opts(request)
                )
                listed = [o for o in items if o.get("kind") != "Status"]
                return respond(
                    {
                        "kind": f"{t.rt.kind}List",
                        "apiVersion": t.rt.api_version,
                        "metadata": {"resourceVersion": str(self.store.resource_version)},
                        "items": listed,
                    }
                )
            raise status.method_not_allowed()
        name = t.name
        if method == "GET":
            if legacy_watch:
                return await self._watch(request, t)
            obj = self.api.get(t.rt, ns, name)
            if wants_table(request):
                return respond(
                    tables.table(
                        t.rt, [obj], obj["metadata"]["resourceVersion"], q.get("includeObject", "Metadata")
                    )
                )
            return respond(obj)
        if method == "PUT":
            written = self.api.update(t.rt, ns, name, await read_body(request), None, write_options(q))
            return respond(written.obj, 201 if written.created else 200, written.warnings)
        if method == "PATCH":
            written = self.api.patch(
                t.rt, ns, name, request.content_type, await read_body(request), None, write_options(q)
            )
            return respond(written.obj, 201 if written.created else 200, written.warnings)
        if method == "DELETE":
            opts = await self._delete_opts(request)
            result = self.api.delete(t.rt, ns, name, opts)
            still_there = result.get("kind") != "Status" and self.store.get(t.rt, ns, name) is not None
            return respond(result, 202 if still_there and opts.propagation == "Foreground" else 200)
        raise status.method_not_allowed()

    async def _delete_opts(self, request: web.Request) -> DeleteOptions:
        q = request.query
        body = await read_body(request) or {}
        if not isinstance(body, dict):
            raise status.bad_request("DeleteOptions must be an object")
        propagation = q.get("propagationPolicy") or body.get("propagationPolicy")
        orphan = q.get("orphanDependents") or body.get("orphanDependents")
        if propagation is None and orphan in (True, "true"):
            propagation = "Orphan"
        if propagation not in (None, "Foreground", "Background", "Orphan"):
            raise status.bad_request(f"propagationPolicy: Unsupported value: {propagation!r}")
        pre = body.get("preconditions") or {}
        # kubectl sends DeleteOptions in the body, the python client's grace_period_seconds in
        # the query. The real server reads the body when there is one, else the query; the lab
        # takes either (query first), as it does for propagationPolicy.
        grace = q.get("gracePeriodSeconds")
        if grace is None:
            grace = body.get("gracePeriodSeconds")
        try:
            grace_period = int(grace) if grace is not None else None
        except (TypeError, ValueError):
            raise status.bad_request(f"gracePeriodSeconds: invalid value {grace!r}") from None
        dry = q.get("dryRun") == "All" or body.get("dryRun") == ["All"]
        return DeleteOptions(
            propagation=propagation,
            grace_period=grace_period,
            uid=pre.get("uid"),
            resource_version=pre.get("resourceVersion"),
            dry_run=dry,
        )

    def _list(self, request: web.Request, t: Target) -> web.Response:
        q = request.query
        labels = parse_labels(q.get("labelSelector"))
        fields = parse_fields(q.get("fieldSelector"), t.rt.field_labels)
        limit = int(q.get("limit", "0") or 0)
        items, rv, cont = self.api.list_objects(t.rt, t.namespace, labels, fields, limit, q.get("continue"))
        if wants_table(request):
            return respond(tables.table(t.rt, items, str(rv), q.get("includeObject", "Metadata"), cont=cont))
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if cont:
            meta["continue"] = cont
        for obj in items:
            obj.setdefault("kind", t.rt.kind)
            obj.setdefault("apiVersion", t.rt.api_version)
        return respond(
            {"kind": f"{t.rt.kind}List", "apiVersion": t.rt.api_version, "metadata": meta, "items": items}
        )

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        fields = parse_fields(q.get("fieldSelector"), t.rt.field_labels)
        if t.name is not None:
            fields = parse_fields(
                ",".join(filter(None, [q.get("fieldSelector"), f"metadata.name={t.name}"])), t.rt.field_labels
            )
        req = watch.WatchRequest(
            rt=t.rt,
            namespace=t.namespace,
            labels=parse_labels(q.get("labelSelector")),
            fields=fields,
            resource_version=q.get("resourceVersion", ""),
            timeout=float(q.get("timeoutSeconds") or watch.DEFAULT_TIMEOUT),
            bookmarks=q.get("allowWatchBookmarks") in ("true", "1"),
            send_initial=q.get("sendInitialEvents") in ("true", "1"),
        )
        render: Callable[[Obj, bool], Obj]
        if wants_table(request):
            include = q.get("includeObject", "Metadata")

            def render(obj: Obj, first: bool) -> Obj:
                return tables.table(
                    t.rt, [obj], obj["metadata"]["resourceVersion"], include, with_columns=first
                )
        else:

            def render(obj: Obj, first: bool) -> Obj:
                return obj

        return await watch.serve(request, self.store, self.watches, req, render)

    # -- subresources ------------------------------------------------------------------------

    async def _subresource(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        q, method, ns, sub = request.query, request.method, t.namespace or "", t.subresource
        if sub == "proxy":
            return await self._proxy(request, t)
        name = t.name
        if sub == "status":
            if method == "GET":
                return respond(self.api.get(t.rt, ns, name))
            if method == "PUT":
                written = self.api.update(
                    t.rt, ns, name, await read_body(request), "status", write_options(q)
                )
                return respond(written.obj, 200, written.warnings)
            if method == "PATCH":
                written = self.api.patch(
                    t.rt, ns, name, request.content_type, await read_body(request), "status", write_options(q)
                )
                return respond(written.obj, 200, written.warnings)
            raise status.method_not_allowed()
        if sub == "scale":
            if method == "GET":
                return respond(self.api.get_scale(t.rt, ns, name))
            if method == "PUT":
                return respond(
                    self.api.update_scale(t.rt, ns, name, await read_body(request) or {}, write_options(q))
                )
            if method == "PATCH":
                body = await read_body(request)
                return respond(
                    self.api.patch_scale(t.rt, ns, name, request.content_type, body, write_options(q))
                )
            raise status.method_not_allowed()
        if sub == "finalize" and method == "PUT":
            return respond(
                self.api.finalize_namespace(name, await read_body(request) or {}, write_options(q))
            )
        if sub == "binding" and method == "POST":
            return respond(self.api.bind(ns, name, await read_body(request) or {}), 201)
        if sub == "eviction" and method == "POST":
            pod = self.api.get(PODS, ns, name)
            self.api.delete(PODS, ns, name, DeleteOptions())
            return respond({**success_status(PODS, pod), "code": 201}, 201)
        if sub == "log" and method == "GET":
            pod = self.api.get(PODS, ns, name)
            return await podio.serve_logs(
                request, pod, self.pod_io, lambda n, p: self.store.get(PODS, n, p), q
            )
        if sub in ("exec", "attach", "portforward"):
            raise status.bad_request(f"the lab API does not support pods/{sub}: use the node shell instead")
        raise status.method_not_allowed()

    async def _proxy(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        ns = t.namespace or ""
        name, port = podio.split_proxy_name(t.name)
        if t.rt.kind == "Pod":
            pod = self.api.get(PODS, ns, name)
            return await podio.forward(request, pod, podio.pod_port(pod, port), t.rest, self.pod_io)
        if t.rt.kind == "Service":
            svc = self.api.get(SERVICES, ns, name)
            pods, _ = self.store.list(PODS, ns)
            pod, target = podio.service_backend(svc, port, pods)
            return await podio.forward(request, pod, target, t.rest, self.pod_io)
        raise status.bad_request(f"the lab API does not proxy to {t.rt.plural}")


# -- running it --------------------------------------------------------------------------------


class RunningApiServer:
    """A server listening on loopback from a background thread; :meth:`stop` is idempotent."""

    def __init__(
        self,
        url: str,
        server: ApiServer,
        loop: asyncio.AbstractEventLoop,
        runner: web.AppRunner,
        thread: threading.Thread,
    ) -> None:
        self.url = url
        self._server = server
        self._loop = loop
        self._runner = runner
        self._thread = thread
        self._stopped = False
        self._lock = threading.Lock()

    @property
    def store(self) -> Store:
        return self._server.store

    @property
    def api(self) -> Api:
        return self._server.api

    def add_listener(self, sock: socket.socket) -> None:
        """Also serve on ``sock``, a listening socket made elsewhere: the lab passes one bound
        inside the control-plane node's netns, so programs in the lab reach the API at the
        node IP on :6443 without any route from the root namespace."""

        async def add() -> None:
            await web.SockSite(self._runner, sock).start()

        asyncio.run_coroutine_threadsafe(add(), self._loop).result(timeout=10)

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True

        async def shutdown() -> None:
            self._server.watches.close_all()
            await self._runner.cleanup()

        try:
            fut = asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
            fut.result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self.store.close()

    def __enter__(self) -> RunningApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build(state_dir: Path | None = None, pod_io: PodIO | None = None) -> ApiServer:
    store = Store(state_dir)
    api = Api(store)
    api.bootstrap()
    return ApiServer(api=api, pod_io=pod_io or NoPodIO())


def start_api_server(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    state_dir: Path | None = None,
    pod_io: PodIO | None = None,
) -> RunningApiServer:
    """Start the API on its own event loop in a daemon thread; return once it is listening."""
    server = build(state_dir, pod_io)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        sockets = runner.addresses
        box["runner"] = runner
        box["port"] = sockets[0][1]

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # reported to the caller below
            box["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=run, name="lab-api", daemon=True)
    thread.start()
    ready.wait(timeout=30)
    if "error" in box:
        thread.join(timeout=5)
        server.store.close()
        raise box["error"]
    if "runner" not in box:
        raise RuntimeError("the lab API server did not start within 30s")
    server.address = f"{host}:{box['port']}"
    url = f"http://{host}:{box['port']}"
    log.info("lab API listening on %s", url)
    return RunningApiServer(url, server, loop, box["runner"], thread)


def write_kubeconfig(path: Path, url: str, cluster_name: str = CLUSTER_NAME) -> Path:
    """A kubeconfig for ``url`` whose context is named ``cluster_name`` (plain HTTP, no credentials)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": cluster_name, "cluster": {"server": url}}],
        "users": [{"name": cluster_name, "user": {}}],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
        "current-context": cluster_name,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
