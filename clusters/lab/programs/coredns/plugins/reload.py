"""reload [INTERVAL] [JITTER] — how often the process re-reads its Corefile (the check is in main).

Defaults 30 s ± 15 s; the interval is at least 2 s, the jitter at least 1 s and at most half the
interval (CoreDNS clamps it). The chain is untouched: this plugin only carries the schedule.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from clusters.lab.programs.coredns.corefile import Directive
from clusters.lab.programs.coredns.plugin import Plugin, SetupContext, arg_error, parse_duration, setup_error

DEFAULT_INTERVAL = 30.0
DEFAULT_JITTER = 15.0


@dataclass(frozen=True)
class Schedule:
    interval: float = DEFAULT_INTERVAL
    jitter: float = DEFAULT_JITTER

    def next_wait(self) -> float:
        """interval ± jitter/2, as CoreDNS draws it for each check."""
        return self.interval + random.uniform(-self.jitter / 2, self.jitter / 2)


class Reload(Plugin):
    name = "reload"

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule


def setup(d: Directive, ctx: SetupContext) -> Reload:
    if len(d.args) > 2 or d.has_block:
        raise arg_error("reload", ctx.path, d)
    try:
        interval = parse_duration(d.args[0]) if d.args else DEFAULT_INTERVAL
        jitter = parse_duration(d.args[1]) if len(d.args) > 1 else DEFAULT_JITTER
    except ValueError as err:
        raise setup_error("reload", ctx.path, d.line, str(err)) from err
    if interval < 2:
        raise setup_error("reload", ctx.path, d.line, "interval value must be greater or equal to 2s")
    if jitter < 1:
        raise setup_error("reload", ctx.path, d.line, "jitter value must be greater or equal to 1s")
    return Reload(Schedule(interval, min(jitter, interval / 2)))
