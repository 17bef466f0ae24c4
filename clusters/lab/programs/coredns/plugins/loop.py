"""loop — send ``HINFO <rand>.<rand>.<zone>`` to ourselves; seeing it more than twice halts the process.

The real mechanism, not a config check: at start (and at every reload) the probe goes to our own
listening address through the normal chain for up to 30 s. A forward to ourselves (127.0.0.1, or
the kube-dns ClusterIP that leads back to a CoreDNS) brings the query back; the third sighting
logs CoreDNS's exact FATAL line and exits 1, so the pod crash-loops as on a real cluster.
Once a probe got any answer, the plugin disables itself 2 s later (no query of death).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import time
from typing import Any

from dnslib import QTYPE, DNSRecord

from clusters.lab.programs.coredns.corefile import Directive
from clusters.lab.programs.coredns.dnsclient import ExchangeError, exchange_udp
from clusters.lab.programs.coredns.plugin import Handler, Plugin, Request, SetupContext, arg_error, zone_match

log = logging.getLogger(__name__)

PROBE_WINDOW = 30.0
TROUBLESHOOTING = "https://coredns.io/plugins/loop#troubleshooting"


def loop_message(remote: str, address: str, zone: str, qname: str) -> str:
    """CoreDNS's format: Loop (%s -> %s) detected for zone %q, see …. Query: "HINFO %s"."""
    return (
        f'Loop ({remote} -> {address}) detected for zone "{zone}", see {TROUBLESHOOTING}. '
        f'Query: "HINFO {qname}"'
    )


def _rand() -> str:
    return str(random.getrandbits(63))  # Go's rand.Int(): a non-negative int64


class Loop(Plugin):
    name = "loop"

    def __init__(self, zone: str, listen_host: str, port: int) -> None:
        self.zone = zone
        self.qname = f"{_rand()}.{_rand()}.{zone}" if zone != "." else f"{_rand()}.{_rand()}."
        self.listen_host = listen_host
        self.port = port
        self.seen = 0
        self.disabled = False
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        """How CoreDNS prints our address: JoinHostPort(ListenHosts[0], port), ``:53`` when unbound."""
        h = self.listen_host
        return f"[{h}]:{self.port}" if ":" in h else f"{h}:{self.port}"

    async def serve(self, req: Request, nxt: Handler) -> Any:
        if req.qtype != QTYPE.HINFO or self.disabled or not zone_match((self.zone,), req.qname):
            return await nxt(req)
        if req.qname == self.qname:
            self.seen += 1
        if self.seen > 2:
            remote = f"{req.client[0]}:{req.client[1]}"
            fatal(f"plugin/loop: {loop_message(remote, self.address, self.zone, self.qname)}")
        return await nxt(req)

    async def started(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._probe())

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _probe(self) -> None:
        target = self.listen_host or "127.0.0.1"
        if target in ("0.0.0.0", "::"):
            target = "127.0.0.1" if target == "0.0.0.0" else "::1"
        deadline = time.monotonic() + PROBE_WINDOW
        while time.monotonic() < deadline:
            q = DNSRecord.question(self.qname, "HINFO")
            try:
                await exchange_udp(target, self.port, q.pack(), 2.0)
            except (ExchangeError, OSError):
                self.seen = 0
                await asyncio.sleep(1.0)
                continue
            await asyncio.sleep(2.0)
            break
        self.disabled = True


def fatal(line: str) -> None:
    """log.Fatalf: print ``[FATAL] …`` and exit 1 at once, whatever else is running."""
    log.critical("%s", line)
    for h in logging.getLogger().handlers:
        h.flush()
    sys.stdout.flush()
    os._exit(1)


def setup(d: Directive, ctx: SetupContext) -> Loop:
    if d.args or d.has_block:
        raise arg_error("loop", ctx.path, d)
    host = ctx.listen_hosts[0] if ctx.listen_hosts else ""
    return Loop(ctx.zones[0], host, ctx.port)
