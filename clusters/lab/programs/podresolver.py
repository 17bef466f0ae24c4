"""Name resolution as a pod sees it: the container's /etc/hosts and /etc/resolv.conf.

glibc's getaddrinfo reads the host's files, but a lab container's resolv.conf (written by the
kubelet per dnsPolicy: ClusterFirst = 10.96.0.10 with the search path and ndots:5) lives under its
root directory. So lab programs resolve through here: hosts file first, then DNS with the search
list and ndots rules, as Go's and glibc's resolvers do. Outside a lab container (no
``KNETCHECK_ROOTFS``) the system resolver is used unchanged.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from clusters.lab.programs.container import ROOTFS_ENV, container_path

QUERY_TIMEOUT = 5.0
"""Per query and server, like Go's default (resolv.conf ``timeout:5``)."""


class LookupError_(Exception):
    """A failed lookup; ``why`` is Go's wording (``no such host``, ``i/o timeout``, …)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def nameserver() -> str:
    """The first nameserver of the container's resolv.conf as ``ip:53`` (Go names it in errors)."""
    try:
        for line in container_path("/etc/resolv.conf").read_text(encoding="utf-8").splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "nameserver":
                ip = fields[1]
                return f"[{ip}]:53" if ":" in ip else f"{ip}:53"
    except OSError:
        pass
    return "127.0.0.1:53"


def _hosts(name: str, path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and name.rstrip(".").lower() in (f.lower() for f in fields[1:]):
            found.append(fields[0])
    return found


def resolve_ips(host: str, kind: int = socket.SOCK_STREAM) -> list[str]:
    """Addresses for ``host``, IPv4 first; raises :class:`LookupError_` with Go's reason."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    if not os.environ.get(ROOTFS_ENV):
        return _system(host, kind)
    from_hosts = _hosts(host, container_path("/etc/hosts"))
    if from_hosts:
        return from_hosts
    conf = _ResolvConf.read(container_path("/etc/resolv.conf"))
    for candidate in conf.candidates(host):
        ips: list[str] = []
        for rdtype in ("A", "AAAA"):
            ips.extend(_query(conf.nameservers, candidate, rdtype))
        if ips:
            return ips
    raise LookupError_("no such host")


@dataclass(frozen=True)
class _ResolvConf:
    nameservers: tuple[str, ...]
    search: tuple[str, ...]
    ndots: int

    @classmethod
    def read(cls, path: Path) -> _ResolvConf:
        servers: list[str] = []
        search: list[str] = []
        ndots = 1
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            lines = []
        for line in lines:
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2 and fields[0] == "nameserver":
                servers.append(fields[1])
            elif fields[:1] in (["search"], ["domain"]):
                search = fields[1:]
            elif fields[:1] == ["options"]:
                for opt in fields[1:]:
                    if opt.startswith("ndots:") and opt[6:].isdigit():
                        ndots = min(int(opt[6:]), 15)
        return cls(tuple(servers) or ("127.0.0.1",), tuple(search), ndots)

    def candidates(self, host: str) -> list[str]:
        """Names to try in order, by the resolv.conf rules Go and glibc follow."""
        if host.endswith("."):
            return [host]
        searched = [f"{host}.{domain}." for domain in self.search]
        return [f"{host}.", *searched] if host.count(".") >= self.ndots else [*searched, f"{host}."]


def _query(servers: tuple[str, ...], name: str, rdtype: str, port: int = 53) -> list[str]:
    """Ask each nameserver over a *connected* UDP socket: a REJECTed query (kube-dns without
    endpoints) then fails at once with ECONNREFUSED, as Go's resolver does, instead of waiting."""
    import dns.message
    import dns.rcode
    import dns.rdatatype

    query = dns.message.make_query(name, rdtype)
    last = LookupError_("i/o timeout")
    for server in servers:
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(QUERY_TIMEOUT)
            try:
                sock.connect((server, port))
                sock.send(query.to_wire())
                while True:
                    answer = dns.message.from_wire(sock.recv(65535))
                    if answer.id == query.id:
                        break
            except ConnectionRefusedError:
                local_ip, local_port = sock.getsockname()[:2]
                local = f"{local_ip}:{local_port}"
                last = LookupError_(f"read udp {local}->{server}:{port}: read: connection refused")
                continue
            except (TimeoutError, OSError):
                last = LookupError_("i/o timeout")
                continue
        if answer.rcode() == dns.rcode.NXDOMAIN:
            return []
        want = dns.rdatatype.from_text(rdtype)
        return [item.to_text() for rrset in answer.answer if rrset.rdtype == want for item in rrset]
    raise last


def _system(host: str, kind: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, kind)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
            raise LookupError_("no such host") from None
        if exc.errno == socket.EAI_AGAIN:
            raise LookupError_("i/o timeout") from None
        raise LookupError_("server misbehaving") from None
    ips = [str(info[4][0]) for info in infos]
    return sorted(dict.fromkeys(ips), key=lambda ip: ":" in ip)
