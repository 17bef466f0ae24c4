"""Lab programs: what the lab runs for a container image (agnhost, CoreDNS, kube-proxy, …)."""
