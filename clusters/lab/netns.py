"""Entering lab network namespaces from Python without touching the root namespace's routes.

``setns(2)`` on a network namespace affects only the calling thread, and a socket keeps the
namespace it was created in. So the API server reaches a pod by creating a socket on a
short-lived thread that has entered a lab namespace, then using it from anywhere: no route from
the root namespace to lab addresses is ever needed (DESIGN §4, safety).
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
NETNS_DIR = Path("/run/netns")

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def setns(path: Path | str, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace at ``path`` (Python 3.11 has no os.setns)."""
    fd = os.open(str(path), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, nstype) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare({flags:#x}): {os.strerror(err)}")


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def call_in_netns(name: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a fresh thread inside netns ``name`` and return its result.

    The thread dies afterwards, so the namespace switch can never leak into a pooled thread.
    """
    box: dict[str, object] = {}

    def target() -> None:
        try:
            setns(netns_path(name))
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def socket_in_netns(
    name: str, family: int = socket.AF_INET, type_: int = socket.SOCK_STREAM
) -> socket.socket:
    """A new socket that lives in netns ``name``; connect or bind it from any thread."""
    return call_in_netns(name, lambda: socket.socket(family, type_))


def list_netns() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir())
