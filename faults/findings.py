"""What the doctor reports: a named root cause with its evidence and the runbook's fix.

Finding ids are a closed set (DESIGN §7): experiments assert "detected" by id, so an id is an API.
Evidence is a list of short, quoted observations a person can check (an event message, a log line,
a file's first bytes), each saying where it was read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class FindingId(enum.StrEnum):
    CNI_CONFIG_INVALID = "cni-config-invalid"
    CNI_CONFIG_MISSING = "cni-config-missing"
    CNI_PLUGIN_BINARY_MISSING = "cni-plugin-binary-missing"
    CNI_AGENT_UNAVAILABLE = "cni-agent-unavailable"
    POD_CIDR_EXHAUSTED = "pod-cidr-exhausted"
    COREDNS_PENDING_NO_CNI = "coredns-pending-no-cni"
    COREDNS_FORWARD_LOOP = "coredns-forward-loop"
    COREDNS_UNAVAILABLE = "coredns-unavailable"
    DNS_SERVICE_NO_ENDPOINTS = "dns-service-no-endpoints"
    KUBE_PROXY_CONFIG_INVALID = "kube-proxy-config-invalid"
    KUBE_PROXY_UNAVAILABLE = "kube-proxy-unavailable"
    KUBE_PROXY_CLUSTER_CIDR_MISMATCH = "kube-proxy-cluster-cidr-mismatch"
    INGRESS_BACKEND_MISSING = "ingress-backend-missing"
    INGRESS_TLS_EXPIRED = "ingress-tls-expired"
    INGRESS_NO_ADDRESS = "ingress-no-address"
    NODE_ROUTE_MISSING = "node-route-missing"
    NODE_PARTITION = "node-partition"
    MTU_MISMATCH = "mtu-mismatch"


class Severity(enum.StrEnum):
    CRITICAL = "critical"
    """Pod networking, DNS or Services are broken for some workloads now."""
    WARNING = "warning"
    """Degraded, or will break the next pod/Service/restart."""


@dataclass(frozen=True)
class Finding:
    id: FindingId
    subject: str
    """What is broken, as kind/namespace/name or node/<name> (``node/kind-worker``)."""
    summary: str
    """One line: what is wrong."""
    evidence: tuple[str, ...]
    fix: str
    """The runbook step that repairs it, with a command where one exists."""
    severity: Severity = Severity.CRITICAL
    related: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id.value,
            "subject": self.subject,
            "summary": self.summary,
            "evidence": list(self.evidence),
            "fix": self.fix,
            "severity": self.severity.value,
            "related": list(self.related),
        }
