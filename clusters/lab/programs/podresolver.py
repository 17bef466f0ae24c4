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
from pathlib import Path

from clusters.lab.programs.container import ROOTFS_ENV, container_path


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
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(filename=str(container_path("/etc/resolv.conf")), configure=True)
    resolver.lifetime = 5.0
    ips: list[str] = []
    try:
        for rdtype in ("A", "AAAA"):
            try:
                answer = resolver.resolve(host, rdtype, search=True)
            except dns.resolver.NoAnswer:
                continue
            ips.extend(str(r) for r in answer)
    except dns.resolver.NXDOMAIN:
        raise LookupError_("no such host") from None
    except (dns.exception.Timeout, dns.resolver.NoNameservers):
        raise LookupError_("i/o timeout") from None
    if not ips:
        raise LookupError_("no such host")
    return ips


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
