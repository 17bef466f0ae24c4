"""The doctor's rules on fixture snapshots shaped like the real API's JSON (no cluster, no root).

A healthy kind-like cluster (kindnet, kubeadm's CoreDNS and kube-proxy, one ingress) yields no
finding; each fault snapshot yields exactly its own finding id(s): a confusion matrix, so a rule that
fires on another fault's symptoms fails here.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clusters.recipes import load_recipe
from faults.doctor import cni, evaluate, kubeproxy
from faults.doctor.cli import main as doctor_main
from faults.doctor.nodes import ProbeOutcome, analyse
from faults.doctor.render import NO_FINDINGS, as_json, text
from faults.doctor.snapshot import Facts, NodeFiles, NodeReads, Snapshot, log_key, parse_ls
from faults.findings import Finding, FindingId, Severity
from suites.verdict import ProbeResult, Verdict

REFERENCE = Path("/work/shared/reference/configs")
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
OLD = "2026-11-23T10:00:00Z"
RECENT = "2026-11-23T11:59:30Z"
NODES = ("kind-control-plane", "kind-worker", "kind-worker2")
IPS = ("172.18.0.2", "172.18.0.3", "172.18.0.4")
CIDRS = ("10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24")
NOT_READY_MSG = (
    "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
    "message:Network plugin returns error: cni plugin not initialized"
)
LOOP_FATAL = (
    '[FATAL] plugin/loop: Loop (127.0.0.1:55953 -> :53) detected for zone ".", see '
    'https://coredns.io/plugins/loop#troubleshooting. Query: "HINFO '
    '4547991504243258144.3688648895315093531."'
)
KINDNET_CONF = """{
  "cniVersion": "0.4.0", "name": "kindnet",
  "plugins": [
    {"type": "ptp", "ipMasq": false, "ipam": {"type": "host-local", "dataDir": "/run/cni-ipam-state",
     "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "%s"}]]}, "mtu": 1500},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}"""
BINS = ("bridge", "host-local", "loopback", "portmap", "ptp")
COREFILE = (
    (REFERENCE / "dns" / "Corefile.kubeadm").read_text()
    if REFERENCE.exists()
    else """.:53 {
    errors
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    loop
}
"""
)
PROXY_CONF = (
    (REFERENCE / "kube-proxy" / "config.conf.kind").read_text()
    if REFERENCE.exists()
    else (
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: iptables\n"
        "clusterCIDR: 10.244.0.0/16\nclientConnection:\n  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\n"
    )
)
GOOD_PEM = "-----BEGIN CERTIFICATE-----\nGOOD\n-----END CERTIFICATE-----\n"
EXPIRED_PEM = "-----BEGIN CERTIFICATE-----\nEXPIRED\n-----END CERTIFICATE-----\n"
SOON_PEM = "-----BEGIN CERTIFICATE-----\nSOON\n-----END CERTIFICATE-----\n"

J = dict[str, Any]


# ---- builders: objects as the API returns them ---------------------------------------------------


def meta(name: str, namespace: str = "", labels: J | None = None, **extra: Any) -> J:
    m: J = {"name": name, "creationTimestamp": OLD, **extra}
    if namespace:
        m["namespace"] = namespace
    if labels:
        m["labels"] = labels
    return m


def node(i: int) -> J:
    taints = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}] if i == 0 else []
    return {
        "metadata": meta(NODES[i], labels={"kubernetes.io/hostname": NODES[i], "kubernetes.io/os": "linux"}),
        "spec": {"podCIDR": CIDRS[i], "podCIDRs": [CIDRS[i]], **({"taints": taints} if taints else {})},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": IPS[i]},
                {"type": "Hostname", "address": NODES[i]},
            ],
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastTransitionTime": OLD,
                },
            ],
        },
    }


def pod(
    name: str,
    namespace: str,
    labels: J,
    node_i: int,
    ip: str,
    *,
    ready: bool = True,
    container: str = "main",
    host_network: bool = False,
    restarts: int = 0,
) -> J:
    state: J = (
        {"running": {"startedAt": OLD}}
        if ready
        else {
            "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}
        }
    )
    return {
        "metadata": meta(name, namespace, labels),
        "spec": {
            "nodeName": NODES[node_i],
            "containers": [{"name": container, "image": "x"}],
            **({"hostNetwork": True} if host_network else {}),
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "hostIP": IPS[node_i],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {"name": container, "ready": ready, "restartCount": restarts, "state": state}
            ],
        },
    }


