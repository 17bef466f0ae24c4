"""The plugins the lab CoreDNS runs, by directive name; other real plugins fail start-up clearly."""

from __future__ import annotations

from collections.abc import Callable

from clusters.lab.programs.coredns.corefile import Directive
from clusters.lab.programs.coredns.plugin import Plugin, SetupContext
from clusters.lab.programs.coredns.plugins import cache, forward, http, kubernetes, loop, reload, simple

Setup = Callable[[Directive, SetupContext], Plugin]

SETUPS: dict[str, Setup] = {
    "reload": reload.setup,
    "bind": simple.setup_bind,
    "ready": http.setup_ready,
    "health": http.setup_health,
    "prometheus": http.setup_prometheus,
    "errors": simple.setup_errors,
    "log": simple.setup_log,
    "loadbalance": simple.setup_loadbalance,
    "cache": cache.setup,
    "kubernetes": kubernetes.setup,
    "loop": loop.setup,
    "forward": forward.setup,
}
