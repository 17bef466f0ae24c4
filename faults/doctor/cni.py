"""CNI rules: the runbook's "CNI misconfigured / daemonset not running / IP exhaustion" steps.

containerd loads only the lexicographically first file in /etc/cni/net.d and never falls back to
the next one (reference §3.1), so the first file decides: broken → cni-config-invalid; none, or
not the CNI's own → cni-config-missing. The node's Ready condition is the API's side of the same
story (``NetworkPluginNotReady``); sandbox events name the plugin or range that failed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clusters.recipes import ConfRewrite, Ipam
from faults.doctor.snapshot import (
    CNI_BIN_DIR,
    CNI_CONF_DIR,
    Facts,
    Obj,
    labels_of,
    name_of,
    node_ready,
    pod_ready,
)
from faults.findings import Finding, FindingId, Severity

NOT_READY_MARK = "NetworkPluginNotReady"
SANDBOX_FAILED = "FailedCreatePodSandBox"
MISSING_PLUGIN = re.compile(r'failed to find plugin "(?P<type>[^"]+)" in path \[(?P<path>[^\]]*)\]')
RANGE_FULL = re.compile(r"no IP addresses available in range set: ?(?P<range>\S+)|range is full")


@dataclass(frozen=True)
class ConfCheck:
    """The verdict on one conf file, as containerd would load it."""

    error: str | None
    plugin_types: tuple[str, ...] = ()


def check_conf(name: str, text: str) -> ConfCheck:
    """Parse ``text`` the way libcni does (list: name + non-empty plugins, each with a type)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return ConfCheck(f"not valid JSON: {exc}")
    if not isinstance(doc, dict):
        return ConfCheck("not a JSON object")
    if name.endswith(".conflist") or "plugins" in doc:
        if not doc.get("name"):
            return ConfCheck("error parsing configuration list: no name")
        if "plugins" not in doc:
            return ConfCheck("error parsing configuration list: no 'plugins' key")
        plugins = doc.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            return ConfCheck("error parsing configuration list: no plugins in list")
    else:
        plugins = [doc]
    types: list[str] = []
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or not plugin.get("type"):
            return ConfCheck(f"error parsing configuration: plugin {i} missing 'type'")
        types.append(str(plugin["type"]))
        ipam = plugin.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type"):
            types.append(str(ipam["type"]))
    return ConfCheck(None, tuple(dict.fromkeys(types)))


def network_not_ready(node: Obj) -> Obj | None:
    """The node's Ready condition when it says the network plugin is not ready, else None."""
    ready, cond = node_ready(node)
    if ready or NOT_READY_MARK not in str(cond.get("message") or ""):
        return None
    return cond


def agent_daemonset(facts: Facts) -> Obj | None:
    agent = facts.recipe.agent
    return facts.snapshot.find("daemonsets", agent.namespace, agent.daemonset)


def agent_restart_fix(facts: Facts, node: str) -> str:
    """How this CNI puts its conf file back (recipe ``conf_rewrite``, reference §2.5)."""
    agent = facts.recipe.agent
    if facts.recipe.conf_rewrite is ConfRewrite.SELF:
        return (
            f"{facts.recipe.name} re-creates {facts.recipe.conf_file} by itself: wait a few seconds; "
            "if it "
            f"does not, restart its agent: kubectl -n {agent.namespace} delete pod -l {agent.selector} "
            f"--field-selector spec.nodeName={node}"
        )
    return (
        f"{facts.recipe.name} writes {facts.recipe.conf_file} only when its agent pod starts"
        + (" or its inputs change" if facts.recipe.conf_rewrite is ConfRewrite.INPUT_CHANGE else "")
        + f": kubectl -n {agent.namespace} delete pod -l {agent.selector} --field-selector "
        f"spec.nodeName={node}"
    )


def _journal(facts: Facts, node: str) -> list[str]:
    files = facts.node_reads.get(node)
    return [f"kubelet log on {node}: {line.strip()}" for line in (files.kubelet_cni_lines if files else ())]


