"""DNS rules: the runbook's CoreDNS steps, in its order (Pending → no network plugin; CrashLoopBackOff
→ loop; running but kube-dns has no endpoints → selectors/ports), plus "scaled to zero".

Only one DNS root cause is reported at a time: a forwarding loop or zero replicas also leave
kube-dns without endpoints, and saying so twice would send a person to the wrong fix.
"""

from __future__ import annotations

import json
import re

from faults.doctor.cni import network_not_ready
from faults.doctor.snapshot import (
    DNS_DEPLOYMENT,
    DNS_POD_LABEL,
    DNS_SERVICE,
    SYSTEM_NS,
    Facts,
    Obj,
    labels_of,
    name_of,
    pod_ready,
    restarts,
    selects,
)
from faults.findings import Finding, FindingId

LOOP_LINE = re.compile(
    r".*plugin/loop: Loop \(.*\) detected.*|.*Seen \"HINFO IN .*\" more than twice, "
    r"loop detected.*"
)
ROLLOUT = f"kubectl -n {SYSTEM_NS} rollout restart deploy/{DNS_DEPLOYMENT}"


def dns_pods(facts: Facts) -> list[Obj]:
    return facts.snapshot.pods_labelled(SYSTEM_NS, dict([DNS_POD_LABEL]))


def no_cni_pending(facts: Facts) -> bool:
    """CoreDNS is Pending and no node has a working network plugin: the CNI is not installed/running."""
    snap = facts.snapshot
    pending = [p for p in dns_pods(facts) if (p.get("status") or {}).get("phase") == "Pending"]
    return bool(pending) and bool(snap.nodes) and all(network_not_ready(n) is not None for n in snap.nodes)


def pending_rule(facts: Facts) -> list[Finding]:
    if not no_cni_pending(facts):
        return []
    pending = [p for p in dns_pods(facts) if (p.get("status") or {}).get("phase") == "Pending"]
    node = facts.snapshot.nodes[0]
    cond = network_not_ready(node) or {}
    return [
        Finding(
            FindingId.COREDNS_PENDING_NO_CNI,
            f"deployment/{SYSTEM_NS}/{DNS_DEPLOYMENT}",
            f"CoreDNS is Pending because no node has a network plugin ({len(facts.snapshot.nodes)} node(s) "
            "NotReady)",
            (
                f"{len(pending)} coredns pod(s) Pending: " + ", ".join(name_of(p) for p in pending),
                f"node {name_of(node)} Ready=False: {cond.get('message')}",
            ),
            f"install the CNI ({facts.recipe.name}): the runbook's first step for Pending CoreDNS is to "
            "check "
            "that a "
            f"network plugin is installed; once ds/{facts.recipe.agent.daemonset} is ready the nodes turn "
            "Ready",
        )
    ]


def corefile_forward_lines(facts: Facts) -> list[str]:
    cm = facts.snapshot.find("configmaps", SYSTEM_NS, "coredns")
    corefile = str(((cm or {}).get("data") or {}).get("Corefile") or "")
    return [line.strip() for line in corefile.splitlines() if line.strip().startswith(("forward", "proxy"))]


