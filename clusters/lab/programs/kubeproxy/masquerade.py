"""Masquerading: the mark-then-SNAT machinery, and which cluster-IP traffic gets marked.

kube-proxy never SNATs inside a service chain. A rule that wants a packet masqueraded jumps to
``KUBE-MARK-MASQ``, which sets the masquerade bit; ``KUBE-POSTROUTING`` MASQUERADEs marked packets
on the way out and clears the bit, so a packet re-routed through POSTROUTING is not SNATed twice.
Cluster-IP traffic is marked when ``masqueradeAll`` is set, or else when it does not come from a
local pod (the :class:`~.options.LocalDetector`, usually the cluster CIDR): traffic from off the
pod network must be SNATed so the replies come back through this node to be un-DNATed.
The marks for external and hairpin traffic belong to their chains (:mod:`.external`,
:mod:`.endpoints`).
"""

from __future__ import annotations

from clusters.lab.programs.kubeproxy.chains import KUBE_MARK_MASQ, KUBE_POSTROUTING
from clusters.lab.programs.kubeproxy.options import RenderOptions
from clusters.lab.programs.kubeproxy.policy import ServicePlan
from clusters.lab.programs.kubeproxy.ruleset import Ruleset, commented, port_match, quote


def write_mark_chains(rs: Ruleset, mark: str) -> None:
    """``KUBE-POSTROUTING`` (MASQUERADE what is marked) and ``KUBE-MARK-MASQ`` (set the mark)."""
    rs.nat("-A", KUBE_POSTROUTING, "-m", "mark", "!", "--mark", f"{mark}/{mark}", "-j", "RETURN")
    rs.nat("-A", KUBE_POSTROUTING, "-j", "MARK", "--xor-mark", mark)
    rs.nat(
        commented(KUBE_POSTROUTING, quote("kubernetes service traffic requiring SNAT")),
        "-j",
        "MASQUERADE",
        "--random-fully",
    )
    rs.nat("-A", KUBE_MARK_MASQ, "-j", "MARK", "--or-mark", mark)


def write_cluster_ip_masquerade(rs: Ruleset, plan: ServicePlan, opts: RenderOptions) -> None:
    """The first rule of the internal chain: mark cluster-IP traffic that needs SNAT."""
    if not plan.has_internal:
        return
    sp = plan.sp
    rule = [
        *commented(plan.internal_chain, quote(f"{sp.name_string} cluster IP")),
        *port_match(sp.proto, str(sp.port), sp.cluster_ip),
    ]
    if opts.masquerade_all:
        rs.nat(rule, "-j", KUBE_MARK_MASQ)
    elif opts.local_detector.implemented:
        rs.nat(rule, opts.local_detector.if_not_local, "-j", KUBE_MARK_MASQ)
