"""What the lab needs from the machine, checked before anything is created.

Each missing piece is one line naming the Debian package to install, so a new user on a fresh
machine learns the fix without reading a traceback, and nothing is left half-built.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from clusters.errors import ClusterUnavailable

CNI_PLUGIN_DIR = Path("/usr/lib/cni")
NEEDED_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
NEEDED_TOOLS = {"ip": "iproute2", "iptables": "iptables", "nft": "nftables"}


def problems() -> list[str]:
    """Every reason the lab cannot run here, each one line with its fix; empty when it can."""
    found: list[str] = []
    if os.geteuid() != 0:
        found.append("the embedded lab needs root (it creates network namespaces): run as root, "
                     "or use --cluster=kind / --cluster=existing")
    for tool, package in NEEDED_TOOLS.items():
        if shutil.which(tool) is None:
            found.append(f"the lab needs `{tool}`: apt-get install {package}")
    missing = [p for p in NEEDED_PLUGINS if not (CNI_PLUGIN_DIR / p).exists()]
    if missing:
        found.append(f"the lab needs the CNI plugins {', '.join(missing)} in {CNI_PLUGIN_DIR}: "
                     "apt-get install containernetworking-plugins")
    return found


def require() -> None:
    """Raise one :class:`ClusterUnavailable` line for the first problem (they are ordered)."""
    found = problems()
    if found:
        raise ClusterUnavailable(found[0])
