"""The lab's Kubernetes API subset, served on loopback (see :mod:`clusters.lab.api.server`)."""

from __future__ import annotations

from clusters.lab.api.hooks import NoPodIO, PodIO
from clusters.lab.api.server import RunningApiServer, start_api_server, write_kubeconfig

__all__ = ["NoPodIO", "PodIO", "RunningApiServer", "start_api_server", "write_kubeconfig"]
