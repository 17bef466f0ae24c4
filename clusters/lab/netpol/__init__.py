"""NetworkPolicy enforcement for the lab CNI's policy mode (DESIGN §4), written from the spec.

:mod:`.model` turns API objects into frozen facts, :mod:`.selectors` matches labels,
:mod:`.rules` renders one node's ``filter``-table chains (``KNP-*``) and :mod:`.sync` keeps them
current from the API; the lab CNI agent runs the sync with ``POLICY=enforce``. Nothing here is
shared with ``suites/``: the suite's oracle is the independent check on this enforcement.

Choices, as the enforcing CNIs make them:

- a packet no policy allows is DROPped (Calico, Cilium, kube-network-policies): clients time out;
- replies (conntrack ``ESTABLISHED,RELATED``) always pass, so isolation is per connection;
- a pod may always reach itself; traffic the node itself originates (kubelet probes, the API
  server's pod proxy on the control plane) is never checked, as Calico and Cilium allow
  host→local pod; traffic from ANOTHER node's address is an ordinary non-pod source;
- policy sees Service traffic after kube-proxy's DNAT (the pod IP, not the ClusterIP).

Lab differences (written down, DESIGN §4):

- egress policy is not applied to traffic from a pod to its own node's addresses (that path is
  INPUT, not FORWARD); Calico applies the pod's egress policy there too;
- SCTP rules are rendered and accepted by iptables (nft backend), but this kernel has no SCTP
  sockets (``/proc/net/protocols``), so no SCTP traffic ever exercises them;
- the lab is IPv4 only: IPv6 ipBlocks and pod IPs are ignored;
- a policy the real API server would reject (e.g. ``endPort`` below ``port``) is logged and
  ignored by the sync, so it allows nothing and isolates nothing;
- a new pod is unprotected until the sync sees its IP in the API (kube-network-policies has
  the same window; Calico closes it in its CNI plugin);
- named ports resolve against ``containers[].ports`` (name and protocol), not init containers.
"""