def config_rules(facts: Facts) -> list[Finding]:
    """cni-config-invalid / cni-config-missing, per node whose network plugin is not ready."""
    out: list[Finding] = []
    installed = agent_daemonset(facts) is not None
    for node in facts.snapshot.nodes:
        cond = network_not_ready(node)
        if cond is None:
            continue
        name = name_of(node)
        evidence = [f"node {name} Ready=False: {cond.get('message')}"]
        files = facts.node_reads.get(name)
        if files is None or files.conf_files is None:
            why = facts.node_reads.why_unavailable or "; ".join(files.errors if files else ())
            out.append(
                Finding(
                    FindingId.CNI_CONFIG_INVALID,
                    f"node/{name}",
                    f"network plugin not initialised on {name}: its CNI config in {CNI_CONF_DIR} is "
                    "invalid or "
                    "missing "
                    f"(API evidence only: {why})",
                    (*evidence, f"no node access ({why}): could not read {CNI_CONF_DIR}"),
                    f"on {name}: ls {CNI_CONF_DIR}; the first file by name must be a valid conflist. "
                    + _repair_hint(facts, name),
                    related=(FindingId.CNI_CONFIG_MISSING.value,),
                )
            )
            continue
        if files.conf_files and files.first_conf is not None:
            first = files.conf_files[0]
            check = check_conf(first, files.first_conf)
            if check.error is not None:
                head = files.first_conf.strip().replace("\n", " ")[:80]
                out.append(
                    Finding(
                        FindingId.CNI_CONFIG_INVALID,
                        f"node/{name}",
                        f"the first CNI config on {name}, {CNI_CONF_DIR}/{first}, does not load: "
                        f"{check.error}",
                        (
                            *evidence,
                            f"{CNI_CONF_DIR} on {name} (containerd uses the first): "
                            f"{', '.join(files.conf_files)}",
                            f"{CNI_CONF_DIR}/{first}: {check.error}; starts with {head!r}",
                            *_journal(facts, name),
                        ),
                        _repair_hint(facts, name, first),
                    )
                )
                continue
        if not installed:
            continue  # no CNI at all: coredns-pending-no-cni / cni-agent-unavailable say so
        conf = facts.recipe.conf_file
        if not files.conf_files or conf not in files.conf_files:
            present = ", ".join(files.conf_files) if files.conf_files else "nothing containerd loads"
            out.append(
                Finding(
                    FindingId.CNI_CONFIG_MISSING,
                    f"node/{name}",
                    f"{CNI_CONF_DIR}/{conf} ({facts.recipe.name}) is missing on {name}",
                    (*evidence, f"{CNI_CONF_DIR} on {name} holds: {present}", *_journal(facts, name)),
                    agent_restart_fix(facts, name),
                )
            )
    return out


def _repair_hint(facts: Facts, node: str, first: str | None = None) -> str:
    target = f"{CNI_CONF_DIR}/{first}" if first else "the broken file"
    return (
        f"repair or remove {target} on {node} (e.g. rm it, or rewrite it with tee/cp). Writing or removing a "
        f"file makes containerd reload; a bare `mv` into {CNI_CONF_DIR} does not (fsnotify Create is "
        "ignored), "
        f"so copy, don't move. If {facts.recipe.conf_file} is missing afterwards: "
        + agent_restart_fix(facts, node)
    )


