"""A node's own file tree, and the mount view that shows it at the real paths.

Each node keeps ``/etc/cni/net.d``, ``/opt/cni/bin``, ``/var/lib/cni``, ``/var/lib/kube-proxy`` and
``/var/log`` under :meth:`LabLayout.node_fs`. Inside the node view (a private mount namespace)
those directories are bind-mounted over the real paths, so CNI plugins, the CNI agent and a person
in the node shell all read and write the node's files at the paths a kind node has. Paths the host
lacks (``/etc/cni`` on most machines) are never created on the host: the nearest existing parent
(``/etc``) is overlaid instead, with the node tree as an extra lower layer and a throw-away tmpfs
as the upper layer, which only provides the mount points. The bind mounts (not the overlay) carry
all real state, so every process sees the same files at once and inotify works on them.

Knowing differences from a kind node: outside the node directories the node sees the host's
files, and writes there are discarded when the process exits; ``/run`` is the host's (so
``/run/netns`` stays shared, as CNI_NETNS paths need); ``<node_fs>/run`` exists for lab programs
but is not mounted.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
from pathlib import Path, PurePosixPath

from clusters.errors import UsageProblem
from clusters.lab.layout import LabLayout
from clusters.lab.netns import CLONE_NEWNS, unshare

log = logging.getLogger(__name__)

NODE_DIRS: tuple[str, ...] = (
    "/etc/cni/net.d",
    "/opt/cni/bin",
    "/var/lib/cni",
    "/var/lib/kube-proxy",
    "/var/log",
)
"""Directories a node owns; inside the node view they are the node's, not the host's."""
EXTRA_DIRS: tuple[str, ...] = ("/run",)
HOST_PLUGIN_DIR = Path("/usr/lib/cni")
"""Debian's containernetworking-plugins."""
CONF_DIR = "/etc/cni/net.d"
BIN_DIR = "/opt/cni/bin"

MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def node_path(layout: LabLayout, node: str, path: str) -> Path:
    """The host path of the node's ``path`` (an absolute path as seen on the node)."""
    return layout.node_fs(node) / path.lstrip("/")


def scratch_dir(layout: LabLayout, node: str) -> Path:
    """An empty directory the node view mounts its tmpfs on (only inside its own mount namespace)."""
    return layout.node_dir(node) / "mnt"


def create_node_fs(layout: LabLayout, node: str, plugin_dir: Path = HOST_PLUGIN_DIR) -> Path:
    """Create the node tree and copy the plugin binaries in.

    Copies, not links: deleting or chmod-ing a node's ``bridge`` (a classic fault) must leave the
    host's binary and the other nodes alone.
    """
    root = layout.node_fs(node)
    for d in (*NODE_DIRS, *EXTRA_DIRS):
        (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    scratch_dir(layout, node).mkdir(parents=True, exist_ok=True)
    bin_dir = root / BIN_DIR.lstrip("/")
    if not plugin_dir.is_dir():
        raise UsageProblem(
            f"CNI plugin directory {plugin_dir} is missing: install Debian's containernetworking-plugins"
        )
    for src in sorted(plugin_dir.iterdir()):
        dst = bin_dir / src.name
        if src.is_file() and not dst.exists():
            shutil.copy2(src, dst)
    return root


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    def b(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    if _libc.mount(b(source), b(target), b(fstype), ctypes.c_ulong(flags), b(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount({source!r} on {target!r}, {fstype}, {data!r}): {os.strerror(err)}")


def _umount(target: str) -> None:
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount({target}): {os.strerror(err)}")


def overlay_roots(node_dirs: tuple[str, ...] = NODE_DIRS) -> list[str]:
    """Host directories to overlay so every missing node dir has a mount point.

    For each node dir the host lacks, its deepest existing ancestor; ancestors of one another
    collapse to the outermost.
    """
    roots: set[str] = set()
    for d in node_dirs:
        path = PurePosixPath(d)
        if os.path.isdir(path):
            continue
        anc = path.parent
        while not os.path.isdir(anc):
            anc = anc.parent
        if str(anc) == "/":
            raise UsageProblem(f"cannot show {d} on the node: no host parent directory other than / exists")
        roots.add(str(anc))
    return sorted(r for r in roots if not any(r != o and r.startswith(o + "/") for o in roots))


def check_root(root: Path) -> None:
    """A lab root inside a directory the node view overlays cannot work (overlayfs refuses layers
    nested in each other): say so in one line before anything is built."""
    real = root.resolve()
    for parent in overlay_roots():
        if real == Path(parent) or Path(parent) in real.parents:
            raise UsageProblem(
                f"lab root {root} is inside {parent}, which lab nodes overlay: choose a root outside "
                f"{', '.join(overlay_roots())} (default /run/knetcheck-lab, env KNETCHECK_LAB_DIR)"
            )


def enter_node_view(node_fs: Path, scratch: Path, *, remount_sys: bool = True) -> None:
    """Move the calling (single-threaded) process into a private mount namespace with the node view.

    Call after entering the node's network namespace, so the fresh ``/sys`` shows the node's
    interfaces (as ``ip netns exec`` does).
    """
    for p in (node_fs, scratch):
        if any(c in str(p) for c in ":,\n"):
            raise UsageProblem(
                f"lab path {p} contains ':' or ','; overlayfs cannot use it: choose another lab root"
            )
    unshare(CLONE_NEWNS)
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    if remount_sys:
        _umount("/sys")
        _mount("sysfs", "/sys", "sysfs", 0, None)
    roots = overlay_roots()
    if roots:
        _mount("tmpfs", str(scratch), "tmpfs", 0, "mode=0755")
        for i, root in enumerate(roots):
            upper, work = scratch / f"u{i}", scratch / f"w{i}"
            upper.mkdir()
            work.mkdir()
            lower_node = node_fs / root.lstrip("/")
            lower_node.mkdir(parents=True, exist_ok=True)
            opts = f"lowerdir={lower_node}:{root},upperdir={upper},workdir={work}"
            _mount("overlay", root, "overlay", 0, opts)
    for d in NODE_DIRS:
        src = node_fs / d.lstrip("/")
        src.mkdir(parents=True, exist_ok=True)
        _mount(str(src), d, None, MS_BIND, None)
