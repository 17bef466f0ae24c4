"""The kind release and node image this project is written against (reference §1.1).

Pinned because kind's behaviour changes between releases (kubeadm v1beta4 from v0.32 for
Kubernetes >= 1.36), and node images are built per kind release.
"""

from __future__ import annotations

from clusters.errors import UsageProblem

KIND_VERSION = "v0.32.0"
KIND_DOWNLOAD = "https://github.com/kubernetes-sigs/kind/releases/tag/v0.32.0"
DEFAULT_NODE_IMAGE = (
    "kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5"
)
NODE_IMAGES = {
    "1.36": DEFAULT_NODE_IMAGE,
    # kind v0.31.0's default; the reference gives no digest for it, so the tag alone.
    "1.35": "kindest/node:v1.35.0",
}
"""Node images by Kubernetes minor version, for --k8s-version (kind builds images per release)."""
CLUSTER_PREFIX = "knetcheck-"
CNI_BIN_DIR_ENV = "KNETCHECK_CNI_BIN_DIR"
"""Host dir with the full containernetworking plugin set, mounted over /opt/cni/bin when needed."""
DEFAULT_CNI_BIN_DIR = "/opt/cni/bin"
FULL_CNI_PLUGINS = ("bridge", "host-local", "loopback", "ptp", "portmap")
"""What a dir mounted over the node's /opt/cni/bin must hold: ``bridge`` plus what it hides."""


def node_image_for(node_image: str | None, k8s_version: str | None) -> str:
    """--node-image wins; else the pinned image of --k8s-version; else kind v0.32's default."""
    if node_image:
        return node_image
    if k8s_version is None:
        return DEFAULT_NODE_IMAGE
    minor = k8s_version.removeprefix("v")
    if minor not in NODE_IMAGES:
        raise UsageProblem(
            f"no pinned kind node image for Kubernetes {k8s_version}; choose --k8s-version "
            f"{' or '.join(sorted(NODE_IMAGES))}, or pass --node-image=kindest/node:vX.Y.Z@sha256:…"
        )
    return NODE_IMAGES[minor]
