"""Listening sockets bound like Go's ``:port``: dual-stack when the namespace has IPv6, else IPv4."""

from __future__ import annotations

import errno
import socket


def _bind(kind: int, host: str, port: int, proto: int = 0) -> socket.socket:
    if host:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, kind, proto)
        addr: tuple[str, int] = (host, port)
    else:
        try:
            sock = socket.socket(socket.AF_INET6, kind, proto)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            addr = ("::", port)
        except OSError:
            sock = socket.socket(socket.AF_INET, kind, proto)
            addr = ("0.0.0.0", port)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if not host and addr[0] == "::" and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            return _bind(kind, "0.0.0.0", port, proto)
        raise
    return sock


def listen_tcp(port: int, host: str = "", proto: int = 0) -> socket.socket:
    sock = _bind(socket.SOCK_STREAM, host, port, proto)
    sock.listen(socket.SOMAXCONN)
    return sock


def bind_udp(port: int, host: str = "") -> socket.socket:
    return _bind(socket.SOCK_DGRAM, host, port)