def daemonset(name: str, labels: J, n: int = 3, node_selector: J | None = None, volumes: bool = False) -> J:
    spec: J = {"containers": [{"name": name, "image": "x"}]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    if volumes:
        spec["volumes"] = [{"name": "kube-proxy", "configMap": {"name": "kube-proxy"}}]
        spec["containers"][0]["volumeMounts"] = [{"name": "kube-proxy", "mountPath": "/var/lib/kube-proxy"}]
    return {
        "metadata": meta(name, "kube-system", labels),
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
        "status": {
            "desiredNumberScheduled": n,
            "currentNumberScheduled": n,
            "numberReady": n,
            "numberAvailable": n,
        },
    }


def endpointslice(namespace: str, service: str, ips: list[str], ready: bool = True) -> J:
    return {
        "metadata": meta(f"{service}-abcde", namespace, {"kubernetes.io/service-name": service}),
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip in ips],
    }


def healthy() -> J:
    """A healthy 3-node kind cluster with kindnet, as plain JSON, plus its node reads."""
    dns_labels = {"k8s-app": "kube-dns", "pod-template-hash": "674b8bbfcf"}
    pods = [
        pod("coredns-674b8bbfcf-aaaaa", "kube-system", dns_labels, 0, "10.244.0.2", container="coredns"),
        pod("coredns-674b8bbfcf-bbbbb", "kube-system", dns_labels, 0, "10.244.0.3", container="coredns"),
        pod("web-1", "shop", {"app": "web"}, 1, "10.244.1.5"),
    ]
    for i in range(3):
        pods.append(
            pod(
                f"kube-proxy-{i}",
                "kube-system",
                {"k8s-app": "kube-proxy"},
                i,
                IPS[i],
                container="kube-proxy",
                host_network=True,
            )
        )
        pods.append(
            pod(
                f"kindnet-{i}",
                "kube-system",
                {"app": "kindnet"},
                i,
                IPS[i],
                container="kindnet-cni",
                host_network=True,
            )
        )
    routes = {
        NODES[i]: [
            "default via 172.18.0.1 dev eth0",
            "172.18.0.0/16 dev eth0 proto kernel scope link src " + IPS[i],
        ]
        + [f"{CIDRS[j]} via {IPS[j]} dev eth0" for j in range(3) if j != i]
        for i in range(3)
    }
    return {
        "nodes": [node(i) for i in range(3)],
        "pods": pods,
        "events": [
            # noise every healthy cluster has: readiness probes during start-up, old scheduling waits
            {
                "metadata": meta("coredns.1", "kube-system"),
                "reason": "Unhealthy",
                "type": "Warning",
                "involvedObject": {
                    "kind": "Pod",
                    "namespace": "kube-system",
                    "name": "coredns-674b8bbfcf-aaaaa",
                },
                "message": "Readiness probe failed: HTTP probe failed with statuscode: 503",
                "lastTimestamp": RECENT,
            },
            {
                "metadata": meta("old.1", "shop"),
                "reason": "FailedCreatePodSandBox",
                "type": "Warning",
                "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "web-1"},
                "message": 'failed to find plugin "portmap" in path [/opt/cni/bin]',
                "lastTimestamp": OLD,
            },
        ],
        "daemonsets": [
            daemonset("kube-proxy", {"k8s-app": "kube-proxy"}, volumes=True),
            daemonset("kindnet", {"app": "kindnet"}),
        ],
        "deployments": [
            {
                "metadata": meta("coredns", "kube-system", {"k8s-app": "kube-dns"}),
                "spec": {"replicas": 2},
                "status": {"replicas": 2, "readyReplicas": 2, "availableReplicas": 2},
            }
        ],
        "services": [
            {
                "metadata": meta("kube-dns", "kube-system", {"k8s-app": "kube-dns"}),
                "spec": {
                    "selector": {"k8s-app": "kube-dns"},
                    "clusterIP": "10.96.0.10",
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP"},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                    ],
                },
            },
            {"metadata": meta("web", "shop"), "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}},
        ],
        "endpointslices": [
            endpointslice("kube-system", "kube-dns", ["10.244.0.2", "10.244.0.3"]),
            endpointslice("shop", "web", ["10.244.1.5"]),
        ],
        "configmaps": [
            {"metadata": meta("coredns", "kube-system"), "data": {"Corefile": COREFILE}},
            {
                "metadata": meta("kube-proxy", "kube-system"),
                "data": {"config.conf": PROXY_CONF, "kubeconfig.conf": "apiVersion: v1\nkind: Config\n"},
            },
        ],
        "ingresses": [
            {
                "metadata": meta("shop", "shop"),
                "spec": {
                    "ingressClassName": "nginx",
                    "tls": [{"hosts": ["shop.example"], "secretName": "shop-tls"}],
                    "rules": [
                        {
                            "host": "shop.example",
                            "http": {
                                "paths": [
                                    {
                                        "path": "/",
                                        "pathType": "Prefix",
                                        "backend": {"service": {"name": "web", "port": {"number": 80}}},
                                    }
                                ]
                            },
                        }
                    ],
                },
                "status": {"loadBalancer": {"ingress": [{"ip": "172.18.0.2"}]}},
            }
        ],
        "ingressclasses": [{"metadata": meta("nginx"), "spec": {"controller": "k8s.io/ingress-nginx"}}],
        "secrets": [
            {
                "metadata": meta("shop-tls", "shop"),
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": _b64(GOOD_PEM), "tls.key": _b64("key")},
            }
        ],
        "logs": {},
        "node_reads": {
            NODES[i]: {
                "conf_files": ["10-kindnet.conflist"],
                "first_conf": KINDNET_CONF % CIDRS[i],
                "bin_files": list(BINS),
                "routes": routes[NODES[i]],
            }
            for i in range(3)
        },
    }


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def fake_enddate(pem: str) -> datetime | None:
    return {
        GOOD_PEM: NOW + timedelta(days=300),
        EXPIRED_PEM: NOW - timedelta(days=2),
        SOON_PEM: NOW + timedelta(days=3),
    }.get(pem)


def facts_of(doc: J, *, node_access: bool = True, recipe: str = "kindnet") -> Facts:
    snap = Snapshot(
        now=NOW,
        **{
            k: tuple(doc[k])
            for k in (
                "nodes",
                "pods",
                "events",
                "daemonsets",
                "deployments",
                "services",
                "endpointslices",
                "configmaps",
                "ingresses",
                "ingressclasses",
                "secrets",
            )
        },
        logs=dict(doc["logs"]),
    )
    reads = {
        name: NodeFiles(
            conf_files=tuple(r["conf_files"]) if r.get("conf_files") is not None else None,
            first_conf=r.get("first_conf"),
            bin_files=tuple(r["bin_files"]) if r.get("bin_files") is not None else None,
            routes=tuple(r["routes"]) if r.get("routes") is not None else None,
            kubelet_cni_lines=tuple(r.get("kubelet", ())),
            uplink=("eth0", r.get("eth0_mtu", 1500)),
        )
        for name, r in doc["node_reads"].items()
    }
    node_reads = (
        NodeReads(True, reads) if node_access else NodeReads(False, {}, "cni=kindnet lacks node-access")
    )
    return Facts(snap, node_reads, load_recipe(recipe))


def run_rules(doc: J, **kw: Any) -> list[Finding]:
    return evaluate(facts_of(doc, **kw), enddate=fake_enddate)


def find(doc: J, kind: str, name: str, namespace: str = "kube-system") -> J:
    for obj in doc[kind]:
        if obj["metadata"]["name"] == name and obj["metadata"].get("namespace", "") == namespace:
            return obj  # type: ignore[no-any-return]
    raise KeyError(name)


def not_ready(n: J, message: str = NOT_READY_MSG) -> None:
    n["status"]["conditions"][-1].update(status="False", reason="KubeletNotReady", message=message)


def crash(p: J, restarts: int = 4) -> None:
    p["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    cs = p["status"]["containerStatuses"][0]
    cs.update(
        ready=False,
        restartCount=restarts,
        state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}},
    )


