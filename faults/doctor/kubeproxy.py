"""kube-proxy rules: the runbook's "running? logs? configmap? kubeconfig?" steps.

The trap (reference §3.3): kube-proxy never re-reads an edited ConfigMap, so a bad ``config.conf``
is latent until the next restart, and a crashing kube-proxy keeps the node's last rules. Hence a
crash with ``"command failed"`` is critical, and a ConfigMap that would fail validation while the
pods still run is a warning: the next restart will crash.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import yaml

from clusters.recipes import Ipam
from faults.doctor.cni import daemonset_gaps
from faults.doctor.snapshot import (
    PROXY_CONFIGMAP,
    PROXY_DAEMONSET,
    PROXY_POD_LABEL,
    SYSTEM_NS,
    Facts,
    Obj,
    name_of,
    pod_ready,
    restarts,
)
from faults.findings import Finding, FindingId, Severity

MODES = ("", "iptables", "ipvs", "nftables")
COMMAND_FAILED = re.compile(r'.*"command failed" err=.*')
ROLLOUT = f"kubectl -n {SYSTEM_NS} rollout restart ds/{PROXY_DAEMONSET}"
EDIT = f"kubectl -n {SYSTEM_NS} edit cm {PROXY_CONFIGMAP}"
CONFIG_KEY = "config.conf"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ConfigProblem:
    key: str
    """The offending key of config.conf (``mode``, ``clusterCIDR``, ``clientConnection.kubeconfig``)."""
    detail: str


def _config_text(facts: Facts) -> str | None:
    cm = facts.snapshot.find("configmaps", SYSTEM_NS, PROXY_CONFIGMAP)
    if cm is None:
        return None
    return str((cm.get("data") or {}).get(CONFIG_KEY) or "")


def parse_cidrs(value: str) -> list[Network]:
    """``clusterCIDR`` (comma-separated for dual-stack); raises ValueError on a bad entry."""
    return [ipaddress.ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip()]


def validate(text: str, mounts: Mapping[str, Collection[str] | None]) -> list[ConfigProblem]:
    """What kube-proxy's decode/validation would reject (reference §3.3's table), by key.

    ``mounts`` maps the kube-proxy container's mount paths to the keys of the ConfigMap mounted
    there (None: not a ConfigMap, contents unknown), so a kubeconfig path can be checked too.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [ConfigProblem("(document)", f"invalid YAML: {' '.join(str(exc).split())}")]
    if not isinstance(doc, dict):
        return [ConfigProblem("(document)", "config.conf is not a YAML mapping")]
    problems = []
    mode = doc.get("mode")
    if mode is not None and str(mode) not in MODES:
        problems.append(ConfigProblem("mode", f"mode: {mode}: must be iptables, ipvs, nftables or blank"))
    cidr = doc.get("clusterCIDR")
    if cidr:
        try:
            parse_cidrs(str(cidr))
        except ValueError:
            problems.append(ConfigProblem("clusterCIDR", f"clusterCIDR: {cidr}: must be a valid CIDR block"))
    connection = doc.get("clientConnection")
    kubeconfig = str((connection if isinstance(connection, dict) else {}).get("kubeconfig") or "")
    if kubeconfig and mounts:
        problem = _kubeconfig_problem(kubeconfig, mounts)
        if problem:
            problems.append(
                ConfigProblem(
                    "clientConnection.kubeconfig", f"clientConnection.kubeconfig: {kubeconfig}: {problem}"
                )
            )
    return problems


def _kubeconfig_problem(path: str, mounts: Mapping[str, Collection[str] | None]) -> str | None:
    for mount, keys in mounts.items():
        base = mount.rstrip("/") + "/"
        if path.startswith(base):
            if keys is not None and path[len(base) :] not in keys:
                return f"the ConfigMap mounted at {mount} has no key {path[len(base) :]}"
            return None
    return "no volume of the kube-proxy container holds it (" + ", ".join(sorted(mounts)) + ")"


