"""health (:8080 /health), ready (:8181 /ready) and prometheus (:9153 /metrics): the HTTP side.

These are what the kubelet's probes and the doctor read: /health answers ``OK`` while the process
runs (with ``lameduck`` it keeps answering that long after SIGTERM); /ready is 200 ``OK`` only when
every plugin that reports readiness is ready (kubernetes: caches synced), else 503 naming them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

from clusters.lab.programs.coredns import VERSION
from clusters.lab.programs.coredns.corefile import Directive
from clusters.lab.programs.coredns.plugin import (
    Handler,
    Plugin,
    Request,
    SetupContext,
    arg_error,
    host_port,
    parse_duration,
    setup_error,
)

log = logging.getLogger(__name__)


class HttpPlugin(Plugin):
    """A plugin that owns one small HTTP listener for the life of the instance."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def routes(self) -> list[web.RouteDef]:
        return []

    async def startup(self) -> None:
        app = web.Application()
        app.add_routes(self.routes())
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, self.host or "0.0.0.0", self.port, reuse_address=True).start()
        self._runner = runner

    async def shutdown(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


class Health(HttpPlugin):
    name = "health"

    def __init__(self, host: str, port: int, lameduck: float) -> None:
        super().__init__(host, port)
        self.lameduck = lameduck

    def routes(self) -> list[web.RouteDef]:
        async def health(_req: web.Request) -> web.Response:
            return web.Response(text="OK")

        return [web.get("/health", health)]

    async def final_shutdown(self) -> None:
        if self.lameduck > 0:
            log.info("plugin/health: Going into lameduck mode for %s", _go_duration(self.lameduck))
            await asyncio.sleep(self.lameduck)


class Ready(HttpPlugin):
    name = "ready"

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.plugins: Callable[[], list[Plugin]] = list

    def not_ready(self) -> list[str]:
        return sorted({p.name for p in self.plugins() if not p.ready()})

    def routes(self) -> list[web.RouteDef]:
        async def ready(_req: web.Request) -> web.Response:
            waiting = self.not_ready()
            if waiting:
                return web.Response(status=503, text=", ".join(waiting))
            return web.Response(text="OK")

        return [web.get("/ready", ready)]


class Prometheus(HttpPlugin):
    name = "prometheus"

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.requests: Counter[tuple[str, str]] = Counter()
        self.responses: Counter[str] = Counter()

    async def serve(self, req: Request, nxt: Handler) -> Any:
        self.requests[(req.proto, req.type_name)] += 1
        resp = await nxt(req)
        if resp is not None:
            from dnslib import RCODE

            self.responses[str(RCODE.get(resp.header.rcode))] += 1
        return resp

    def routes(self) -> list[web.RouteDef]:
        async def metrics(_req: web.Request) -> web.Response:
            lines = [f'coredns_build_info{{version="{VERSION}"}} 1']
            for (proto, qtype), n in sorted(self.requests.items()):
                lines.append(f'coredns_dns_requests_total{{proto="{proto}",type="{qtype}"}} {n}')
            for rcode, n in sorted(self.responses.items()):
                lines.append(f'coredns_dns_responses_total{{rcode="{rcode}"}} {n}')
            return web.Response(text="\n".join(lines) + "\n")

        return [web.get("/metrics", metrics)]


def _go_duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _address(d: Directive, ctx: SetupContext, default: str) -> tuple[str, int]:
    if len(d.args) > 1:
        raise arg_error(d.name, ctx.path, d)
    text = d.args[0] if d.args else default
    try:
        return host_port(text, int(default.rsplit(":", 1)[1]))
    except ValueError as err:
        raise setup_error(d.name, ctx.path, d.line, f"invalid address {text!r}") from err


def setup_health(d: Directive, ctx: SetupContext) -> Plugin:
    host, port = _address(d, ctx, ":8080")
    lameduck = 0.0
    for opt in d.block:
        if opt.name != "lameduck":
            raise setup_error("health", ctx.path, opt.line, f"unknown property '{opt.name}'")
        if len(opt.args) != 1:
            raise arg_error("health", ctx.path, opt)
        try:
            lameduck = parse_duration(opt.args[0])
        except ValueError as err:
            raise setup_error("health", ctx.path, opt.line, str(err)) from err
    return Health(host, port, lameduck)


def setup_ready(d: Directive, ctx: SetupContext) -> Plugin:
    host, port = _address(d, ctx, ":8181")
    return Ready(host, port)


def setup_prometheus(d: Directive, ctx: SetupContext) -> Plugin:
    host, port = _address(d, ctx, "localhost:9153")
    return Prometheus(host, port)
