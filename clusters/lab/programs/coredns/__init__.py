"""CoreDNS as a lab program: ``python -m clusters.lab.programs.coredns -conf /etc/coredns/Corefile``.

It reads the Corefile kubeadm writes (both the ≥1.32 and older shapes load unchanged) and runs the
plugins that file uses — errors, health, ready, kubernetes, prometheus, forward, cache, loop,
reload, loadbalance — plus bind and log, with CoreDNS's start-up lines, error wording and the
real loop detection (a self-probe that halts the process with the FATAL line). Differences from
real CoreDNS are listed in ``DIFFERENCES``.
"""

from __future__ import annotations

VERSION = "1.12.1"
GO_VERSION = "go1.24.1"
COMMIT = "707c7c1"  # the banner's commit field (the real v1.12.1 image prints its git short hash)

DIFFERENCES = (
    "Only these plugins run: bind, cache, errors, forward, health, kubernetes, loadbalance, log, loop, "
    "prometheus, ready, reload; other real plugins fail start-up with a 'not supported in the lab' line.",
    "Listens on IPv4 only (0.0.0.0 unless bind says otherwise).",
    "kubernetes: labels, namespace_labels, endpoint_pod_names, noendpoints, ignore empty_service, "
    "multicluster and tls are accepted and ignored; no wildcard queries; no autopath.",
    "forward: no health checks, no connection reuse, no TLS upstreams; max_concurrent answers REFUSED.",
    "cache: prefetch, serve_stale and servfail are accepted and ignored; SERVFAIL is never cached.",
    "loadbalance rotates address records in turn rather than shuffling them.",
    "reload restarts all listeners (a brief gap) instead of handing the sockets over.",
    "prometheus exposes only build info and request/response counters.",
)