def sandbox_event(pod_name: str, namespace: str, message: str, host: str) -> J:
    return {
        "metadata": meta(f"{pod_name}.1", namespace),
        "reason": "FailedCreatePodSandBox",
        "type": "Warning",
        "involvedObject": {"kind": "Pod", "namespace": namespace, "name": pod_name},
        "source": {"component": "kubelet", "host": host},
        "count": 7,
        "message": message,
        "lastTimestamp": RECENT,
    }


def pending_pod(name: str, node_i: int) -> J:
    p = pod(name, "shop", {"app": "new"}, node_i, "")
    p["status"] = {
        "phase": "Pending",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            {
                "name": "main",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}},
            }
        ],
    }
    return p


# ---- the faults -------------------------------------------------------------------------------------


def f_cni_config_invalid(d: J) -> None:
    not_ready(d["nodes"][1])
    d["node_reads"][NODES[1]].update(
        conf_files=["00-bad.conflist", "10-kindnet.conflist"],
        first_conf="{bad\n",
        kubelet=['E1123 kubelet.go:3002] "Container runtime network not ready"'],
    )


def f_cni_config_missing(d: J) -> None:
    not_ready(d["nodes"][1])
    d["node_reads"][NODES[1]].update(conf_files=[], first_conf=None)


def f_cni_plugin_binary_missing(d: J) -> None:
    d["pods"].append(pending_pod("new-1", 2))
    d["events"].append(
        sandbox_event(
            "new-1",
            "shop",
            "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup "
            "network for "
            'sandbox "0123abcd": plugin type="portmap" failed (add): failed to find plugin "portmap" in path '
            "[/opt/cni/bin]",
            NODES[2],
        )
    )
    d["node_reads"][NODES[2]]["bin_files"] = [b for b in BINS if b != "portmap"]


def f_cni_agent_unavailable(d: J) -> None:
    ds = find(d, "daemonsets", "kindnet")
    ds["spec"]["template"]["spec"]["nodeSelector"] = {"chaos/absent": "true"}
    ds["status"] = {"desiredNumberScheduled": 0, "currentNumberScheduled": 0, "numberReady": 0}
    d["pods"] = [p for p in d["pods"] if not p["metadata"]["name"].startswith("kindnet-")]


