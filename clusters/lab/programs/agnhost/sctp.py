"""SCTP, only where the kernel already has it: probing must not autoload a kernel module on the host."""

from __future__ import annotations

import socket

IPPROTO_SCTP = 132


def available() -> bool:
    try:
        with open("/proc/net/protocols", encoding="ascii") as protocols:
            return any(line.startswith("SCTP") for line in protocols)
    except OSError:
        return False


def stream_socket(family: int = socket.AF_INET) -> socket.socket:
    """A one-to-one SCTP socket (what Go's ishidawataru/sctp dials); EPROTONOSUPPORT if absent."""
    if not available():
        raise OSError(93, "Protocol not supported")
    return socket.socket(family, socket.SOCK_STREAM, IPPROTO_SCTP)
