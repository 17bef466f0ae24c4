"""One loaded Corefile: its server blocks' plugin chains and the UDP/TCP listeners that feed them.

An :class:`Instance` is what a reload replaces: setup (may fail with CoreDNS's error line),
start (plugin start-up hooks, then listeners, then post-start hooks such as the loop probe), stop.
A query goes to the block on its listener whose zone matches the name longest (REFUSED if none),
as CoreDNS's dnsserver does.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import struct
from dataclasses import dataclass
from typing import Any, cast

from dnslib import OPCODE, QTYPE, RCODE, DNSError, DNSRecord

from clusters.lab.programs.coredns.corefile import PLUGIN_ORDER, Corefile, ServerBlock
from clusters.lab.programs.coredns.plugin import (
    Handler,
    Plugin,
    PluginError,
    Request,
    SetupContext,
    SetupError,
    chain,
    zone_match,
)
from clusters.lab.programs.coredns.plugins import SETUPS
from clusters.lab.programs.coredns.plugins.http import Health, HttpPlugin, Ready
from clusters.lab.programs.coredns.plugins.reload import Reload, Schedule

log = logging.getLogger(__name__)

MAX_LOOKUP_DEPTH = 8
_depth: contextvars.ContextVar[int] = contextvars.ContextVar("lookup_depth", default=0)


@dataclass
class Block:
    zones: tuple[str, ...]
    handler: Handler
    plugins: list[Plugin]


@dataclass
class Listener:
    host: str
    port: int
    blocks: list[Block]
    udp: asyncio.DatagramTransport | None = None
    tcp: asyncio.Server | None = None


class Instance:
    def __init__(self, corefile: Corefile) -> None:
        self.corefile = corefile
        self.listeners: dict[tuple[str, int], Listener] = {}
        self.plugins: list[Plugin] = []
        self.schedule: Schedule | None = None
        self._tcp_tasks: set[asyncio.Task[None]] = set()
        self._http_addresses: set[tuple[str, int]] = set()
        for sb in corefile.blocks:
            self._setup_block(sb)

    def _setup_block(self, sb: ServerBlock) -> None:
        hosts: tuple[str, ...] = ("",)
        for d in sb.find("bind"):
            hosts = tuple(d.args)
        ctx = SetupContext(self.corefile.path, sb, hosts, lookup=self.lookup)
        plugins: list[Plugin] = []
        for d in sorted(sb.directives, key=lambda d: PLUGIN_ORDER.index(d.name)):
            setup = SETUPS.get(d.name)
            if setup is None:
                raise SetupError(
                    f"plugin/{d.name}: {self.corefile.path}:{d.line} - the '{d.name}' plugin is not "
                    "supported by the knetcheck lab CoreDNS (remove it, or run the suite on kind)"
                )
            plugin = setup(d, ctx)
            if isinstance(plugin, Ready):
                plugin.plugins = lambda: self.plugins
            if isinstance(plugin, Reload) and self.schedule is None:
                self.schedule = plugin.schedule
            plugins.append(plugin)
        self.plugins.extend(plugins)
        block = Block(ctx.zones, chain(plugins), plugins)
        for key in sb.keys:
            for host in hosts:
                lst = self.listeners.setdefault((host, key.port), Listener(host, key.port, []))
                if block not in lst.blocks:
                    lst.blocks.append(block)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Plugin start-up, then the listeners, then post-start hooks; undo everything on failure."""
        try:
            for p in self.plugins:
                if isinstance(p, HttpPlugin):
                    if p.address in self._http_addresses:
                        continue  # one listener per address, shared like CoreDNS's
                    self._http_addresses.add(p.address)
                await p.startup()
            loop = asyncio.get_running_loop()
            for lst in self.listeners.values():
                host = lst.host or "0.0.0.0"
                lst.udp, _ = await loop.create_datagram_endpoint(
                    functools.partial(_UdpServer, self, lst), local_addr=(host, lst.port)
                )
                lst.tcp = await asyncio.start_server(
                    functools.partial(self._tcp_conn, lst), host, lst.port, reuse_address=True
                )
        except OSError as err:
            await self.stop()
            raise SetupError(f"listen: {err.strerror or err}") from err
        except BaseException:
            await self.stop()
            raise
        for p in self.plugins:
            await p.started()

    async def stop(self, *, final: bool = False) -> None:
        if final:
            for p in self.plugins:
                if isinstance(p, Health):
                    await p.final_shutdown()
        for lst in self.listeners.values():
            if lst.udp is not None:
                proto = cast(_UdpServer, lst.udp.get_protocol())
                lst.udp.close()  # the socket closes on a later loop turn: wait, so a reload can rebind
                await asyncio.wait_for(asyncio.shield(proto.closed), 5.0)
                lst.udp = None
            if lst.tcp is not None:
                lst.tcp.close()
                await lst.tcp.wait_closed()
                lst.tcp = None
        for t in list(self._tcp_tasks):
            t.cancel()
        for p in self.plugins:
            try:
                await p.shutdown()
            except Exception:
                log.exception("plugin/%s: shutdown failed", p.name)

    def addresses(self) -> list[str]:
        """The banner's first lines: one ``zone:port`` per server key, as CoreDNS prints them."""
        return [str(k) for sb in self.corefile.blocks for k in sb.keys]

    # -- serving -------------------------------------------------------------------------------

    async def handle(self, lst: Listener, data: bytes, client: tuple[str, int], proto: str) -> bytes | None:
        try:
            msg = DNSRecord.parse(data)
        except (DNSError, struct.error, IndexError, ValueError):
            return None  # malformed: dropped, as miekg/dns does
        if msg.header.qr:
            return None
        if not msg.questions or msg.header.opcode != OPCODE.QUERY:
            resp = msg.reply(ra=0, aa=0)
            resp.header.rcode = RCODE.FORMERR if not msg.questions else RCODE.NOTIMP
            return bytes(resp.pack())
        req = Request.of(msg, client, proto)
        resp = await self.dispatch(lst.blocks, req)
        return _pack(resp, req.max_size)

    async def dispatch(self, blocks: list[Block], req: Request) -> Any:
        best: Block | None = None
        best_zone = ""
        for b in blocks:
            z = zone_match(b.zones, req.qname)
            if z and len(z) > len(best_zone):
                best, best_zone = b, z
        if best is None:
            return req.reply(RCODE.REFUSED)
        try:
            resp = await best.handler(req)
        except PluginError as err:
            return req.reply(err.rcode)
        except Exception:
            log.exception("plugin chain failed for %s %s", req.qname, req.type_name)
            return req.reply(RCODE.SERVFAIL)
        return resp if resp is not None else req.reply(RCODE.SERVFAIL)

    async def lookup(self, name: str, qtype: int) -> Any:
        """Resolve through our own first listener's blocks (CoreDNS's plugin/pkg/upstream)."""
        depth = _depth.get()
        if depth >= MAX_LOOKUP_DEPTH or not self.listeners:
            raise PluginError("", f"lookup of {name}: too many CNAME hops")
        token = _depth.set(depth + 1)
        try:
            q = DNSRecord.question(name, QTYPE.get(qtype))
            req = Request.of(q, ("127.0.0.1", 0), "internal")
            return await self.dispatch(next(iter(self.listeners.values())).blocks, req)
        finally:
            _depth.reset(token)

    async def _tcp_conn(
        self, lst: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tcp_tasks.add(task)
        peer = writer.get_extra_info("peername") or ("", 0)
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), 10.0)
                data = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", head)[0]), 10.0)
                out = await self.handle(lst, data, (peer[0], peer[1]), "tcp")
                if out is None:
                    break
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if task is not None:
                self._tcp_tasks.discard(task)
            writer.close()


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, instance: Instance, lst: Listener) -> None:
        self.instance = instance
        self.lst = lst
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # selector transports don't subclass it

    def datagram_received(self, data: bytes, addr: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(data, (addr[0], addr[1])))
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("answering a query failed", exc_info=task.exception())

    async def _answer(self, data: bytes, client: tuple[str, int]) -> None:
        out = await self.instance.handle(self.lst, data, client, "udp")
        if out is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(out, client)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp listener %s:%d: %s", self.lst.host, self.lst.port, exc)


def _pack(resp: Any, max_size: int) -> bytes:
    data = bytes(resp.pack())
    if len(data) <= max_size:
        return data
    resp.rr, resp.auth = [], []
    resp.ar = [rr for rr in resp.ar if rr.rtype == QTYPE.OPT]
    resp.header.tc = 1
    return bytes(resp.pack())
