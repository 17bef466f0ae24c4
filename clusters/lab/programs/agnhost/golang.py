"""Go-shaped strings and helpers: addresses, errno texts, DNS errors, JSON and time.

Probes match agnhost's output (``REFUSED``, ``dial tcp …: connect: connection refused``); these
helpers keep that wording in one place.
"""

from __future__ import annotations

import errno
import os
import socket
import time

_START = time.monotonic()
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_SIGNALS = {
    9: "killed",
    15: "terminated",
    2: "interrupt",
    1: "hangup",
    6: "aborted",
    11: "segmentation fault",
}


def hostname() -> str:
    """The pod's hostname: the lab gives pods no UTS namespace, so the kubelet sets HOSTNAME."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


def strerror(code: int | None) -> str:
    """Go's syscall.Errno text: the C message with a lower-case first letter."""
    if code is None:
        return "unknown error"
    if code == errno.ETIMEDOUT:
        return "connection timed out"
    text = os.strerror(code)
    return text[:1].lower() + text[1:]


def unmap(ip: str) -> str:
    """Go prints IPv4-mapped IPv6 addresses as plain IPv4."""
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip


def join_host_port(host: str, port: int | str) -> str:
    """Go's net.JoinHostPort."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def addr_str(sockaddr: tuple[object, ...] | str | None) -> str:
    """A Python socket address as Go's ``ip:port`` (``[v6]:port``)."""
    if not isinstance(sockaddr, tuple):
        return ""
    return join_host_port(unmap(str(sockaddr[0])), str(sockaddr[1]))


def split_host_port(hostport: str) -> tuple[str, str]:
    """Go's net.SplitHostPort, with its error texts."""

    def fail(why: str) -> ValueError:
        return ValueError(f"address {hostport}: {why}")

    colon = hostport.rfind(":")
    if colon < 0:
        raise fail("missing port in address")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise fail("missing ']' in address")
        if end + 1 == len(hostport):
            raise fail("missing port in address")
        if end + 1 != colon:
            raise fail(
                "too many colons in address" if hostport[end + 1] == ":" else "missing port in address"
            )
        host = hostport[1:end]
        if "[" in hostport[1:] or "]" in hostport[end + 1 :]:
            raise fail("unexpected '[' in address")
    else:
        host = hostport[:colon]
        if ":" in host:
            raise fail("too many colons in address")
        if "[" in host or "]" in host:
            raise fail("unexpected '[' in address")
    return host, hostport[colon + 1 :]


def go_json(value: object) -> str:
    """json.Marshal output: compact, sorted map keys, HTML-safe escapes."""
    import json  # imported here: only HTTP handlers need it, and `pause` must start fast

    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    for raw, escaped in _JSON_ESCAPES.items():
        text = text.replace(raw, escaped)
    return text


def now_string() -> str:
    """time.Now().String(): ``2006-01-02 15:04:05.999999999 -0700 MST m=+0.000000001``."""
    ns = time.time_ns()
    local = time.localtime(ns // 1_000_000_000)
    frac = f"{ns % 1_000_000_000:09d}".rstrip("0")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", local) + (f".{frac}" if frac else "")
    zone = time.strftime("%z %Z", local)
    return f"{stamp} {zone} m=+{time.monotonic() - _START:.9f}"


def exit_error(returncode: int) -> str:
    """exec.ExitError's text: ``exit status 1`` or ``signal: killed``."""
    if returncode >= 0:
        return f"exit status {returncode}"
    return f"signal: {_SIGNALS.get(-returncode, f'signal {-returncode}')}"


def nameserver() -> str:
    """The first resolv.conf nameserver as ``ip:53``: Go's resolver names it in lookup errors."""
    from clusters.lab.programs.podresolver import nameserver as pod_nameserver

    return pod_nameserver()


def resolve(host: str, port: str, network: str) -> tuple[str, int]:
    """Go's net.ResolveTCPAddr/ResolveUDPAddr on split parts: the first address, IPv4 preferred.

    Raises ValueError carrying Go's text (``lookup x on 10.96.0.10:53: no such host``).
    An empty host stays empty: Go then dials the local system.
    """
    if port == "":
        number = 0
    elif port.isdigit() or (port[:1] in "+-" and port[1:].isdigit()):
        number = int(port)
        if not 0 <= number <= 65535:
            raise ValueError(f"address {port}: invalid port")
    else:
        try:
            number = socket.getservbyname(port, network)
        except OSError:
            raise ValueError(f"lookup {network}/{port}: unknown port") from None
    if host == "":
        return "", number
    from clusters.lab.programs.podresolver import LookupError_, resolve_ips

    kind = socket.SOCK_STREAM if network == "tcp" else socket.SOCK_DGRAM
    try:
        ips = resolve_ips(host, kind)
    except LookupError_ as exc:
        raise ValueError(f"lookup {host} on {nameserver()}: {exc.why}") from None
    v4 = [ip for ip in ips if ":" not in ip]
    return (v4 or ips)[0], number