def binary_rules(facts: Facts) -> list[Finding]:
    """cni-plugin-binary-missing: from sandbox events, and from the first conf's plugin types."""
    missing: dict[tuple[str, str], list[str]] = {}
    for node in facts.snapshot.nodes:
        name = name_of(node)
        files = facts.node_reads.get(name)
        if not files or not files.conf_files or files.first_conf is None or files.bin_files is None:
            continue
        check = check_conf(files.conf_files[0], files.first_conf)
        for plugin in check.plugin_types if check.error is None else ():
            if plugin not in files.bin_files:
                missing.setdefault((name, plugin), []).append(
                    f"{CNI_CONF_DIR}/{files.conf_files[0]} on {name} uses plugin type {plugin!r}; "
                    f"{CNI_BIN_DIR} on {name} has no {plugin}"
                )
    for event, pod in facts.recent_pod_events(SANDBOX_FAILED):
        match = MISSING_PLUGIN.search(str(event.get("message") or ""))
        if not match:
            continue
        where = _event_node(event, pod)
        seen = facts.node_reads.get(where)
        if seen is not None and seen.bin_files is not None and match["type"] in seen.bin_files:
            continue  # reinstalled since
        missing.setdefault((where, match["type"]), []).append(_event_line(event))
    out = []
    for (where, plugin), evidence in sorted(missing.items()):
        agent = facts.recipe.agent
        out.append(
            Finding(
                FindingId.CNI_PLUGIN_BINARY_MISSING,
                f"node/{where}",
                f"CNI plugin binary {plugin!r} is missing from {CNI_BIN_DIR} on {where}: new pods there "
                "get no "
                "sandbox",
                tuple(evidence[:4]),
                f"reinstall the plugin on {where}: restart the CNI agent that installs it (kubectl -n "
                f"{agent.namespace} "
                f"delete pod -l {agent.selector} --field-selector spec.nodeName={where}) or reinstall "
                f"containernetworking-plugins into {CNI_BIN_DIR}",
            )
        )
    return out


def _event_node(event: Obj, pod: Obj | None) -> str:
    node = str(((pod or {}).get("spec") or {}).get("nodeName") or "")
    return node or str((event.get("source") or {}).get("host") or "") or "unknown"


def _event_line(event: Obj) -> str:
    involved = event.get("involvedObject") or {}
    count = int(event.get("count") or 1)
    return (
        f"event {event.get('reason')} on pod {involved.get('namespace')}/{involved.get('name')}"
        + (f" (x{count})" if count > 1 else "")
        + f": {event.get('message')}"
    )


def exhaustion_rules(facts: Facts) -> list[Finding]:
    """pod-cidr-exhausted: the IPAM said the node's range is full."""
    by_node: dict[str, list[Obj]] = {}
    for event, pod in facts.recent_pod_events(SANDBOX_FAILED):
        if RANGE_FULL.search(str(event.get("message") or "")):
            by_node.setdefault(_event_node(event, pod), []).append(event)
    out = []
    for node, events in sorted(by_node.items()):
        obj = facts.snapshot.find("nodes", "", node) or {}
        cidrs = (obj.get("spec") or {}).get("podCIDRs") or [(obj.get("spec") or {}).get("podCIDR")]
        cidr = ", ".join(str(c) for c in cidrs if c) or "unknown"
        match = RANGE_FULL.search(str(events[0].get("message") or ""))
        rng = match["range"] if match and match["range"] else cidr
        fix = (
            "free addresses (delete pods on the node) or give nodes larger pod ranges: "
            "kube-controller-manager --node-cidr-mask-size-ipv4 (smaller mask), then re-create the node"
        )
        if facts.recipe.ipam is Ipam.OWN:
            fix = f"grow {facts.recipe.name}'s IP pool (its own IPAM), or free addresses by deleting pods"
        out.append(
            Finding(
                FindingId.POD_CIDR_EXHAUSTED,
                f"node/{node}",
                f"no pod IPs left on {node}: range {rng} is exhausted ({len(events)} pod(s) waiting for an "
                "IP)",
                (f"node {node} podCIDR {cidr}", *(_event_line(e) for e in events[:3])),
                fix
                + "; also check for leaked host-local reservations under /var/lib/cni/networks/ on the node",
            )
        )
    return out


def selector_labels(selector: str) -> dict[str, str]:
    """``app=lab-cni,tier=node`` -> a dict (recipes use equality selectors only)."""
    pairs = (part.split("=", 1) for part in selector.split(",") if "=" in part)
    return {k.strip(): v.strip() for k, v in pairs}


def _node_matches(node: Obj, node_selector: Mapping[str, Any]) -> bool:
    labels = labels_of(node)
    return all(labels.get(str(k)) == str(v) for k, v in node_selector.items())


