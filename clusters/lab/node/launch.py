"""Container launcher: enter a pod's network namespace (or the node's, for hostNetwork) and exec.

``python -m clusters.lab.node.launch --netns <name> [--root <lab root> --node <node>] -- argv…``.
With ``--node`` the process also gets the node view (hostNetwork pods such as kube-proxy and the
CNI agent see the node's ``/etc/cni/net.d`` and ``/var/lib/kube-proxy``). The launcher execs, so
the pid the runtime returns is the container's pid.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from clusters.lab import layout
from clusters.lab.netns import netns_path, setns
from clusters.lab.node.nodefs import enter_node_view, scratch_dir


def main(args: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clusters.lab.node.launch", description=__doc__)
    parser.add_argument("--netns", required=True, help="network namespace name under /run/netns")
    parser.add_argument("--root", type=Path, help="lab root (with --node: enter the node view)")
    parser.add_argument("--node", help="node whose file tree to show at the real paths")
    parser.add_argument("argv", nargs="+")
    ns = parser.parse_args(args)
    path = netns_path(ns.netns)
    if not path.exists():
        raise SystemExit(f"network namespace {path} does not exist")
    setns(path)
    if ns.node:
        lab = layout.LabLayout(ns.root or layout.default_root())
        enter_node_view(lab.node_fs(ns.node), scratch_dir(lab, ns.node))
    argv = list(ns.argv)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        raise SystemExit(f"{argv[0]}: {exc.strerror}") from None


if __name__ == "__main__":
    main()
