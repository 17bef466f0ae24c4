"""The node shell: run a command "on" a lab node, like ``docker exec <kind-node> …``.

``python -m clusters.lab.node.shell --root <lab root> <node> -- argv…`` enters the node's network
namespace and the node view (:mod:`clusters.lab.node.nodefs`), then execs ``argv``. The process
never touches the root namespace's routes or the host's ``/etc/cni``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from clusters.lab import layout
from clusters.lab.netns import netns_path, setns
from clusters.lab.node.nodefs import enter_node_view, scratch_dir


def shell_argv(root: Path, node: str, argv: Sequence[str], prefix: str = layout.PREFIX) -> list[str]:
    """The argv that runs ``argv`` on ``node``."""
    extra = [] if prefix == layout.PREFIX else ["--prefix", prefix]
    return [sys.executable, "-m", "clusters.lab.node.shell", "--root", str(root), *extra, node, "--", *argv]


def enter_node(root: Path, node: str, prefix: str = layout.PREFIX) -> None:
    """Enter the node's netns and mount view (the calling process must be single-threaded)."""
    lab = layout.LabLayout(root)
    ns = netns_path(layout.node_netns(node, prefix))
    if not ns.exists():
        raise SystemExit(f"node {node!r}: network namespace {ns} does not exist; is the lab up?")
    node_fs = lab.node_fs(node)
    if not node_fs.is_dir():
        raise SystemExit(f"node {node!r}: file tree {node_fs} does not exist; is the lab root {root} right?")
    setns(ns)
    enter_node_view(node_fs, scratch_dir(lab, node))


def main(args: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clusters.lab.node.shell", description=__doc__)
    parser.add_argument("--root", type=Path, default=layout.default_root(), help="lab root directory")
    parser.add_argument("--prefix", default=layout.PREFIX, help="lab name prefix (tests use their own)")
    parser.add_argument("node")
    parser.add_argument("argv", nargs="+", help="command to run on the node (after --)")
    ns = parser.parse_args(args)
    enter_node(ns.root, ns.node, ns.prefix)
    argv = list(ns.argv)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        raise SystemExit(f"{argv[0]}: {exc.strerror}") from None


if __name__ == "__main__":
    main()
