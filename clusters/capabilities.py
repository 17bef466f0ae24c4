"""What a cluster can do, declared by its CNI recipe and its provider.

Tests gate on capabilities, never on CNI or provider names, so adding a CNI never means
editing a test, and a skip always says which capability was missing.
"""

from __future__ import annotations

import enum


class Capability(enum.StrEnum):
    NETWORK_POLICY = "network-policy"
    INGRESS = "ingress"
    LOAD_BALANCER = "load-balancer"
    SCTP = "sctp"
    HOST_PORT = "host-port"
    NODE_ACCESS = "node-access"
    """Node files, journals and iptables are reachable through the node channel."""

    @classmethod
    def parse(cls, value: str) -> Capability:
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(c.value for c in cls)
            raise ValueError(f"unknown capability {value!r}; choose from: {choices}") from None