def _mounts(ds: Obj | None, facts: Facts) -> dict[str, Collection[str] | None]:
    """The kube-proxy container's mount paths, with the keys of ConfigMaps mounted there."""
    spec = (((ds or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    volumes = {str(v.get("name")): v for v in spec.get("volumes") or []}
    out: dict[str, Collection[str] | None] = {}
    for container in spec.get("containers") or []:
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(str(mount.get("name"))) or {}
            cm_name = (volume.get("configMap") or {}).get("name")
            cm = facts.snapshot.find("configmaps", SYSTEM_NS, str(cm_name)) if cm_name else None
            out[str(mount.get("mountPath"))] = None if cm is None else tuple(cm.get("data") or {})
    return out


def _proxy_pods(facts: Facts) -> list[Obj]:
    return facts.snapshot.pods_labelled(SYSTEM_NS, dict([PROXY_POD_LABEL]))


def _failed_lines(facts: Facts) -> list[tuple[Obj, str]]:
    """(pod, ``command failed`` line) for kube-proxy pods that are not Ready."""
    found = []
    for pod in _proxy_pods(facts):
        if pod_ready(pod):
            continue
        for container in (pod.get("spec") or {}).get("containers") or []:
            for previous in (False, True):
                text = facts.snapshot.log(pod, str(container.get("name")), previous)
                hits = COMMAND_FAILED.findall(text)
                if hits:
                    found.append((pod, hits[-1].strip()))
                    break
    return found


def _log_evidence(failed: list[tuple[Obj, str]]) -> list[str]:
    """One line per distinct error (klog's header stripped), naming the pods that logged it."""
    by_error: dict[str, list[str]] = {}
    for pod, line in failed:
        error = line[line.index('"command failed"'):]
        by_error.setdefault(error, []).append(f"{name_of(pod)} (restarts {restarts(pod)})")
    return [f"pod {', '.join(pods[:3])}{' …' if len(pods) > 3 else ''}: {error}"
            for error, pods in by_error.items()]


def config_rules(facts: Facts) -> list[Finding]:
    """kube-proxy-config-invalid: crashing on its config (critical), or a latent bad ConfigMap (warning)."""
    text = _config_text(facts)
    ds = facts.snapshot.find("daemonsets", SYSTEM_NS, PROXY_DAEMONSET)
    problems = [] if text is None else validate(text, _mounts(ds, facts))
    cm_evidence = [f"ConfigMap {SYSTEM_NS}/{PROXY_CONFIGMAP} {CONFIG_KEY}: {p.detail}" for p in problems]
    subject = f"daemonset/{SYSTEM_NS}/{PROXY_DAEMONSET}"
    failed = _failed_lines(facts)
    if failed:
        keys = ", ".join(dict.fromkeys(p.key for p in problems)) or "the key named in the error"
        return [
            Finding(
                FindingId.KUBE_PROXY_CONFIG_INVALID,
                subject,
                f"kube-proxy exits on its configuration on {len(failed)} node(s): Services are no longer "
                "programmed "
                "there (the last rules stay, so new Services and endpoint changes are missed)",
                tuple(_log_evidence(failed) + cm_evidence),
                f"correct {keys} in {CONFIG_KEY}: {EDIT}; then {ROLLOUT} (kube-proxy never re-reads an "
                "edited "
                "ConfigMap)",
            )
        ]
    running = [p for p in _proxy_pods(facts) if pod_ready(p)]
    if problems and running:
        keys = ", ".join(dict.fromkeys(p.key for p in problems))
        return [
            Finding(
                FindingId.KUBE_PROXY_CONFIG_INVALID,
                f"configmap/{SYSTEM_NS}/{PROXY_CONFIGMAP}",
                f"the kube-proxy ConfigMap is invalid ({keys}) while {len(running)} kube-proxy pod(s) still "
                "run on the "
                "old config: the next kube-proxy restart will crash",
                (
                    *cm_evidence,
                    f"{len(running)} kube-proxy pod(s) Ready (started before the edit; kube-proxy "
                    "ignores "
                    "ConfigMap changes until restarted)",
                ),
                f"correct {keys} in {CONFIG_KEY} before anything restarts kube-proxy: {EDIT}; then {ROLLOUT}",
                severity=Severity.WARNING,
            )
        ]
    return []


def cidr_rule(facts: Facts) -> list[Finding]:
    """kube-proxy-cluster-cidr-mismatch: pods outside clusterCIDR are not "local" → their Service
    traffic is masqueraded and backends see the node IP."""
    text = _config_text(facts)
    if not text:
        return []
    try:
        doc = yaml.safe_load(text)
        value = str((doc or {}).get("clusterCIDR") or "") if isinstance(doc, dict) else ""
        cidrs = parse_cidrs(value)
    except (yaml.YAMLError, ValueError):
        return []  # kube-proxy-config-invalid says so
    if not cidrs:
        return []
    outside: list[str] = []
    if facts.recipe.ipam is Ipam.NODE_PODCIDR:
        for node in facts.snapshot.nodes:
            spec = node.get("spec") or {}
            for raw in spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []):
                net = ipaddress.ip_network(str(raw), strict=False)
                same = [c for c in cidrs if c.version == net.version]
                if same and not any(net.subnet_of(c) for c in same):  # type: ignore[arg-type]
                    outside.append(f"node {name_of(node)} podCIDR {raw}")
    else:
        for pod in facts.snapshot.pods:
            if (pod.get("spec") or {}).get("hostNetwork") or not (pod.get("status") or {}).get("podIP"):
                continue
            ip = ipaddress.ip_address(str(pod["status"]["podIP"]))
            same = [c for c in cidrs if c.version == ip.version]
            if same and not any(ip in c for c in same):
                outside.append(f"pod {name_of(pod)} IP {ip}")
    if not outside:
        return []
    return [
        Finding(
            FindingId.KUBE_PROXY_CLUSTER_CIDR_MISMATCH,
            f"configmap/{SYSTEM_NS}/{PROXY_CONFIGMAP}",
            f"kube-proxy clusterCIDR {value} does not contain the pod network: pod→Service traffic is "
            "masqueraded "
            "(backends see the node IP, not the client pod's)",
            (f"ConfigMap {SYSTEM_NS}/{PROXY_CONFIGMAP} {CONFIG_KEY}: clusterCIDR: {value}", *outside[:4]),
            f"set clusterCIDR to the cluster's pod subnet: {EDIT}; then {ROLLOUT}",
            severity=Severity.WARNING,
        )
    ]


def unavailable_rule(facts: Facts, *, config_crash: bool) -> list[Finding]:
    """kube-proxy-unavailable: some node has no Ready kube-proxy pod, and no config error explains it."""
    ds = facts.snapshot.find("daemonsets", SYSTEM_NS, PROXY_DAEMONSET)
    if ds is None or config_crash:
        return []  # no kube-proxy DaemonSet: a kube-proxy-free cluster (e.g. Cilium KPR), not a fault
    gaps = daemonset_gaps(facts, ds, dict([PROXY_POD_LABEL]))
    if not gaps:
        return []
    status = ds.get("status") or {}
    node_selector = (((ds.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "nodeSelector"
    ) or {}
    return [
        Finding(
            FindingId.KUBE_PROXY_UNAVAILABLE,
            f"daemonset/{SYSTEM_NS}/{PROXY_DAEMONSET}",
            f"kube-proxy is not running on {len(gaps)} node(s): " + ", ".join(n for n, _ in gaps),
            (
                f"ds {SYSTEM_NS}/{PROXY_DAEMONSET}: desired {status.get('desiredNumberScheduled', 0)}, ready "
                f"{status.get('numberReady', 0)}, nodeSelector {node_selector or '{}'}",
                *(f"{node}: {why}" for node, why in gaps),
            ),
            f"check its logs (kubectl -n {SYSTEM_NS} logs ds/{PROXY_DAEMONSET} --previous) and restart it: "
            f"{ROLLOUT}",
        )
    ]


def rules(facts: Facts) -> list[Finding]:
    config = config_rules(facts)
    crash = any(f.severity is Severity.CRITICAL for f in config)
    return config + cidr_rule(facts) + unavailable_rule(facts, config_crash=crash)
