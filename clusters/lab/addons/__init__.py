"""kubeadm's addons for the lab, shaped like kind's: kube-proxy and CoreDNS.

The ConfigMap texts are byte-for-byte what kubeadm renders for a default kind cluster (kube-proxy's
``config.conf`` with kind's patch, kubeadm's Corefile), so a fault edits the same bytes it would on
kind. The lab runs its own programs for the images (see ``clusters.lab.kubelet.images``).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from clusters.lab import layout

Manifest = dict[str, Any]

INGRESS_IMAGE = "registry.k8s.io/ingress-nginx/controller:v1.15.1"
KUBE_PROXY_IMAGE = "registry.k8s.io/kube-proxy:v1.36.1"
COREDNS_IMAGE = "registry.k8s.io/coredns/coredns:v1.12.1"
API_SERVER = f"http://{layout.node_ip(0)}:6443"


def _text(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def kube_proxy_config() -> str:
    return _text("kube-proxy-config.conf")


def corefile() -> str:
    return _text("Corefile")


def _kubeconfig(server: str) -> str:
    """kubeadm's kube-proxy kubeconfig.conf, pointing at the control plane endpoint (plain HTTP
    in the lab, and no service-account token: the lab API has no authentication)."""
    return (
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: " + server + "\n  name: default\n"
        "contexts:\n- context:\n    cluster: default\n    namespace: default\n    user: default\n"
        "  name: default\ncurrent-context: default\nusers:\n- name: default\n  user: {}\n"
    )


def kube_proxy() -> list[Manifest]:
    labels = {"k8s-app": "kube-proxy"}
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": {"app": "kube-proxy"}},
            "data": {"config.conf": kube_proxy_config(), "kubeconfig.conf": _kubeconfig(API_SERVER)},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "updateStrategy": {"type": "RollingUpdate"},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "hostNetwork": True,
                        "priorityClassName": "system-node-critical",
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "tolerations": [{"operator": "Exists"}],
                        "containers": [
                            {
                                "name": "kube-proxy",
                                "image": KUBE_PROXY_IMAGE,
                                "command": [
                                    "/usr/local/bin/kube-proxy",
                                    "--config=/var/lib/kube-proxy/config.conf",
                                    "--hostname-override=$(NODE_NAME)",
                                ],
                                "env": [
                                    {
                                        "name": "NODE_NAME",
                                        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                                    }
                                ],
                                "securityContext": {"privileged": True},
                                "volumeMounts": [
                                    {"name": "kube-proxy", "mountPath": "/var/lib/kube-proxy"},
                                    {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
                                    {"name": "lib-modules", "mountPath": "/lib/modules", "readOnly": True},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "kube-proxy", "configMap": {"name": "kube-proxy"}},
                            {
                                "name": "xtables-lock",
                                "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"},
                            },
                            {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}},
                        ],
                    },
                },
            },
        },
    ]


DNS_IN = {"key": "k8s-app", "operator": "In", "values": ["kube-dns"]}


def coredns(replicas: int = 2) -> list[Manifest]:
    labels = {"k8s-app": "kube-dns"}
    probe_port = {"path": "/health", "port": 8080, "scheme": "HTTP"}
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": corefile()},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "priorityClassName": "system-cluster-critical",
                        # kubeadm's: one replica per node where it can, so one node down keeps DNS
                        "affinity": {
                            "podAntiAffinity": {
                                "preferredDuringSchedulingIgnoredDuringExecution": [
                                    {
                                        "weight": 100,
                                        "podAffinityTerm": {
                                            "labelSelector": {"matchExpressions": [DNS_IN]},
                                            "topologyKey": "kubernetes.io/hostname",
                                        },
                                    }
                                ]
                            }
                        },
                        "dnsPolicy": "Default",
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "tolerations": [
                            {"key": "CriticalAddonsOnly", "operator": "Exists"},
                            {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
                        ],
                        "containers": [
                            {
                                "name": "coredns",
                                "image": COREDNS_IMAGE,
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                    {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                                    {"name": "liveness-probe", "containerPort": 8080, "protocol": "TCP"},
                                    {"name": "readiness-probe", "containerPort": 8181, "protocol": "TCP"},
                                ],
                                "livenessProbe": {
                                    "httpGet": probe_port,
                                    "initialDelaySeconds": 60,
                                    "timeoutSeconds": 5,
                                    "successThreshold": 1,
                                    "failureThreshold": 5,
                                },
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"},
                                    "periodSeconds": 1,
                                },
                                "volumeMounts": [
                                    {"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}
                                ],
                            }
                        ],
                        "volumes": [
                            {
                                "name": "config-volume",
                                "configMap": {
                                    "name": "coredns",
                                    "items": [{"key": "Corefile", "path": "Corefile"}],
                                },
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kube-dns",
                "namespace": "kube-system",
                "labels": {
                    "k8s-app": "kube-dns",
                    "kubernetes.io/cluster-service": "true",
                    "kubernetes.io/name": "CoreDNS",
                },
            },
            "spec": {
                "selector": labels,
                "clusterIP": str(layout.DNS_SERVICE_IP),
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
                ],
            },
        },
    ]


def ingress_nginx() -> list[Manifest]:
    """ingress-nginx as its kind provider manifest sets it up (v1.15.1, reference §1.5), minus
    the admission webhook the lab cannot serve: class ``nginx`` (the default class, so Ingresses
    without a class are served, as with ``--watch-ingress-without-class``), a LoadBalancer
    Service whose address the lab's LB controller assigns, and status published from it."""
    ns = "ingress-nginx"
    labels = {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/instance": "ingress-nginx",
              "app.kubernetes.io/component": "controller"}
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns,
                                             "app.kubernetes.io/name": "ingress-nginx"}}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
         "metadata": {"name": "nginx", "labels": labels,
                      "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
         "spec": {"controller": "k8s.io/ingress-nginx"}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "ingress-nginx-controller", "namespace": ns, "labels": labels},
         "spec": {
             "replicas": 1,
             "selector": {"matchLabels": labels},
             "template": {"metadata": {"labels": labels}, "spec": {
                 "nodeSelector": {"kubernetes.io/os": "linux"},
                 "containers": [{
                     "name": "controller",
                     "image": INGRESS_IMAGE,
                     "args": ["/nginx-ingress-controller", "--election-id=ingress-nginx-leader",
                              "--controller-class=k8s.io/ingress-nginx", "--ingress-class=nginx",
                              f"--publish-service={ns}/ingress-nginx-controller",
                              "--watch-ingress-without-class=true"],
                     "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                             {"name": "POD_NAMESPACE",
                              "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                     "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"},
                               {"name": "https", "containerPort": 443, "protocol": "TCP"}],
                     "readinessProbe": {"httpGet": {"path": "/healthz", "port": 10254, "scheme": "HTTP"},
                                        "periodSeconds": 1},
                 }],
             }},
         }},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "ingress-nginx-controller", "namespace": ns, "labels": labels},
         "spec": {"type": "LoadBalancer", "selector": labels,
                  "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https"}]}},
    ]