def f_pod_cidr_exhausted(d: J) -> None:
    for i in range(3):
        d["pods"].append(pending_pod(f"many-{i}", 1))
        d["events"].append(
            sandbox_event(
                f"many-{i}",
                "shop",
                "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to "
                "setup "
                'network for sandbox "abc": plugin type="ptp" failed (add): failed to allocate for range 0: '
                "no IP addresses available in range set: 10.244.1.1-10.244.1.14",
                NODES[1],
            )
        )


def f_coredns_pending_no_cni(d: J) -> None:
    for n in d["nodes"]:
        not_ready(n)
    for r in d["node_reads"].values():
        r.update(conf_files=[], first_conf=None, routes=["default via 172.18.0.1 dev eth0"])
    d["daemonsets"] = [ds for ds in d["daemonsets"] if ds["metadata"]["name"] != "kindnet"]
    d["pods"] = [p for p in d["pods"] if not p["metadata"]["name"].startswith(("kindnet-", "web-"))]
    for p in d["pods"]:
        if p["metadata"]["name"].startswith("coredns"):
            p["spec"].pop("nodeName")
            p["status"] = {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 node(s) had untolerated taint "
                        "{node.kubernetes.io/not-ready: }",
                    }
                ],
            }
    find(d, "deployments", "coredns")["status"] = {"replicas": 2, "unavailableReplicas": 2}
    find(d, "endpointslices", "kube-dns-abcde")["endpoints"] = []
    d["ingresses"] = []


def _dns_down(d: J) -> None:
    find(d, "endpointslices", "kube-dns-abcde")["endpoints"] = []
    find(d, "deployments", "coredns")["status"] = {
        "replicas": 2,
        "availableReplicas": 0,
        "unavailableReplicas": 2,
    }


def f_coredns_forward_loop(d: J) -> None:
    cm = find(d, "configmaps", "coredns")
    cm["data"]["Corefile"] = cm["data"]["Corefile"].replace(
        "forward . /etc/resolv.conf", "forward . 127.0.0.1"
    )
    for p in d["pods"]:
        if p["metadata"]["name"].startswith("coredns"):
            crash(p)
            d["logs"][log_key("kube-system", p["metadata"]["name"], "coredns", True)] = (
                ".:53\nCoreDNS-1.12.1\nlinux/amd64, go1.24.1, 707c7c1\n" + LOOP_FATAL + "\n"
            )
    _dns_down(d)


def f_coredns_forward_to_its_service(d: J) -> None:
    """The ClusterIP variant after a rollout: the new pods' loop probe was answered by an old
    replica, so nothing crashed; only the Corefile shows the loop."""
    cm = find(d, "configmaps", "coredns")
    cm["data"]["Corefile"] = cm["data"]["Corefile"].replace(
        "forward . /etc/resolv.conf", "forward . 10.96.0.10"
    )


def f_mtu_mismatch(d: J) -> None:
    """kind-worker's eth0 lowered to 1280 under kindnet's pod MTU of 1500."""
    d["node_reads"]["kind-worker"]["eth0_mtu"] = 1280


def f_coredns_scaled_to_zero(d: J) -> None:
    dep = find(d, "deployments", "coredns")
    dep["spec"]["replicas"] = 0
    dep["status"] = {"observedGeneration": 2}
    d["pods"] = [p for p in d["pods"] if not p["metadata"]["name"].startswith("coredns")]
    find(d, "endpointslices", "kube-dns-abcde")["endpoints"] = []


def f_dns_selector(d: J) -> None:
    find(d, "services", "kube-dns")["spec"]["selector"] = {"k8s-app": "nope"}
    find(d, "endpointslices", "kube-dns-abcde")["endpoints"] = []


def _proxy_conf(d: J, old: str, new: str) -> None:
    cm = find(d, "configmaps", "kube-proxy")
    assert old in cm["data"]["config.conf"]
    cm["data"]["config.conf"] = cm["data"]["config.conf"].replace(old, new)


def f_kube_proxy_crash(d: J) -> None:
    _proxy_conf(d, "mode: iptables", "mode: foo")
    for p in d["pods"]:
        if p["metadata"]["name"].startswith("kube-proxy"):
            crash(p)
            d["logs"][log_key("kube-system", p["metadata"]["name"], "kube-proxy", True)] = (
                'E1123 12:00:01.000000       1 run.go:72] "command failed" err="failed complete: '
                'KubeProxyConfiguration.ProxyMode: Invalid value: \\"foo\\": must be iptables, ipvs, '
                "nftables or "
                'blank (blank means the best-available proxy [currently iptables])"\n'
            )


def f_kube_proxy_latent(d: J) -> None:
    _proxy_conf(d, "clusterCIDR: 10.244.0.0/16", "clusterCIDR: notacidr")


