"""Service chains → endpoints: ``KUBE-SVC-``/``KUBE-SVL-`` balancing and ``KUBE-SEP-`` DNAT.

A service chain picks an endpoint with a ladder of ``statistic --mode random`` rules (endpoint i of
n matches with probability 1/(n-i), so each is equally likely), preceded, under ClientIP session
affinity, by ``recent --rcheck`` rules that send a returning client to its endpoint again. Each
endpoint chain marks hairpin traffic (a pod reaching itself through the service) for masquerade
and DNATs to the endpoint. The probabilities are formatted exactly as Go's ``%0.10f`` so rules
diff cleanly against a real node.
"""

from __future__ import annotations

from collections.abc import Sequence

from clusters.lab.programs.kubeproxy.chains import KUBE_MARK_MASQ
from clusters.lab.programs.kubeproxy.model import Endpoint, ServicePort, endpoint_chain
from clusters.lab.programs.kubeproxy.policy import ServicePlan
from clusters.lab.programs.kubeproxy.ruleset import Ruleset, commented, quote


def probability(n: int) -> str:
    """proxier.go computeProbability: ``%0.10f`` of 1/n."""
    return f"{1.0 / n:0.10f}"


def write_endpoint_chains(rs: Ruleset, plan: ServicePlan) -> None:
    """The SVC and SVL chains the plan uses, then one SEP chain per reachable endpoint."""
    sp = plan.sp
    for chain, endpoints in ((sp.svc_chain, plan.cluster_eps), (sp.svl_chain, plan.local_eps)):
        if endpoints:
            rs.service_chain(chain)
            _to_endpoints(rs, sp, chain, endpoints)
    name, proto = sp.name_string, sp.proto
    for ep in plan.reachable:
        chain = endpoint_chain(sp, ep)
        rs.service_chain(chain)
        args = commented(chain, name)
        rs.nat(args, "-s", ep.ip, "-j", KUBE_MARK_MASQ)
        if sp.client_ip_affinity:
            args += ["-m", "recent", "--name", chain, "--set"]
        rs.nat(args, "-m", proto, "-p", proto, "-j", "DNAT", "--to-destination", ep.address)


def _to_endpoints(rs: Ruleset, sp: ServicePort, chain: str, endpoints: Sequence[Endpoint]) -> None:
    """writeServiceToEndpointRules: affinity checks first, then the probability ladder."""
    name = sp.name_string
    if sp.client_ip_affinity:
        for ep in endpoints:
            sep = endpoint_chain(sp, ep)
            rs.nat(
                commented(chain, quote(f"{name} -> {ep.address}")),
                ["-m", "recent", "--name", sep, "--rcheck", "--seconds", str(sp.sticky_seconds), "--reap"],
                "-j",
                sep,
            )
    n = len(endpoints)
    for i, ep in enumerate(endpoints):
        args = commented(chain, quote(f"{name} -> {ep.address}"))
        if i < n - 1:
            args += ["-m", "statistic", "--mode", "random", "--probability", probability(n - i)]
        rs.nat(args, "-j", endpoint_chain(sp, ep))
