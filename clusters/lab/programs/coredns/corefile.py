"""The Corefile grammar (CoreDNS's fork of the Caddy v1 parser), parsed into frozen data.

Why our own parser: the lab must load the exact Corefiles kubeadm writes and fail on a bad one with
CoreDNS's own words, because the doctor and the chaos experiments read those words from pod logs.
Rules kept from Caddy: tokens split on whitespace; ``"…"`` quotes (``\\"`` escapes); ``#`` starts a
comment only at the start of a token; ``{``/``}`` count only as separate tokens (``example.com{`` is
one token); a directive's arguments are the tokens on its line; ``{$ENV}`` is replaced from the
environment; server keys are ``[dns://]zone[:port]``, several per block, comma or space separated.
An unknown directive fails with ``<file>:<line> - Error during parsing: Unknown directive '<name>'``,
exactly as CoreDNS prints it (e.g. the classic ``Unknown directive 'proxy'`` after 1.5.0).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_PORT = 53

# CoreDNS 1.12 plugin.cfg, in execution order: the chain runs in this order whatever the Corefile says.
PLUGIN_ORDER = (
    "root", "metadata", "geoip", "cancel", "tls", "timeouts", "multisocket", "reload", "nsid",
    "bufsize", "bind", "debug", "trace", "ready", "health", "pprof", "prometheus", "errors", "log",
    "dnstap", "local", "dns64", "acl", "any", "chaos", "loadbalance", "tsig", "cache", "rewrite",
    "header", "dnssec", "autopath", "minimal", "template", "transfer", "hosts", "route53", "azure",
    "clouddns", "k8s_external", "kubernetes", "file", "auto", "secondary", "etcd", "loop", "forward",
    "grpc", "erratic", "whoami", "on", "sign", "view",
)  # fmt: skip
KNOWN_PLUGINS = frozenset(PLUGIN_ORDER)


class CorefileError(Exception):
    """A Corefile CoreDNS would refuse; the message is CoreDNS's own line."""


def parse_error(path: str, line: int, message: str) -> CorefileError:
    return CorefileError(f"{path}:{line} - Error during parsing: {message}")


@dataclass(frozen=True)
class Token:
    text: str
    line: int
    quoted: bool = False

    @property
    def is_open(self) -> bool:
        return self.text == "{" and not self.quoted

    @property
    def is_close(self) -> bool:
        return self.text == "}" and not self.quoted


@dataclass(frozen=True)
class Directive:
    """One line of a block: ``name args…`` and, when the line ends in ``{``, the nested lines."""

    name: str
    args: tuple[str, ...]
    line: int
    block: tuple[Directive, ...] = ()
    has_block: bool = False


@dataclass(frozen=True)
class ServerKey:
    zone: str  # fully qualified, lower case: "." or "cluster.local."
    port: int
    scheme: str = "dns"

    def __str__(self) -> str:
        return f"{self.zone}:{self.port}"


@dataclass(frozen=True)
class ServerBlock:
    keys: tuple[ServerKey, ...]
    directives: tuple[Directive, ...]
    line: int

    def find(self, name: str) -> tuple[Directive, ...]:
        return tuple(d for d in self.directives if d.name == name)


@dataclass(frozen=True)
class Corefile:
    path: str
    blocks: tuple[ServerBlock, ...]


_ENV = re.compile(r"\{\$([A-Za-z_][A-Za-z0-9_]*)\}")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    line = 1
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
        elif ch.isspace():
            i += 1
        elif ch == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif ch == '"':
            start_line = line
            i += 1
            buf: list[str] = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n and text[i + 1] == '"':
                    i += 1
                if text[i] == "\n":
                    line += 1
                buf.append(text[i])
                i += 1
            i += 1  # closing quote (an unterminated quote ends at EOF, as Caddy's lexer does)
            tokens.append(Token(_env("".join(buf)), start_line, quoted=True))
        else:
            start = i
            while i < n and not text[i].isspace():
                i += 1
            tokens.append(Token(_env(text[start:i]), line))
    return tokens


def _env(text: str) -> str:
    return _ENV.sub(lambda m: os.environ.get(m.group(1), ""), text)


