"""What the API server needs from the node runtime: container logs and connections to pods.

The lab's runtime implements :class:`PodIO` (logs on disk, sockets opened inside the pod's
network namespace); the API server only serves what it is given. :class:`NoPodIO` is the
default when no runtime is attached: no logs, and proxying fails as an unreachable pod does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class PodIO(Protocol):
    def log_path(self, namespace: str, pod: str, container: str) -> Path | None:
        """The running (or last) container instance's log file, or None if there is none.

        A runtime that keeps the previous instance's log may also define
        ``previous_log_path(namespace, pod, container) -> Path | None`` for ``--previous``.
        """
        ...

    async def open_connection(
        self, pod: Mapping[str, Any], port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to ``port`` on the pod's IP, made from inside the lab.

        Raise OSError (e.g. ConnectionRefusedError) when it cannot connect; the server answers
        503 with the real apiserver's ``error trying to reach service`` wording.
        """
        ...


class NoPodIO:
    """The default: no logs, and every connection refused."""

    def log_path(self, namespace: str, pod: str, container: str) -> Path | None:
        return None

    async def open_connection(
        self, pod: Mapping[str, Any], port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        raise ConnectionRefusedError(111, "connect: connection refused")
