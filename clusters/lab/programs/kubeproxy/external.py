"""How traffic from outside the cluster reaches a service: NodePorts, externalIPs, LoadBalancer IPs.

Every external entry leads to the port's ``KUBE-EXT-`` chain, which decides masquerading before
handing over to the service chain: under externalTrafficPolicy Cluster everything is masqueraded;
under Local the client's source is kept (traffic from local pods and from the node itself is the
exception, routed through the cluster-wide chain). With ``loadBalancerSourceRanges`` the LB IP goes
to ``KUBE-FW-`` first, and the filter table's ``KUBE-PROXY-FIREWALL`` drops what that chain did
not accept. A service without (local) endpoints gets REJECT/DROP rules in
``KUBE-EXTERNAL-SERVICES`` instead. Node-wide, ``KUBE-NODEPORTS`` is reached from the last rule of
``KUBE-SERVICES``, and NodePorts on localhost come with kubelet's guard against martian 127/8
traffic from outside.
"""

from __future__ import annotations

import ipaddress

from clusters.lab.programs.kubeproxy.chains import (
    KUBE_EXTERNAL_SERVICES,
    KUBE_FIREWALL,
    KUBE_MARK_MASQ,
    KUBE_NODEPORTS,
    KUBE_PROXY_FIREWALL,
    KUBE_SERVICES,
)
from clusters.lab.programs.kubeproxy.options import RenderOptions
from clusters.lab.programs.kubeproxy.policy import ServicePlan
from clusters.lab.programs.kubeproxy.ruleset import Ruleset, commented, port_rule, quote

LOCAL_DST = ("-m", "addrtype", "--dst-type", "LOCAL")
LOCAL_SRC = ("-m", "addrtype", "--src-type", "LOCAL")
LOOPBACK = "127.0.0.0/8"


def write_entries(rs: Ruleset, plan: ServicePlan) -> None:
    """The service port's external ways in (nat), and what refuses them (filter)."""
    sp = plan.sp
    name, proto, dport = sp.name_string, sp.proto, str(sp.port)
    refuse = plan.ext_comment, proto, dport, plan.ext_target
    for ip in sp.external_ips:
        if plan.has_endpoints:
            rs.nat(port_rule(KUBE_SERVICES, quote(f"{name} external IP"), proto, dport, sp.ext_chain, dst=ip))
        if not plan.has_external:
            rs.filter(port_rule(KUBE_EXTERNAL_SERVICES, *refuse, dst=ip))
    for ip in sp.load_balancer_ips:
        if plan.has_endpoints:
            comment = quote(f"{name} loadbalancer IP")
            rs.nat(port_rule(KUBE_SERVICES, comment, proto, dport, plan.lb_chain, dst=ip))
        if plan.uses_fw:
            comment = quote(f"{name} traffic not accepted by {sp.fw_chain}")
            rs.filter(port_rule(KUBE_PROXY_FIREWALL, comment, proto, dport, "DROP", dst=ip))
    if not plan.has_external:
        for ip in sp.load_balancer_ips:
            rs.filter(port_rule(KUBE_EXTERNAL_SERVICES, *refuse, dst=ip))
    if sp.node_port:
        nport = str(sp.node_port)
        if plan.has_endpoints:
            rs.nat(port_rule(KUBE_NODEPORTS, name, proto, nport, sp.ext_chain))
        if not plan.has_external:
            rs.filter(
                port_rule(
                    KUBE_EXTERNAL_SERVICES, plan.ext_comment, proto, nport, plan.ext_target, match=LOCAL_DST
                )
            )
    if sp.health_check_node_port:
        comment = quote(f"{name} health check node port")
        rs.filter(port_rule(KUBE_NODEPORTS, comment, "tcp", str(sp.health_check_node_port), "ACCEPT"))


def write_ext_chain(rs: Ruleset, plan: ServicePlan, opts: RenderOptions) -> None:
    """``KUBE-EXT-``: masquerade per externalTrafficPolicy, then on to the policy's chain."""
    if not plan.uses_ext:
        return
    sp = plan.sp
    ext, name = sp.ext_chain, sp.name_string
    rs.service_chain(ext)
    if not sp.external_policy_local:
        comment = quote(f"masquerade traffic for {name} external destinations")
        rs.nat(commented(ext, comment), "-j", KUBE_MARK_MASQ)
    else:
        if opts.local_detector.implemented:
            rs.nat(
                commented(ext, quote(f"pod traffic for {name} external destinations")),
                opts.local_detector.if_local,
                "-j",
                sp.svc_chain,
            )
        comment = quote(f"masquerade LOCAL traffic for {name} external destinations")
        rs.nat(commented(ext, comment), LOCAL_SRC, "-j", KUBE_MARK_MASQ)
        comment = quote(f"route LOCAL traffic for {name} external destinations")
        rs.nat(commented(ext, comment), LOCAL_SRC, "-j", sp.svc_chain)
    if plan.has_external:
        rs.nat("-A", ext, "-j", plan.external_policy_chain)


def write_fw_chain(rs: Ruleset, plan: ServicePlan, opts: RenderOptions) -> None:
    """``KUBE-FW-``: accept the source ranges (and the node itself when a range holds its IP) into
    ``KUBE-EXT-``; the rest falls through to ``KUBE-PROXY-FIREWALL``'s DROP in the filter table."""
    if not plan.uses_fw:
        return
    sp = plan.sp
    fw, name = sp.fw_chain, sp.name_string
    rs.service_chain(fw)
    accept = commented(fw, quote(f"{name} loadbalancer IP"))
    for cidr in sp.load_balancer_source_ranges:
        rs.nat(accept, "-s", cidr, "-j", sp.ext_chain)
    if any(_holds(cidr, opts.node_ip) for cidr in sp.load_balancer_source_ranges):
        for ip in sp.load_balancer_ips:
            rs.nat(accept, "-s", ip, "-j", sp.ext_chain)
    rs.nat(commented(fw, quote(f"other traffic to {name} will be dropped by KUBE-PROXY-FIREWALL")))


def _holds(cidr: str, ip: str) -> bool:
    """Whether ``cidr`` contains ``ip``; an empty or unparsable value holds nothing."""
    if not ip:
        return False
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def write_nodeports_jump(rs: Ruleset, opts: RenderOptions) -> None:
    """The last rule of ``KUBE-SERVICES``: NodePort traffic (to the nodePortAddresses, else to any
    local address) continues in ``KUBE-NODEPORTS``."""
    if opts.node_port_ips is None:
        dests = [[*LOCAL_DST, *([] if opts.localhost_node_ports else ["!", "-d", LOOPBACK])]]
    else:
        dests = [["-d", ip] for ip in opts.node_port_ips]
    comment = quote("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
    for dest in dests:
        rs.nat(commented(KUBE_SERVICES, comment), dest, "-j", KUBE_NODEPORTS)


def write_localnet_guard(rs: Ruleset, opts: RenderOptions) -> None:
    """With NodePorts on localhost (route_localnet=1), drop 127/8 traffic that is not from 127/8."""
    if not opts.localhost_node_ports:
        return
    rs.filter_chain(KUBE_FIREWALL)
    rs.filter(
        commented(KUBE_FIREWALL, quote("block incoming localnet connections")),
        ["-d", LOOPBACK, "!", "-s", LOOPBACK],
        ["-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT"],
        "-j",
        "DROP",
    )