def loop_rule(facts: Facts) -> list[Finding]:
    """coredns-forward-loop: a not-Ready CoreDNS pod whose log has the loop plugin's FATAL line."""
    lines: list[str] = []
    crashing: list[str] = []
    for pod in dns_pods(facts):
        if pod_ready(pod):
            continue
        for container in (pod.get("spec") or {}).get("containers") or []:
            cname = str(container.get("name"))
            for previous in (False, True):
                text = facts.snapshot.log(pod, cname, previous)
                hit = next((m.group(0).strip() for m in LOOP_LINE.finditer(text)), None)
                if hit:
                    where = "previous" if previous else "current"
                    lines.append(f"{name_of(pod)} ({where} log, restarts {restarts(pod)}): {hit}")
                    crashing.append(name_of(pod))
                    break
    if not lines:
        return []
    forward = corefile_forward_lines(facts)
    evidence = [*dict.fromkeys(lines)]
    evidence += [f"ConfigMap {SYSTEM_NS}/coredns Corefile: {line}" for line in forward] or [
        f"ConfigMap {SYSTEM_NS}/coredns Corefile has no forward line"
    ]
    return [
        Finding(
            FindingId.COREDNS_FORWARD_LOOP,
            f"deployment/{SYSTEM_NS}/{DNS_DEPLOYMENT}",
            f"CoreDNS halts on a forwarding loop ({len(set(crashing))} pod(s) crashing): queries it forwards "
            "come back to itself",
            tuple(evidence),
            "point forward at a real upstream resolver, not at CoreDNS itself (127.0.0.1 or the kube-dns "
            "ClusterIP): "
            f"kubectl -n {SYSTEM_NS} edit cm coredns and set `forward . /etc/resolv.conf` (or `forward . "
            "<upstream IP>`); "
            "if the node's resolv.conf points at a local stub (127.0.0.53), set kubelet `resolvConf` to the "
            "real file "
            "(/run/systemd/resolve/resolv.conf) — see https://coredns.io/plugins/loop#troubleshooting; then "
            f"{ROLLOUT}",
        )
    ]


def self_forward_targets(facts: Facts) -> list[str]:
    """Forward targets in the Corefile that lead back to CoreDNS: loopback or the kube-dns
    Service's ClusterIP(s)."""
    svc = facts.snapshot.find("services", SYSTEM_NS, "kube-dns") or {}
    cluster_ips = set((svc.get("spec") or {}).get("clusterIPs") or [(svc.get("spec") or {}).get("clusterIP")])
    found: list[str] = []
    for line in corefile_forward_lines(facts):
        words = line.split()
        for target in words[2:]:
            if target == "{":
                break
            host = (
                target.split("://", 1)[-1].rsplit(":", 1)[0]
                if target.count(":") == 1 or "://" in target
                else target
            )
            if host.startswith("127.") or host == "::1" or host in cluster_ips:
                found.append(line)
                break
    return found


def config_loop_rule(facts: Facts) -> list[Finding]:
    """coredns-forward-loop from the Corefile alone, when the loop plugin did not fire.

    The loop plugin only probes at start: during a rollout its HINFO query can be answered by a
    still-healthy old replica behind the Service, after which it disables itself, and the new pods
    run with a Corefile that forwards to themselves (outside names then time out instead of the
    pods crashing). The config is the evidence then.
    """
    looping = self_forward_targets(facts)
    if not looping:
        return []
    return [
        Finding(
            FindingId.COREDNS_FORWARD_LOOP,
            f"deployment/{SYSTEM_NS}/{DNS_DEPLOYMENT}",
            "the CoreDNS Corefile forwards to CoreDNS itself: names outside the cluster loop until they time "
            "out, and the loop plugin halts CoreDNS on its next clean start",
            tuple(f"ConfigMap {SYSTEM_NS}/coredns Corefile: {line}" for line in looping),
            "point forward at a real upstream resolver, not at CoreDNS itself (127.0.0.1 or the kube-dns "
            f"ClusterIP): kubectl -n {SYSTEM_NS} edit cm coredns and set `forward . /etc/resolv.conf`; then "
            f"{ROLLOUT}",
        )
    ]


