"""kube-proxy's chain names: the fixed chains and the hashed per-service and per-endpoint ones.

The names are the lab's contract with whoever reads ``iptables-save``: a doctor (or a person) that
looks for ``KUBE-SVC-QKNQQNIN727HO3XU`` on a kind node must find the same chain on a lab node, so
the hashes follow ``pkg/proxy/iptables/proxier.go`` byte for byte. Every module that writes or
applies rules takes its names from here, so a name is spelled once.
"""

from __future__ import annotations

import base64
import hashlib

KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_FIREWALL = "KUBE-FIREWALL"

CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-FW-", "KUBE-EXT-")
"""The per-service chain families: a nat chain of these that no service uses any more is deleted."""


def chain_hash(text: str) -> str:
    """The 16-character suffix of every hashed chain name: base32(sha256(text))[:16]."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """proxier.go portProtoHash: the suffix of a service port's SVC/SVL/EXT/FW chains."""
    return chain_hash(service_port_name + protocol)
