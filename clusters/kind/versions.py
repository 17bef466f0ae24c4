"""The kind release and node image this project is written against (reference §1.1).

Pinned because kind's behaviour changes between releases (kubeadm v1beta4 from v0.32 for
Kubernetes >= 1.36), and node images are built per kind release.
"""

from __future__ import annotations

KIND_VERSION = "v0.32.0"
KIND_DOWNLOAD = "https://github.com/kubernetes-sigs/kind/releases/tag/v0.32.0"
DEFAULT_NODE_IMAGE = (
    "kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5"
)
CLUSTER_PREFIX = "knetcheck-"
CNI_BIN_DIR_ENV = "KNETCHECK_CNI_BIN_DIR"
"""Host dir with the full containernetworking plugin set, mounted over /opt/cni/bin when needed."""
DEFAULT_CNI_BIN_DIR = "/opt/cni/bin"
FULL_CNI_PLUGINS = ("bridge", "host-local", "loopback", "ptp", "portmap")
"""What a dir mounted over the node's /opt/cni/bin must hold: ``bridge`` plus what it hides."""
