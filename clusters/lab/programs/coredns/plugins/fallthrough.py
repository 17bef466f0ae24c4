"""``fallthrough [ZONES...]``: which name errors a plugin hands to the next plugin instead of answering."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clusters.lab.programs.coredns.corefile import fqdn
from clusters.lab.programs.coredns.plugin import zone_match


@dataclass(frozen=True)
class Fallthrough:
    zones: tuple[str, ...] | None  # None: fall through for nothing; (): for every name

    def through(self, qname: str) -> bool:
        if self.zones is None:
            return False
        return not self.zones or bool(zone_match(self.zones, qname))


NEVER = Fallthrough(None)


def parse_fallthrough(args: Sequence[str]) -> Fallthrough:
    return Fallthrough(tuple(fqdn(z) for z in args))