def f_kube_proxy_cidr_mismatch(d: J) -> None:
    _proxy_conf(d, "clusterCIDR: 10.244.0.0/16", "clusterCIDR: 10.99.0.0/16")


def f_kube_proxy_unavailable(d: J) -> None:
    ds = find(d, "daemonsets", "kube-proxy")
    ds["spec"]["template"]["spec"]["nodeSelector"] = {"chaos/absent": "true"}
    ds["status"] = {"desiredNumberScheduled": 0, "numberReady": 0}
    d["pods"] = [p for p in d["pods"] if not p["metadata"]["name"].startswith("kube-proxy")]


def f_ingress_backend_missing(d: J) -> None:
    backend = d["ingresses"][0]["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    backend["service"]["name"] = "missing"


def f_ingress_tls_expired(d: J) -> None:
    d["secrets"][0]["data"]["tls.crt"] = _b64(EXPIRED_PEM)


def f_ingress_no_address(d: J) -> None:
    d["ingresses"][0]["status"] = {"loadBalancer": {}}


def f_node_route_missing(d: J) -> None:
    reads = d["node_reads"][NODES[1]]
    reads["routes"] = [r for r in reads["routes"] if not r.startswith(CIDRS[2])]


def f_node_unreachable(d: J) -> None:
    cond = d["nodes"][2]["status"]["conditions"][-1]
    cond.update(status="Unknown", reason="NodeStatusUnknown", message="Kubelet stopped posting node status.")
    for p in d["pods"]:
        if p["spec"].get("nodeName") == NODES[2]:
            p["status"]["conditions"] = [{"type": "Ready", "status": "False"}]


FAULTS: dict[str, tuple[Callable[[J], None], set[FindingId]]] = {
    "cni-config-invalid": (f_cni_config_invalid, {FindingId.CNI_CONFIG_INVALID}),
    "cni-config-missing": (f_cni_config_missing, {FindingId.CNI_CONFIG_MISSING}),
    "cni-plugin-binary-missing": (f_cni_plugin_binary_missing, {FindingId.CNI_PLUGIN_BINARY_MISSING}),
    "cni-agent-unavailable": (f_cni_agent_unavailable, {FindingId.CNI_AGENT_UNAVAILABLE}),
    "pod-cidr-exhausted": (f_pod_cidr_exhausted, {FindingId.POD_CIDR_EXHAUSTED}),
    "coredns-pending-no-cni": (f_coredns_pending_no_cni, {FindingId.COREDNS_PENDING_NO_CNI}),
    "coredns-forward-loop": (f_coredns_forward_loop, {FindingId.COREDNS_FORWARD_LOOP}),
    "coredns-forward-to-its-service": (f_coredns_forward_to_its_service, {FindingId.COREDNS_FORWARD_LOOP}),
    "coredns-scaled-to-zero": (f_coredns_scaled_to_zero, {FindingId.COREDNS_UNAVAILABLE}),
    "dns-selector": (f_dns_selector, {FindingId.DNS_SERVICE_NO_ENDPOINTS}),
    "kube-proxy-crash": (f_kube_proxy_crash, {FindingId.KUBE_PROXY_CONFIG_INVALID}),
    "kube-proxy-latent": (f_kube_proxy_latent, {FindingId.KUBE_PROXY_CONFIG_INVALID}),
    "kube-proxy-cidr-mismatch": (f_kube_proxy_cidr_mismatch, {FindingId.KUBE_PROXY_CLUSTER_CIDR_MISMATCH}),
    "kube-proxy-unavailable": (f_kube_proxy_unavailable, {FindingId.KUBE_PROXY_UNAVAILABLE}),
    "ingress-backend-missing": (f_ingress_backend_missing, {FindingId.INGRESS_BACKEND_MISSING}),
    "ingress-tls-expired": (f_ingress_tls_expired, {FindingId.INGRESS_TLS_EXPIRED}),
    "ingress-no-address": (f_ingress_no_address, {FindingId.INGRESS_NO_ADDRESS}),
    "node-route-missing": (f_node_route_missing, {FindingId.NODE_ROUTE_MISSING}),
    "node-unreachable": (f_node_unreachable, {FindingId.NODE_PARTITION}),
    "mtu-mismatch": (f_mtu_mismatch, {FindingId.MTU_MISMATCH}),
}


def faulty(name: str) -> J:
    doc = healthy()
    FAULTS[name][0](doc)
    return doc


# ---- the confusion matrix ------------------------------------------------------------------------


def test_healthy_cluster_has_no_findings() -> None:
    assert run_rules(healthy()) == []


def test_healthy_cluster_without_node_access_has_no_findings() -> None:
    assert run_rules(healthy(), node_access=False) == []


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_yields_exactly_its_finding(fault: str) -> None:
    found = run_rules(faulty(fault))
    assert {f.id for f in found} == FAULTS[fault][1], "\n\n" + text(found)
    for f in found:
        assert f.evidence and all(e.strip() for e in f.evidence)
        assert f.fix and f.summary and f.subject


# ---- what each finding says ----------------------------------------------------------------------


def only(found: list[Finding]) -> Finding:
    assert len(found) == 1, text(found)
    return found[0]


def test_cni_config_invalid_names_node_file_error_and_the_mv_trap() -> None:
    f = only(run_rules(faulty("cni-config-invalid")))
    assert f.subject == "node/kind-worker"
    joined = "\n".join(f.evidence)
    assert "NetworkPluginNotReady" in joined
    assert "00-bad.conflist" in joined and "not valid JSON" in joined
    assert "kubelet log on kind-worker" in joined
    assert "mv" in f.fix and "kubectl -n kube-system delete pod -l app=kindnet" in f.fix
    assert "spec.nodeName=kind-worker" in f.fix


def test_cni_config_without_node_access_falls_back_to_api_evidence() -> None:
    f = only(run_rules(faulty("cni-config-invalid"), node_access=False))
    assert f.id is FindingId.CNI_CONFIG_INVALID
    assert "API evidence only" in f.summary and "no node access" in "\n".join(f.evidence)


def test_cni_config_missing_fix_follows_the_recipe() -> None:
    f = only(run_rules(faulty("cni-config-missing")))
    assert (
        "kubectl -n kube-system delete pod -l app=kindnet --field-selector spec.nodeName=kind-worker" in f.fix
    )
    cilium = facts_of(faulty("cni-config-missing"), recipe="cilium")
    assert "by itself" in cni.agent_restart_fix(cilium, "kind-worker")


def test_cni_agent_unavailable_shows_the_patched_node_selector_and_the_json_patch() -> None:
    f = only(run_rules(faulty("cni-agent-unavailable")))
    assert any('"chaos/absent": "true"' in e for e in f.evidence)
    assert '"path": "/spec/template/spec/nodeSelector/chaos~1absent"' in f.fix


def test_pod_cidr_exhausted_names_node_and_range() -> None:
    f = only(run_rules(faulty("pod-cidr-exhausted")))
    assert f.subject == "node/kind-worker" and "10.244.1.1-10.244.1.14" in f.summary


def test_forward_loop_quotes_the_fatal_line_and_the_forward_line() -> None:
    f = only(run_rules(faulty("coredns-forward-loop")))
    joined = "\n".join(f.evidence)
    assert "plugin/loop: Loop (127.0.0.1:55953 -> :53) detected" in joined
    assert "forward . 127.0.0.1" in joined
    assert "rollout restart deploy/coredns" in f.fix and "resolvConf" in f.fix


def test_a_corefile_forwarding_to_its_own_service_is_a_loop_even_without_a_crash() -> None:
    f = only(run_rules(faulty("coredns-forward-to-its-service")))
    assert any(
        e.startswith("ConfigMap kube-system/coredns Corefile: forward . 10.96.0.10") for e in f.evidence
    )
    assert "forwards to CoreDNS itself" in f.summary


def test_mtu_mismatch_names_both_mtus_and_the_fix() -> None:
    f = only(run_rules(faulty("mtu-mismatch")))
    assert f.subject == "node/kind-worker"
    assert any('"mtu": 1500' in e for e in f.evidence) and any("mtu 1280" in e for e in f.evidence)
    assert "ip link set dev eth0 mtu 1500" in f.fix


def test_overlay_overhead_counts_toward_the_mtu() -> None:
    from faults.doctor.nodes import ENCAP_OVERHEAD, pod_mtu

    assert pod_mtu('{"plugins": [{"type": "ptp", "mtu": 1450}]}') == 1450
    assert pod_mtu('{"plugins": [{"type": "flannel", "delegate": {"mtu": 1400}}]}') == 1400
    assert pod_mtu('{"plugins": [{"type": "calico", "mtu": 0}]}') is None
    assert ENCAP_OVERHEAD["udp/8472"] == 50


def test_loop_line_in_a_recovered_pods_previous_log_is_not_a_finding() -> None:
    doc = healthy()
    name = "coredns-674b8bbfcf-aaaaa"
    doc["logs"][log_key("kube-system", name, "coredns", True)] = LOOP_FATAL
    assert run_rules(doc) == []


def test_scaled_to_zero_fix_scales_back() -> None:
    f = only(run_rules(faulty("coredns-scaled-to-zero")))
    assert "scale deploy/coredns --replicas=2" in f.fix


def test_dns_selector_shows_selector_and_labels() -> None:
    f = only(run_rules(faulty("dns-selector")))
    joined = "\n".join(f.evidence)
    assert '{"k8s-app": "nope"}' in joined and '"k8s-app": "kube-dns"' in joined
    assert "k8s-app" in f.fix and "kube-dns" in f.fix


def test_kube_proxy_crash_is_critical_with_log_line_and_key() -> None:
    f = only(run_rules(faulty("kube-proxy-crash")))
    assert f.severity is Severity.CRITICAL
    joined = "\n".join(f.evidence)
    assert '"command failed" err=' in joined and "mode: foo" in joined
    assert "rollout restart ds/kube-proxy" in f.fix


def test_latent_kube_proxy_config_is_a_warning_about_the_next_restart() -> None:
    f = only(run_rules(faulty("kube-proxy-latent")))
    assert f.severity is Severity.WARNING and "next kube-proxy restart will crash" in f.summary
    assert "clusterCIDR" in f.fix


@pytest.mark.parametrize(
    "edit,key",
    [
        (("mode: iptables", "mode: foo"), "mode"),
        (
            ("kubeconfig: /var/lib/kube-proxy/kubeconfig.conf", "kubeconfig: /wrong/path"),
            "clientConnection.kubeconfig",
        ),
        (
            ("kubeconfig: /var/lib/kube-proxy/kubeconfig.conf", "kubeconfig: /var/lib/kube-proxy/nope.conf"),
            "clientConnection.kubeconfig",
        ),
        (("mode: iptables", "mode: [iptables"), "(document)"),
    ],
)
def test_kube_proxy_validation_names_the_key(edit: tuple[str, str], key: str) -> None:
    doc = healthy()
    _proxy_conf(doc, *edit)
    f = only(run_rules(doc))
    assert f.id is FindingId.KUBE_PROXY_CONFIG_INVALID and key in f.summary


def test_kube_proxy_accepts_blank_kubeconfig_and_ipvs() -> None:
    doc = healthy()
    _proxy_conf(doc, "kubeconfig: /var/lib/kube-proxy/kubeconfig.conf", 'kubeconfig: ""')
    _proxy_conf(doc, "mode: iptables", "mode: ipvs")
    assert run_rules(doc) == []


def test_expiring_certificate_is_a_warning() -> None:
    doc = healthy()
    doc["secrets"][0]["data"]["tls.crt"] = _b64(SOON_PEM)
    f = only(run_rules(doc))
    assert f.id is FindingId.INGRESS_TLS_EXPIRED and f.severity is Severity.WARNING


def test_expired_certificate_is_critical() -> None:
    f = only(run_rules(faulty("ingress-tls-expired")))
    assert f.severity is Severity.CRITICAL and "expired" in f.summary


def test_ingress_backend_without_ready_endpoints() -> None:
    doc = healthy()
    find(doc, "endpointslices", "web-abcde", "shop")["endpoints"][0]["conditions"]["ready"] = False
    f = only(run_rules(doc))
    assert f.id is FindingId.INGRESS_BACKEND_MISSING and "does not have any active Endpoint" in f.evidence[0]


def test_route_missing_names_the_node_and_the_route_to_add() -> None:
    f = only(run_rules(faulty("node-route-missing")))
    assert f.subject == "node/kind-worker"
    assert "ip route add 10.244.2.0/24 via 172.18.0.4" in f.fix
    assert any("kind-control-plane: 10.244.2.0/24 via 172.18.0.4" in e for e in f.evidence)


def test_overlay_or_own_ipam_routes_are_not_judged() -> None:
    doc = faulty("node-route-missing")
    assert run_rules(doc, recipe="calico") == [] or all(
        f.id is not FindingId.NODE_ROUTE_MISSING for f in run_rules(doc, recipe="calico")
    )
    for r in doc["node_reads"].values():  # no node routes another's podCIDR: not host-gw
        r["routes"] = ["default via 172.18.0.1 dev eth0"]
    assert run_rules(doc) == []


def test_sandbox_events_of_running_or_old_pods_are_ignored() -> None:
    doc = faulty("cni-plugin-binary-missing")
    doc["node_reads"][NODES[2]]["bin_files"] = list(BINS)  # reinstalled since
    assert run_rules(doc) == []


# ---- parsers and the reference configs -----------------------------------------------------------


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference configs not present")
@pytest.mark.parametrize(
    "path", sorted((REFERENCE / "cni").glob("*")) if REFERENCE.exists() else [], ids=lambda p: p.name
)
def test_every_reference_conflist_loads(path: Path) -> None:
    check = cni.check_conf(path.name, path.read_text())
    assert check.error is None and check.plugin_types


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference configs not present")
@pytest.mark.parametrize(
    "path",
    sorted((REFERENCE / "kube-proxy").glob("config.conf*")) if REFERENCE.exists() else [],
    ids=lambda p: p.name,
)
def test_every_reference_kube_proxy_config_validates(path: Path) -> None:
    mounts = {"/var/lib/kube-proxy": ("config.conf", "kubeconfig.conf")}
    assert kubeproxy.validate(path.read_text(), mounts) == []


@pytest.mark.parametrize(
    "name,text,error",
    [
        ("00-bad.conflist", "{bad", "not valid JSON"),
        ("10-x.conflist", '{"cniVersion": "1.0.0", "plugins": [{"type": "ptp"}]}', "no name"),
        ("10-x.conflist", '{"name": "x"}', "no 'plugins' key"),
        ("10-x.conflist", '{"name": "x", "plugins": []}', "no plugins in list"),
        ("10-x.conflist", '{"name": "x", "plugins": [{"ipam": {}}]}', "missing 'type'"),
        ("10-x.conf", '{"name": "x"}', "missing 'type'"),
    ],
)
def test_check_conf_errors(name: str, text: str, error: str) -> None:
    result = cni.check_conf(name, text)
    assert result.error is not None and error in result.error


def test_parse_ls_splits_two_directories() -> None:
    out = "/etc/cni/net.d:\n10-lab.conflist\n\n/opt/cni/bin:\nbridge\nportmap\n"
    assert parse_ls(out, ("/etc/cni/net.d", "/opt/cni/bin")) == {
        "/etc/cni/net.d": ("10-lab.conflist",),
        "/opt/cni/bin": ("bridge", "portmap"),
    }


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_openssl_enddate_reads_a_real_expired_certificate(tmp_path: Path) -> None:
    from faults.doctor.ingress import openssl_enddate

    key, csr, crt = tmp_path / "k.pem", tmp_path / "c.csr", tmp_path / "c.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            "/CN=shop.example",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(csr), "-signkey", str(key), "-days", "-1", "-out", str(crt)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    end = openssl_enddate(crt.read_text())
    assert end is not None and end < datetime.now(UTC)
    assert openssl_enddate("not a certificate") is None


# ---- the probe pattern ---------------------------------------------------------------------------


def result(verdict: Verdict) -> ProbeResult:
    return ProbeResult(
        verdict, "" if verdict is Verdict.CONNECTED else "TIMEOUT", "kubectl get --raw ...", 1.0
    )


def outcome(cross_fail: set[tuple[str, str]], dns: Verdict = Verdict.CONNECTED) -> ProbeOutcome:
    workers = NODES[1:]
    return ProbeOutcome(
        same={n: result(Verdict.CONNECTED) for n in workers},
        cross={
            (a, b): result(Verdict.TIMEOUT if (a, b) in cross_fail else Verdict.CONNECTED)
            for a in workers
            for b in workers
            if a != b
        },
        dns={n: result(dns) for n in workers},
    )


def test_probes_all_connected_find_nothing() -> None:
    assert analyse(facts_of(healthy()), outcome(set()), []) == []


def test_cross_node_failure_with_routes_in_place_is_a_partition() -> None:
    found = analyse(facts_of(healthy()), outcome({(NODES[1], NODES[2]), (NODES[2], NODES[1])}), [])
    f = only(found)
    assert f.id is FindingId.NODE_PARTITION
    assert any(e.startswith("kind-worker -> kind-worker2: timeout") for e in f.evidence)


def test_cross_node_failure_with_a_missing_route_is_route_missing_once() -> None:
    facts = facts_of(faulty("node-route-missing"))
    pairs = {(NODES[1], NODES[2]), (NODES[2], NODES[1])}
    f = only(analyse(facts, outcome(pairs), []))
    assert f.id is FindingId.NODE_ROUTE_MISSING and f.subject == "node/kind-worker"
    static = evaluate(facts, enddate=fake_enddate)
    assert analyse(facts, outcome(pairs), static) == []  # already reported by the static rule


def test_dns_probe_failure_without_a_dns_rule_is_coredns_unavailable() -> None:
    f = only(analyse(facts_of(healthy()), outcome(set(), Verdict.DNS_ERROR), []))
    assert f.id is FindingId.COREDNS_UNAVAILABLE
    dns_finding = only(run_rules(faulty("dns-selector")))
    assert analyse(facts_of(healthy()), outcome(set(), Verdict.DNS_ERROR), [dns_finding]) == []


# ---- output and CLI ------------------------------------------------------------------------------


def test_render_text_and_json() -> None:
    assert text([]).startswith(NO_FINDINGS)
    found = run_rules(faulty("dns-selector"))
    out = text(found)
    assert "dns-service-no-endpoints" in out and "evidence:" in out and "fix:" in out
    doc = json.loads(as_json(found, elapsed=1.234))
    assert doc["findings"][0]["id"] == "dns-service-no-endpoints" and doc["elapsed_seconds"] == 1.23


def test_cli_usage_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert doctor_main(["--bogus"]) == 2
    assert doctor_main(["--kubeconfig", str(tmp_path / "nope")]) == 2
    assert doctor_main(["--timeout", "0", "--kubeconfig", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("knetcheck doctor: ") for line in err)


def test_fixture_builders_do_not_share_state() -> None:
    a, b = healthy(), healthy()
    f_dns_selector(a)
    assert copy.deepcopy(b) == healthy()
