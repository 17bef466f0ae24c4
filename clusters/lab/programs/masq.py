"""Egress masquerading for pod traffic that leaves the pod network, like kindnet's ip-masq-agent.

kindnet SNATs pod traffic to anything outside the cluster's pod subnet to the node IP (chain
``KIND-MASQ-AGENT``), which is how pods reach the Docker network's gateway (kind's DNS upstream)
and the outside. The lab agent does the same in the node's netns, in its own chain, so replies
from the lab's upstream resolver find their way back.
"""

from __future__ import annotations

import ipaddress
import logging

from clusters import proc

log = logging.getLogger(__name__)

CHAIN = "LAB-MASQ-AGENT"
TIMEOUT = 10.0


def rules(pod_subnet: ipaddress.IPv4Network) -> str:
    """iptables-restore text for the nat table: our chain only, plus its POSTROUTING jump."""
    return "\n".join(
        [
            "*nat",
            f":{CHAIN} - [0:0]",
            f'-A {CHAIN} -d {pod_subnet} -m comment --comment "lab-masq-agent: cluster-local traffic '
            'should not be subject to MASQUERADE" -j RETURN',
            f'-A {CHAIN} -m comment --comment "lab-masq-agent: outbound traffic is subject to MASQUERADE '
            '(must be last in chain)" -j MASQUERADE',
            "COMMIT",
            "",
        ]
    )


def ensure(pod_subnet: ipaddress.IPv4Network) -> None:
    """Program the chain (idempotent) and one jump for pod-sourced, non-local traffic."""
    proc.run(["iptables-restore", "--noflush", "-w", "5"], stdin=rules(pod_subnet), timeout=TIMEOUT)
    jump = [
        "POSTROUTING",
        "-s",
        str(pod_subnet),
        "-m",
        "addrtype",
        "!",
        "--dst-type",
        "LOCAL",
        "-m",
        "comment",
        "--comment",
        "lab-masq-agent: ensure nat POSTROUTING directs all non-LOCAL "
        "destination traffic to our custom LAB-MASQ-AGENT chain",
        "-j",
        CHAIN,
    ]
    if not proc.run(["iptables", "-w", "5", "-t", "nat", "-C", *jump], timeout=TIMEOUT, check=False).ok:
        proc.run(["iptables", "-w", "5", "-t", "nat", "-A", *jump], timeout=TIMEOUT)
        log.info("masquerading pod traffic leaving %s", pod_subnet)