def daemonset_gaps(facts: Facts, ds: Obj, pod_labels: Mapping[str, str]) -> list[tuple[str, str]]:
    """(node, why) for every reachable node without a Ready pod of ``ds``."""
    snap = facts.snapshot
    namespace = str((ds.get("metadata") or {}).get("namespace") or "")
    pods = snap.pods_labelled(namespace, pod_labels)
    gaps = []
    for node in snap.nodes:
        name = name_of(node)
        ready, cond = node_ready(node)
        if not ready and cond.get("status") == "Unknown":
            continue  # unreachable node: its pods' state is unknown too (node-partition says so)
        mine = [p for p in pods if ((p.get("spec") or {}).get("nodeName")) == name]
        if any(pod_ready(p) for p in mine):
            continue
        if not mine:
            gaps.append((name, "no pod on this node"))
        else:
            gaps.append((name, "; ".join(f"pod {name_of(p)} {_pod_state(p)}" for p in mine)))
    return gaps


def _pod_state(pod: Obj) -> str:
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        for state, info in (cs.get("state") or {}).items():
            if state != "running" and info:
                return (
                    f"{state} {info.get('reason') or ''}".strip() + f" (restarts {cs.get('restartCount', 0)})"
                )
    return f"{status.get('phase') or 'no phase'}, not Ready"


def agent_rules(facts: Facts, *, no_cni_pending: bool) -> list[Finding]:
    """cni-agent-unavailable: the agent DaemonSet is missing, or some node has no Ready agent pod."""
    agent = facts.recipe.agent
    ds = agent_daemonset(facts)
    subject = f"daemonset/{agent.namespace}/{agent.daemonset}"
    if ds is None:
        if no_cni_pending:
            return []  # coredns-pending-no-cni names the same root cause in the runbook's words
        return [
            Finding(
                FindingId.CNI_AGENT_UNAVAILABLE,
                subject,
                f"the {facts.recipe.name} agent DaemonSet {agent.namespace}/{agent.daemonset} does not exist",
                (f"no DaemonSet {agent.namespace}/{agent.daemonset} in the cluster",),
                f"install {facts.recipe.name} (its manifest or chart), then wait for ds/{agent.daemonset} to "
                "be ready",
            )
        ]
    gaps = daemonset_gaps(facts, ds, selector_labels(agent.selector))
    if not gaps:
        return []
    status = ds.get("status") or {}
    template = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    node_selector = template.get("nodeSelector") or {}
    evidence = [
        f"ds {agent.namespace}/{agent.daemonset}: desired {status.get('desiredNumberScheduled', 0)}, "
        f"current {status.get('currentNumberScheduled', 0)}, ready {status.get('numberReady', 0)}, "
        f"available {status.get('numberAvailable', 0)} for {len(facts.snapshot.nodes)} node(s)",
        *(f"{node}: {why}" for node, why in gaps),
    ]
    fix = (
        f"kubectl -n {agent.namespace} rollout restart ds/{agent.daemonset}; then kubectl -n "
        f"{agent.namespace} "
        f"rollout status ds/{agent.daemonset}"
    )
    unmatched = [name_of(n) for n in facts.snapshot.nodes if not _node_matches(n, node_selector)]
    if node_selector and unmatched:
        evidence.append(
            f"template nodeSelector {json.dumps(node_selector, sort_keys=True)} matches none of: "
            + ", ".join(unmatched)
        )
        bad = [k for k in node_selector if any(str(k) not in labels_of(n) for n in facts.snapshot.nodes)]
        ops = ",".join(
            json.dumps(
                {
                    "op": "remove",
                    "path": "/spec/template/spec/nodeSelector/"
                    + str(k).replace("~", "~0").replace("/", "~1"),
                }
            )
            for k in bad or list(node_selector)
        )
        fix = (
            f"remove the nodeSelector that excludes nodes: kubectl -n {agent.namespace} patch ds "
            f"{agent.daemonset} --type=json -p '[{ops}]'; then kubectl -n {agent.namespace} rollout "
            "status "
            f"ds/{agent.daemonset}"
        )
    return [
        Finding(
            FindingId.CNI_AGENT_UNAVAILABLE,
            subject,
            f"the {facts.recipe.name} agent is not running on {len(gaps)} node(s): "
            + ", ".join(node for node, _ in gaps),
            tuple(evidence),
            fix,
            severity=Severity.CRITICAL,
        )
    ]
