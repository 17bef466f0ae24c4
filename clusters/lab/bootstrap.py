"""The objects a fresh lab cluster starts with, shaped like kind's after `kind create cluster`.

They are created through the API like kubeadm's addons, so faults edit them the way they would on
kind (patch the DaemonSet, delete its pods). Manifests are plain dicts: they are the edge.
"""

from __future__ import annotations

from typing import Any

from clusters.capabilities import Capability
from clusters.lab import layout
from clusters.recipes import CniRecipe

Manifest = dict[str, Any]

CNI_AGENT_IMAGE = "knetcheck.local/lab-cni-agent:0.1.0"
API_PORT = 6443
NODE_KUBECONFIG = "/etc/kubernetes/kubelet.conf"
"""Where each node's file tree holds a kubeconfig for in-lab programs (as kind nodes do)."""

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def namespaces() -> list[Manifest]:
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}}}
        for n in SYSTEM_NAMESPACES
    ]


def kubernetes_service() -> list[Manifest]:
    """``default/kubernetes`` at 10.96.0.1, backed by the API server on the control plane node."""
    api_ip = str(layout.node_ip(0))
    return [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kubernetes", "namespace": "default",
                      "labels": {"component": "apiserver", "provider": "kubernetes"}},
         "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1",
                  "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": API_PORT}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "kubernetes", "namespace": "default",
                      "labels": {"kubernetes.io/service-name": "kubernetes"}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": [api_ip], "conditions": {"ready": True}}],
         "ports": [{"name": "https", "port": API_PORT, "protocol": "TCP"}]},
        {"apiVersion": "v1", "kind": "Endpoints",
         "metadata": {"name": "kubernetes", "namespace": "default"},
         "subsets": [{"addresses": [{"ip": api_ip}],
                      "ports": [{"name": "https", "port": API_PORT, "protocol": "TCP"}]}]},
    ]


def cni_daemonset(mode: str, policy: str) -> Manifest:
    """The lab CNI agent, like kindnet: hostNetwork, tolerates everything, writes the conflist."""
    labels = {"app": "lab-cni", "k8s-app": "lab-cni", "tier": "node"}
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "lab-cni", "namespace": "kube-system", "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"app": "lab-cni"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "hostNetwork": True,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        "name": "lab-cni",
                        "image": CNI_AGENT_IMAGE,
                        "env": [
                            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                            {"name": "MODE", "value": mode},
                            {"name": "POLICY", "value": policy},
                            {"name": "KUBECONFIG", "value": NODE_KUBECONFIG},
                        ],
                        "volumeMounts": [
                            {"name": "cni-cfg", "mountPath": "/etc/cni/net.d"},
                            {"name": "kubeconfig", "mountPath": "/etc/kubernetes", "readOnly": True},
                        ],
                        "securityContext": {"privileged": True},
                    }],
                    "volumes": [
                        {"name": "cni-cfg",
                         "hostPath": {"path": "/etc/cni/net.d", "type": "DirectoryOrCreate"}},
                        {"name": "kubeconfig", "hostPath": {"path": "/etc/kubernetes", "type": "Directory"}},
                    ],
                },
            },
        },
    }


def cni_mode(recipe: CniRecipe) -> tuple[str, str]:
    """The agent's (MODE, POLICY), read off the declarative recipe: a VXLAN port between nodes
    means the overlay, a declared network-policy capability means enforcement."""
    mode = "vxlan" if "udp/8472" in recipe.overlay_ports else "host-gw"
    policy = "enforce" if Capability.NETWORK_POLICY in recipe.capabilities else "off"
    return mode, policy


def all_objects(recipe: CniRecipe) -> list[Manifest]:
    from clusters.lab import addons

    return [*namespaces(), *kubernetes_service(), cni_daemonset(*cni_mode(recipe)),
            *addons.kube_proxy(), *addons.coredns(), *addons.ingress_nginx()]
