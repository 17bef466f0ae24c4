"""`knetcheck lab …`: bring the embedded lab up and down, look at it, and run commands on nodes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from clusters.errors import KnetcheckError, UsageProblem
from clusters.lab import control, layout
from clusters.recipes import ProviderName, recipe_names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="knetcheck lab", description="the embedded lab cluster")
    parser.add_argument("--root", type=Path, default=layout.default_root(),
                        help="lab state directory (env KNETCHECK_LAB_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the lab (control plane + workers) and wait until it is ready")
    up.add_argument("--nodes", type=int, default=3, help="nodes, control plane included (default 3)")
    up.add_argument("--cni", default="lab", choices=recipe_names(ProviderName.LAB),
                    help="lab CNI mode: lab (host-gw + NetworkPolicy), lab-vxlan (VXLAN + NetworkPolicy), "
                         "lab-nopolicy (VXLAN, no NetworkPolicy, like Flannel)")
    sub.add_parser("down", help="stop the lab and remove every namespace, link, process and file it made")
    sub.add_parser("status", help="say whether the lab runs, and its nodes")
    sub.add_parser("kubeconfig", help="print the lab kubeconfig's path")
    ex = sub.add_parser("exec", help="run a command on a node: lab exec NODE -- CMD…")
    ex.add_argument("node")
    ex.add_argument("argv", nargs=argparse.REMAINDER, help="the command, after --")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    root: Path = ns.root
    try:
        if ns.command == "up":
            if ns.nodes < 1:
                raise UsageProblem(f"--nodes must be at least 1, not {ns.nodes}")
            st = control.up(control.LabConfig(root=root, nodes=ns.nodes, cni=ns.cni))
            print(f"lab up: cni={st.cni}, nodes: {', '.join(st.nodes)}")
            print(f"export KUBECONFIG={st.kubeconfig}")
        elif ns.command == "down":
            was = control.down(root)
            print("lab down" if was else "lab was not running; swept leftovers")
        elif ns.command == "status":
            st = control.status(root)
            if st.running and st.api_url:
                print(f"running (pid {st.pid}): cni={st.cni}, api {st.api_url}, nodes: {', '.join(st.nodes)}")
            else:
                print("not running")
                return 1
        elif ns.command == "kubeconfig":
            st = control.status(root)
            if not st.running:
                raise UsageProblem("the lab is not running: run `knetcheck lab up` first")
            print(st.kubeconfig)
        elif ns.command == "exec":
            args = list(ns.argv)
            if args[:1] == ["--"]:
                args = args[1:]
            if not args:
                raise UsageProblem("lab exec needs a command: knetcheck lab exec NODE -- CMD…")
            st = control.status(root)
            if not st.running:
                raise UsageProblem("the lab is not running: run `knetcheck lab up` first")
            if st.nodes and ns.node not in st.nodes:
                raise UsageProblem(f"unknown node {ns.node!r}; nodes: {', '.join(st.nodes)}")
            from clusters.lab.node.shell import shell_argv

            full = shell_argv(root, ns.node, args, st.prefix)
            os.execv(full[0], full)  # interactive: the node shell takes over this terminal
    except KnetcheckError as exc:
        print(f"knetcheck lab: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
