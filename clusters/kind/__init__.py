"""The kind provider: one kind cluster per CNI, rendered from the CNI recipe (DESIGN §3)."""

from __future__ import annotations

from clusters.kind.provider import KindProvider
from clusters.kind.versions import DEFAULT_NODE_IMAGE, KIND_VERSION

__all__ = ["DEFAULT_NODE_IMAGE", "KIND_VERSION", "KindProvider"]