def parse(text: str, path: str = "Corefile", *, default_port: int = DEFAULT_PORT) -> Corefile:
    """Parse Corefile text; ``path`` is only used in error messages (CoreDNS prints the -conf path)."""
    tokens = tokenize(text)
    blocks: list[ServerBlock] = []
    pos = 0
    while pos < len(tokens):
        first = tokens[pos]
        keys: list[Token] = []
        while pos < len(tokens) and not tokens[pos].is_open:
            tok = tokens[pos]
            if tok.is_close:
                raise parse_error(path, tok.line, "Unexpected '}' because no matching opening brace")
            if keys and tok.line != keys[-1].line and not keys[-1].text.endswith(","):
                break  # a block without braces: the keys line is over, directives follow
            keys.append(tok)
            pos += 1
        server_keys = _keys(keys, path, default_port)
        if pos < len(tokens) and tokens[pos].is_open:
            body, pos = _until_close(tokens, pos + 1, path, first.line)
        elif not blocks:
            body, pos = tokens[pos:], len(tokens)  # a lone block may omit its braces
        else:
            raise parse_error(path, keys[-1].line, f"Expected '{{' after {keys[-1].text!r}")
        blocks.append(ServerBlock(server_keys, _directives(body, path, top=True), first.line))
    if not blocks:
        raise CorefileError(f"{path}: no server blocks: a Corefile needs at least '.:53 {{ … }}'")
    return Corefile(path, tuple(blocks))


def _until_close(tokens: list[Token], pos: int, path: str, line: int) -> tuple[list[Token], int]:
    depth = 1
    start = pos
    while pos < len(tokens):
        if tokens[pos].is_open:
            depth += 1
        elif tokens[pos].is_close:
            depth -= 1
            if depth == 0:
                return tokens[start:pos], pos + 1
        pos += 1
    raise parse_error(path, tokens[-1].line if tokens else line, "Unexpected EOF")


def _directives(tokens: list[Token], path: str, *, top: bool) -> tuple[Directive, ...]:
    out: list[Directive] = []
    pos = 0
    while pos < len(tokens):
        head = tokens[pos]
        if head.is_close or head.is_open:
            raise parse_error(path, head.line, f"Unexpected '{head.text}'")
        if top and head.text == "import":
            raise CorefileError(
                f"{path}:{head.line} - 'import' is not supported by the lab CoreDNS: inline the snippet"
            )
        if top and head.text not in KNOWN_PLUGINS:
            raise parse_error(path, head.line, f"Unknown directive '{head.text}'")
        pos += 1
        args: list[str] = []
        block: tuple[Directive, ...] = ()
        has_block = False
        while pos < len(tokens) and tokens[pos].line == head.line and not tokens[pos].is_close:
            if tokens[pos].is_open:
                inner, pos = _until_close(tokens, pos + 1, path, tokens[pos].line)
                block = _directives(inner, path, top=False)
                has_block = True
                break
            args.append(tokens[pos].text)
            pos += 1
        out.append(Directive(head.text, tuple(args), head.line, block, has_block))
    return tuple(out)


def _keys(tokens: Iterable[Token], path: str, default_port: int) -> tuple[ServerKey, ...]:
    keys: list[ServerKey] = []
    line = 0
    for tok in tokens:
        line = tok.line
        for part in tok.text.split(","):
            if part.strip():
                keys.append(server_key(part.strip(), path, tok.line, default_port))
    if not keys:
        raise parse_error(path, line or 1, "server block without an address (e.g. '.:53')")
    return tuple(keys)


def server_key(text: str, path: str, line: int, default_port: int = DEFAULT_PORT) -> ServerKey:
    """``[dns://]zone[:port]`` → a key; a CIDR zone on an octet boundary becomes its reverse zone."""
    scheme = "dns"
    rest = text
    if "://" in text:
        scheme, rest = text.split("://", 1)
        scheme = scheme.lower()
        if scheme != "dns":
            raise CorefileError(
                f"{path}:{line} - scheme {scheme}:// is not supported by the lab CoreDNS (only dns://)"
            )
    zone, port_text = rest, ""
    if rest.count(":") == 1:
        zone, port_text = rest.split(":")
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise parse_error(path, line, f"invalid port {port_text!r} in {text!r}")
        port = int(port_text)
    return ServerKey(_zone(zone or ".", path, line), port, scheme)


def _zone(zone: str, path: str, line: int) -> str:
    if "/" in zone:
        try:
            net = ipaddress.ip_network(zone, strict=False)
        except ValueError as err:
            raise parse_error(path, line, f"invalid zone {zone!r}: {err}") from err
        return reverse_zone(net)
    return fqdn(zone)


def fqdn(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


def reverse_zone(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """The reverse zone of a network on an octet (v4) or nibble (v6) boundary."""
    if net.version == 4:
        keep = net.prefixlen // 8
        octets = str(net.network_address).split(".")[:keep]
        return ".".join([*reversed(octets), "in-addr.arpa."])
    keep = net.prefixlen // 4
    nibbles = net.network_address.exploded.replace(":", "")[:keep]
    return ".".join([*reversed(nibbles), "ip6.arpa."])