def unavailable_rule(facts: Facts, *, explained: bool) -> list[Finding]:
    """coredns-unavailable: scaled to zero, or no available replica for a reason no rule names."""
    dep = facts.snapshot.find("deployments", SYSTEM_NS, DNS_DEPLOYMENT)
    if dep is None:
        return []
    spec_replicas = (dep.get("spec") or {}).get("replicas")
    status = dep.get("status") or {}
    available = int(status.get("availableReplicas") or 0)
    subject = f"deployment/{SYSTEM_NS}/{DNS_DEPLOYMENT}"
    scale = f"kubectl -n {SYSTEM_NS} scale deploy/{DNS_DEPLOYMENT} --replicas=2"
    if spec_replicas == 0:
        return [
            Finding(
                FindingId.COREDNS_UNAVAILABLE,
                subject,
                "CoreDNS is scaled to zero: cluster DNS has no server",
                (
                    f"deployment {SYSTEM_NS}/{DNS_DEPLOYMENT}: spec.replicas 0, available {available}",
                    f"service {SYSTEM_NS}/{DNS_SERVICE} has {_ready_endpoint_count(facts)} ready endpoint(s)",
                ),
                f"{scale} (nothing scales it back by itself: kubeadm applies addons once and kind runs no "
                "addon manager)",
            )
        ]
    if explained or available > 0:
        return []
    pods = dns_pods(facts)
    states = [
        f"pod {name_of(p)}: {(p.get('status') or {}).get('phase')}, restarts {restarts(p)}" for p in pods
    ]
    return [
        Finding(
            FindingId.COREDNS_UNAVAILABLE,
            subject,
            f"CoreDNS has no available replica (spec.replicas {spec_replicas})",
            (f"deployment {SYSTEM_NS}/{DNS_DEPLOYMENT}: available 0 of {spec_replicas}", *states[:5]),
            f"kubectl -n {SYSTEM_NS} describe pods -l k8s-app=kube-dns and kubectl -n {SYSTEM_NS} logs "
            f"-l k8s-app=kube-dns --previous; then {ROLLOUT}",
        )
    ]


def _ready_endpoint_count(facts: Facts) -> int:
    return sum(
        1
        for s in facts.snapshot.slices_of(SYSTEM_NS, DNS_SERVICE)
        for e in s.get("endpoints") or []
        if (e.get("conditions") or {}).get("ready") is not False
    )


def endpoints_rule(facts: Facts) -> list[Finding]:
    """dns-service-no-endpoints: CoreDNS pods are Ready but kube-dns does not select them."""
    svc = facts.snapshot.find("services", SYSTEM_NS, DNS_SERVICE)
    ready = [p for p in dns_pods(facts) if pod_ready(p)]
    if svc is None or not ready:
        return []
    selector = {str(k): str(v) for k, v in ((svc.get("spec") or {}).get("selector") or {}).items()}
    selected = [p for p in ready if selects(selector, labels_of(p))]
    endpoints = _ready_endpoint_count(facts)
    if selected and endpoints:
        return []
    labels = labels_of(ready[0])
    shown = {k: labels[k] for k in sorted(labels) if k != "pod-template-hash"}
    evidence = [
        f"service {SYSTEM_NS}/{DNS_SERVICE} selector {json.dumps(selector, sort_keys=True)}: "
        f"{endpoints} ready endpoint(s) in its EndpointSlices",
        f"{len(ready)} Ready coredns pod(s), e.g. {name_of(ready[0])} labels "
        f"{json.dumps(shown, sort_keys=True)}",
    ]
    if selected:
        fix = (
            "the selector matches but no endpoint is ready: check the Service's ports/targetPort "
            "against the "
            f"pods' (53/UDP, 53/TCP, 9153/TCP): kubectl -n {SYSTEM_NS} get ep,endpointslices -l "
            f"kubernetes.io/service-name={DNS_SERVICE}"
        )
    else:
        fix = (
            "restore the selector k8s-app: kube-dns: kubectl -n kube-system patch svc kube-dns "
            "--type=json "
            '-p \'[{"op":"replace","path":"/spec/selector","value":{"k8s-app":"kube-dns"}}]\''
        )
    return [
        Finding(
            FindingId.DNS_SERVICE_NO_ENDPOINTS,
            f"service/{SYSTEM_NS}/{DNS_SERVICE}",
            f"kube-dns has no ready endpoints although {len(ready)} CoreDNS pod(s) are Ready"
            + ("" if selected else ": its selector does not match them"),
            tuple(evidence),
            fix,
        )
    ]


def rules(facts: Facts) -> list[Finding]:
    pending = pending_rule(facts)
    loop = loop_rule(facts) or config_loop_rule(facts)
    out = pending + loop
    out += unavailable_rule(facts, explained=bool(out))
    if not out:
        out += endpoints_rule(facts)
    return out
