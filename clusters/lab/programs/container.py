"""What a lab program needs to behave like a container: its files and its API credentials.

The lab kubelet gives each container a root directory (env ``KNETCHECK_ROOTFS``) where volumes
appear at their mountPaths, instead of a mount namespace: the programs are ours, so a path map is
enough (a documented lab difference). hostNetwork programs run in the node view and see the
node's files at the real paths, so they get no ``KNETCHECK_ROOTFS``.

In-cluster API access follows the real rules: an explicit kubeconfig file, else
``KUBERNETES_SERVICE_HOST``/``_PORT`` (10.96.0.1:443, through kube-proxy like a real pod). The lab
API speaks plain HTTP, so the URL scheme is ``http`` even on 443.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

ROOTFS_ENV = "KNETCHECK_ROOTFS"


def container_path(path: str | Path) -> Path:
    """``path`` as the container sees it, resolved through its root directory when it has one."""
    root = os.environ.get(ROOTFS_ENV)
    p = Path(path)
    if not root or not p.is_absolute():
        return p
    return Path(root) / p.relative_to("/")


def api_client(kubeconfig: str | None = None) -> Any:
    """A ``kubernetes`` ApiClient for this program: kubeconfig file first, else in-cluster env."""
    from kubernetes import client, config

    if kubeconfig:
        loader: Any = config.new_client_from_config
        return loader(config_file=str(container_path(kubeconfig)))
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise RuntimeError("no kubeconfig and KUBERNETES_SERVICE_HOST is unset: not running in a pod")
    cfg = client.Configuration()
    cfg.host = f"http://{host}:{port}"
    return cast(Any, client.ApiClient(cfg))
