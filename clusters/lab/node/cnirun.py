"""Run a batch of CNI operations inside a node's context, in one process.

The runtime needs the plugins to run in the node's netns and mount view. Starting the node shell
once per plugin costs a Python start-up each (three per sandbox); this entry point enters the node
once and then runs libcni's logic (:class:`.cni.CniExec`) with the node's paths as real paths.

Protocol: a JSON request on stdin ``{"timeout": s, "stop_on_error": bool, "steps": [{"op": "add" |
"del", "conf": <base64 bytes>, "conflist": bool, "source": str, "att": {...}}]}``; a JSON answer on
stdout ``{"steps": [{"ok": true, "result": {...}} | {"ok": false, "error": "<libcni text>"}]}``.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clusters.lab import layout
from clusters.lab.node.cni import Attachment, CniExec, NetworkList, PluginError, parse_conf, parse_conflist
from clusters.lab.node.shell import enter_node


def step(op: str, net: NetworkList, att: Attachment) -> dict[str, Any]:
    """One request step (the runtime side of the protocol)."""
    return {
        "op": op,
        "conf": base64.b64encode(net.raw).decode(),
        "conflist": net.source.endswith(".conflist") or net.source.startswith("<"),
        "source": net.source,
        "att": {
            "container_id": att.container_id,
            "netns_path": att.netns_path,
            "ifname": att.ifname,
            "cni_args": [list(kv) for kv in att.cni_args],
            "capability_args": dict(att.capability_args),
        },
    }


def run_steps(cni: CniExec, steps: Sequence[Mapping[str, Any]], stop_on_error: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for s in steps:
        raw = base64.b64decode(s["conf"])
        net = parse_conflist(raw, s["source"]) if s["conflist"] else parse_conf(raw, s["source"])
        a = s["att"]
        att = Attachment(
            container_id=a["container_id"],
            netns_path=a["netns_path"],
            ifname=a["ifname"],
            cni_args=tuple((k, v) for k, v in a["cni_args"]),
            capability_args=a["capability_args"],
        )
        try:
            if s["op"] == "add":
                out.append({"ok": True, "result": cni.add(net, att)})
            else:
                cni.delete(net, att)
                out.append({"ok": True, "result": {}})
        except PluginError as exc:
            out.append({"ok": False, "error": str(exc)})
            if stop_on_error:
                break
    return out


def main(args: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clusters.lab.node.cnirun", description=__doc__)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--prefix", default=layout.PREFIX)
    parser.add_argument("node")
    ns = parser.parse_args(args)
    request = json.load(sys.stdin)
    enter_node(ns.root, ns.node, ns.prefix)
    cni = CniExec(Path("/"), lambda argv: list(argv), timeout=float(request["timeout"]))
    answer = {"steps": run_steps(cni, request["steps"], bool(request["stop_on_error"]))}
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
