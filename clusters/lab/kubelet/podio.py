"""Container logs on the node and connections into pods, for the API server (its ``PodIO`` hook).

Logs live where a kind node keeps them, in the node's own tree:
``/var/log/pods/<ns>_<pod>_<uid>/<container>/<restart>.log``, one file per container instance,
so ``kubectl logs --previous`` reads the instance before the current one; plus the
``/var/log/containers/<pod>_<ns>_<container>-<id>.log`` symlinks. The API server reaches a pod
with a socket created inside the control-plane node's namespace (the root namespace has no
route to pod IPs, DESIGN §4 safety), connected without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clusters.lab.layout import LabLayout
from clusters.lab.netns import socket_in_netns

POD_LOG_DIR = "var/log/pods"
CONTAINER_LOG_DIR = "var/log/containers"


def pod_log_dir(layout: LabLayout, node: str, namespace: str, pod: str, uid: str) -> Path:
    return layout.node_fs(node) / POD_LOG_DIR / f"{namespace}_{pod}_{uid}"


def container_log_path(
    layout: LabLayout, node: str, namespace: str, pod: str, uid: str, container: str, restart: int
) -> Path:
    return pod_log_dir(layout, node, namespace, pod, uid) / container / f"{restart}.log"


def link_container_log(
    layout: LabLayout, node: str, namespace: str, pod: str, container: str, container_id: str, target: Path
) -> None:
    """The ``/var/log/containers`` symlink, relative so it resolves on the node too."""
    links = layout.node_fs(node) / CONTAINER_LOG_DIR
    links.mkdir(parents=True, exist_ok=True)
    link = links / f"{pod}_{namespace}_{container}-{container_id}.log"
    rel = Path("..") / "pods" / target.relative_to(layout.node_fs(node) / POD_LOG_DIR)
    if link.is_symlink():
        link.unlink()
    link.symlink_to(rel)


def remove_pod_logs(layout: LabLayout, node: str, namespace: str, pod: str, uid: str) -> None:
    shutil.rmtree(pod_log_dir(layout, node, namespace, pod, uid), ignore_errors=True)
    links = layout.node_fs(node) / CONTAINER_LOG_DIR
    if links.is_dir():
        for link in links.glob(f"{pod}_{namespace}_*.log"):
            if link.is_symlink() and not link.exists():
                link.unlink()


def _instances(layout: LabLayout, namespace: str, pod: str, container: str) -> list[Path]:
    """Log files of the newest pod with this name (any node), oldest instance first.

    Names cannot hold ``_`` (DNS labels), so ``<ns>_<pod>_*`` matches this pod only."""
    dirs = sorted(
        (d for d in layout.root.glob(f"nodes/*/fs/{POD_LOG_DIR}/{namespace}_{pod}_*") if d.is_dir()),
        key=lambda d: d.stat().st_mtime,
    )
    if not dirs:
        return []
    files = [f for f in (dirs[-1] / container).glob("*.log") if f.stem.isdigit()]
    return sorted(files, key=lambda f: int(f.stem))


class LabPodIO:
    """The API server's :class:`clusters.lab.api.hooks.PodIO` for a lab."""

    def __init__(self, layout: LabLayout, netns: str, *, connect_timeout: float = 10.0) -> None:
        self.layout = layout
        self.netns = netns
        """The namespace connections start from: the control-plane node's, as on kind."""
        self.connect_timeout = connect_timeout

    def log_path(self, namespace: str, pod: str, container: str) -> Path | None:
        files = _instances(self.layout, namespace, pod, container)
        return files[-1] if files else None

    def previous_log_path(self, namespace: str, pod: str, container: str) -> Path | None:
        files = _instances(self.layout, namespace, pod, container)
        return files[-2] if len(files) > 1 else None

    async def open_connection(
        self, pod: Mapping[str, Any], port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        ip = str((pod.get("status") or {}).get("podIP") or "")
        if not ip:
            raise ConnectionRefusedError(111, "pod has no IP address")
        loop = asyncio.get_running_loop()
        sock = await loop.run_in_executor(None, socket_in_netns, self.netns)
        try:
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), self.connect_timeout)
        except TimeoutError:
            sock.close()
            raise TimeoutError(110, f"dial tcp {ip}:{port}: i/o timeout") from None
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)
