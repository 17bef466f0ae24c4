"""The small chain plugins: errors, log, loadbalance, bind (parsed by the server), and the no-op ones.

errors logs what a later plugin failed with (CoreDNS: ``[ERROR] plugin/errors: 2 name. A: …``) and
turns it into the response; log prints one CoreDNS-format line per query; loadbalance rotates
address records in the answer (round_robin, the only policy kubeadm uses).
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

from dnslib import QTYPE, RCODE

from clusters.lab.programs.coredns.corefile import Directive
from clusters.lab.programs.coredns.plugin import (
    Handler,
    Plugin,
    PluginError,
    Request,
    SetupContext,
    arg_error,
    setup_error,
)

log = logging.getLogger(__name__)

ADDRESS_TYPES = (QTYPE.A, QTYPE.AAAA, QTYPE.MX)


class Errors(Plugin):
    name = "errors"

    async def serve(self, req: Request, nxt: Handler) -> Any:
        try:
            return await nxt(req)
        except PluginError as err:
            log.error("plugin/errors: %d %s %s: %s", err.rcode, req.qname, req.type_name, err)
            return req.reply(err.rcode)


class Log(Plugin):
    name = "log"

    async def serve(self, req: Request, nxt: Handler) -> Any:
        start = time.monotonic()
        resp: Any = None
        try:
            resp = await nxt(req)
            return resp
        finally:
            rcode = RCODE.get(resp.header.rcode) if resp is not None else "SERVFAIL"
            flags = ",".join(
                f for f in ("qr", "aa", "tc", "rd", "ra") if resp is not None and getattr(resp.header, f)
            )
            size = len(resp.pack()) if resp is not None else 0
            do = "true" if any(rr.rtype == QTYPE.OPT and (rr.ttl >> 15) & 1 for rr in req.msg.ar) else "false"
            log.info(
                '%s:%d - %d "%s IN %s %s %d %s %d" %s %s %d %.6fs',
                req.client[0], req.client[1], req.msg.header.id, req.type_name, req.qname, req.proto,
                len(req.msg.pack()), do, req.max_size, rcode, flags, size, time.monotonic() - start,
            )  # fmt: skip


class LoadBalance(Plugin):
    name = "loadbalance"

    def __init__(self) -> None:
        self._turn = itertools.count()

    async def serve(self, req: Request, nxt: Handler) -> Any:
        resp = await nxt(req)
        if resp is None or len(resp.rr) < 2:
            return resp
        addrs = [rr for rr in resp.rr if rr.rtype in ADDRESS_TYPES]
        if len(addrs) < 2:
            return resp
        k = next(self._turn) % len(addrs)
        addrs = addrs[k:] + addrs[:k]
        resp.rr = [rr for rr in resp.rr if rr.rtype not in ADDRESS_TYPES] + addrs
        return resp


class Passive(Plugin):
    """A directive that configures the process, not the chain (bind, health, ready, reload, …)."""

    def __init__(self, name: str) -> None:
        self.name = name


def setup_errors(d: Directive, ctx: SetupContext) -> Plugin:
    if len(d.args) > 1 or (d.args and d.args[0] != "stdout"):
        raise arg_error("errors", ctx.path, d)
    for opt in d.block:
        if opt.name not in ("consolidate", "stacktrace"):
            raise setup_error("errors", ctx.path, opt.line, f"unknown property '{opt.name}'")
    return Errors()


def setup_log(d: Directive, ctx: SetupContext) -> Plugin:
    return Log()


def setup_loadbalance(d: Directive, ctx: SetupContext) -> Plugin:
    if d.args and d.args[0] not in ("round_robin", "weighted"):
        raise setup_error("loadbalance", ctx.path, d.line, f"unknown policy: {d.args[0]}")
    if d.args and d.args[0] == "weighted":
        raise setup_error("loadbalance", ctx.path, d.line, "the weighted policy is not supported in the lab")
    return LoadBalance()


def setup_bind(d: Directive, ctx: SetupContext) -> Plugin:
    if not d.args:
        raise arg_error("bind", ctx.path, d)
    return Passive("bind")
