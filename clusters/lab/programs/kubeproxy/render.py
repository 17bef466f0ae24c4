"""kube-proxy's iptables data plane: Services + EndpointSlices → ``iptables-restore`` input (pure).

:func:`render` writes the same chains and rules, in the same order and with the same comments, as
``pkg/proxy/iptables/proxier.go`` ``syncProxyRules``: ``KUBE-SERVICES`` (jumped to from PREROUTING
and OUTPUT), ``KUBE-SVC-<hash>`` per service port with ``statistic`` balancing, ``KUBE-SEP-<hash>``
per endpoint (DNAT), ``KUBE-EXT-``/``KUBE-SVL-``/``KUBE-FW-``, ``KUBE-MARK-MASQ``/``KUBE-POSTROUTING``
(mark + MASQUERADE), ``KUBE-NODEPORTS`` last in ``KUBE-SERVICES``, and in the filter table
``REJECT`` for services without endpoints (``"<ns>/<svc>:<port> has no endpoints"``) and
``KUBE-FORWARD``. Chain names hash exactly as the real ones, so a doctor that greps
``iptables-save`` on a kind node works on the lab too.

This module owns the order of a sync: the node-wide chains, then each service port (its
decisions made by :mod:`.policy`, its rules written by :mod:`.masquerade`, :mod:`.external` and
:mod:`.endpoints`), then stale-chain deletion, the NodePort catch-all and ``KUBE-FORWARD``. It
being pure is what lets the rules be tested without a network namespace; :mod:`.iptables` applies
the result.
"""

from __future__ import annotations

from collections.abc import Sequence

from clusters.lab.programs.kubeproxy.chains import (
    KUBE_EXTERNAL_SERVICES,
    KUBE_FORWARD,
    KUBE_MARK_MASQ,
    KUBE_NODEPORTS,
    KUBE_POSTROUTING,
    KUBE_PROXY_FIREWALL,
    KUBE_SERVICES,
)
from clusters.lab.programs.kubeproxy.endpoints import write_endpoint_chains
from clusters.lab.programs.kubeproxy.external import (
    write_entries,
    write_ext_chain,
    write_fw_chain,
    write_localnet_guard,
    write_nodeports_jump,
)
from clusters.lab.programs.kubeproxy.masquerade import write_cluster_ip_masquerade, write_mark_chains
from clusters.lab.programs.kubeproxy.model import Endpoint, ProxyState, ServicePort
from clusters.lab.programs.kubeproxy.options import RenderOptions
from clusters.lab.programs.kubeproxy.policy import ServicePlan, plan_service
from clusters.lab.programs.kubeproxy.ruleset import Ruleset, commented, port_rule, quote

FILTER_CHAINS = (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL)
NAT_CHAINS = (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ)


def render(state: ProxyState, opts: RenderOptions) -> str:
    """The ``iptables-restore`` input for one full sync (filter then nat, as the real proxier)."""
    rs = Ruleset()
    for c in FILTER_CHAINS:
        rs.filter_chain(c)
    for c in NAT_CHAINS:
        rs.nat_chain(c)
    write_mark_chains(rs, opts.masquerade_mark)
    write_localnet_guard(rs, opts)
    for sp in state.services:
        _write_service(rs, sp, state.endpoints_of(sp), opts)
    rs.delete_stale(opts.existing_nat_chains)
    write_nodeports_jump(rs, opts)
    _write_forward(rs, opts)
    return rs.text()


def _write_service(rs: Ruleset, sp: ServicePort, endpoints: Sequence[Endpoint], opts: RenderOptions) -> None:
    """One service port, in syncProxyRules' order: entries, then its chains."""
    plan = plan_service(sp, endpoints, opts.node_name)
    _write_cluster_ip(rs, plan)
    write_entries(rs, plan)
    write_cluster_ip_masquerade(rs, plan, opts)
    write_ext_chain(rs, plan, opts)
    write_fw_chain(rs, plan, opts)
    write_endpoint_chains(rs, plan)


def _write_cluster_ip(rs: Ruleset, plan: ServicePlan) -> None:
    """The cluster IP's entry in ``KUBE-SERVICES`` (nat), or its REJECT/DROP (filter)."""
    sp = plan.sp
    proto, dport, ip = sp.proto, str(sp.port), sp.cluster_ip
    if plan.has_internal:
        comment = quote(f"{sp.name_string} cluster IP")
        rs.nat(port_rule(KUBE_SERVICES, comment, proto, dport, plan.internal_chain, dst=ip))
    else:
        rs.filter(port_rule(KUBE_SERVICES, plan.int_comment, proto, dport, plan.int_target, dst=ip))


def _write_forward(rs: Ruleset, opts: RenderOptions) -> None:
    """``KUBE-FORWARD``: let marked service traffic and its replies through a DROP-policy FORWARD."""
    if not opts.conntrack_tcp_liberal:
        rs.filter("-A", KUBE_FORWARD, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
    mark = opts.masquerade_mark
    rs.filter(
        commented(KUBE_FORWARD, quote("kubernetes forwarding rules")),
        ["-m", "mark", "--mark", f"{mark}/{mark}"],
        "-j",
        "ACCEPT",
    )
    rs.filter(
        commented(KUBE_FORWARD, quote("kubernetes forwarding conntrack rule")),
        ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"],
        "-j",
        "ACCEPT",
    )
