"""The plugin contract: a request, a handler chain, setup errors, and what a plugin may hook into.

Why a chain of async handlers: CoreDNS plugins call ``Next`` and may wrap the answer (cache,
loadbalance, errors). A handler here returns the response message instead of writing it, which
keeps the wrapping plugins simple; an error (CoreDNS's ``(rcode, err)``) is a :class:`PluginError`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dnslib import EDNS0, QTYPE, RCODE

from clusters.lab.programs.coredns.corefile import Directive, ServerBlock, parse_error

log = logging.getLogger(__name__)

Handler = Callable[["Request"], Awaitable[Any]]
"""``await handler(req)`` → a dnslib ``DNSRecord`` response."""


@dataclass(frozen=True)
class Request:
    msg: Any  # dnslib DNSRecord (the query)
    qname: str  # lower case, fully qualified
    qtype: int
    client: tuple[str, int]
    proto: str  # "udp" | "tcp" | "internal"
    max_size: int

    @classmethod
    def of(cls, msg: Any, client: tuple[str, int], proto: str) -> Request:
        q = msg.q
        size = 512
        for rr in msg.ar:
            if rr.rtype == QTYPE.OPT:
                size = max(512, int(rr.rclass))
        if proto != "udp":
            size = 65535
        return cls(msg, fqdn_of(q.qname), int(q.qtype), client, proto, size)

    @property
    def type_name(self) -> str:
        return str(QTYPE.get(self.qtype, f"TYPE{self.qtype}"))

    @property
    def has_edns(self) -> bool:
        return any(rr.rtype == QTYPE.OPT for rr in self.msg.ar)

    def reply(self, rcode: int = RCODE.NOERROR, *, authoritative: bool = False) -> Any:
        """An empty response to this query (CoreDNS style: RA off for answers it owns)."""
        resp = self.msg.reply(ra=0, aa=1 if authoritative else 0)
        resp.header.rcode = rcode
        if self.has_edns:
            resp.add_ar(EDNS0(udp_len=1232))
        return resp


def fqdn_of(label: Any) -> str:
    name = str(label).lower()
    return name if name.endswith(".") else name + "."


class PluginError(Exception):
    """A plugin failed to answer (CoreDNS returns SERVFAIL and the errors plugin logs it)."""

    def __init__(self, plugin: str, message: str, rcode: int = RCODE.SERVFAIL) -> None:
        super().__init__(f"plugin/{plugin}: {message}" if plugin else message)
        self.rcode = rcode


class SetupError(Exception):
    """A directive CoreDNS would refuse at start-up; the message is CoreDNS's line."""


def setup_error(plugin: str, path: str, line: int, message: str) -> SetupError:
    return SetupError(f"plugin/{plugin}: {parse_error(path, line, message)}")


def arg_error(plugin: str, path: str, d: Directive) -> SetupError:
    after = d.args[-1] if d.args else d.name
    return setup_error(
        plugin, path, d.line, f"Wrong argument count or unexpected line ending after '{after}'"
    )


class Plugin:
    """Base plugin: passes every query on. Override :meth:`serve`, and the hooks it needs."""

    name = "plugin"

    async def serve(self, req: Request, nxt: Handler) -> Any:
        return await nxt(req)

    def ready(self) -> bool:
        """For the ready plugin: False until the plugin can answer (kubernetes: API synced)."""
        return True

    async def startup(self) -> None:
        """Runs once the server block is set up, before the listeners open (CoreDNS OnStartup)."""

    async def started(self) -> None:
        """Runs after the listeners are open (the loop plugin probes itself from here)."""

    async def shutdown(self) -> None:
        """Runs when the instance stops (process exit or reload)."""


@dataclass
class SetupContext:
    """What a plugin's setup may read: its block, the Corefile path, and the server to re-enter."""

    path: str
    block: ServerBlock
    listen_hosts: tuple[str, ...]
    lookup: Callable[[str, int], Awaitable[Any]] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(k.zone for k in self.block.keys)

    @property
    def port(self) -> int:
        return self.block.keys[0].port


def no_next(plugin: str) -> Handler:
    async def end(req: Request) -> Any:
        raise PluginError(plugin, "no next plugin found")

    return end


def chain(plugins: list[Plugin]) -> Handler:
    """Compose plugins into one handler; the last plugin's ``Next`` fails like CoreDNS's."""
    handler: Handler = no_next(plugins[-1].name if plugins else "")
    for p in reversed(plugins):
        handler = _link(p, handler)
    return handler


def _link(p: Plugin, nxt: Handler) -> Handler:
    async def call(req: Request) -> Any:
        return await p.serve(req, nxt)

    return call


def zone_match(zones: tuple[str, ...], qname: str) -> str:
    """The longest zone ``qname`` is in, or "" (CoreDNS ``plugin.Zones.Matches``)."""
    best = ""
    for z in zones:
        if (z == "." or qname == z or qname.endswith("." + z)) and len(z) > len(best):
            best = z
    return best


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go ``time.ParseDuration`` string (``5s``, ``1m30s``, ``250ms``) → seconds; ValueError if bad."""
    import re

    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        if text == "0":
            return 0.0
        raise ValueError(f"time: invalid duration {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def host_port(text: str, default_port: int) -> tuple[str, int]:
    """``:8080``, ``127.0.0.1:8080``, ``[::1]:53`` or a bare host → (host, port); "" host = all."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port) if port else default_port
    return text, default_port
