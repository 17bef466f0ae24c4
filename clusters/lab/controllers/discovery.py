"""API discovery (``/api``, ``/apis``): which resources the server serves, so the garbage and
namespace controllers act on every resource, not a hard-coded list, as the real ones do."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from clusters.lab.controllers.client import Kube

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resource:
    group_version: str
    name: str
    kind: str
    namespaced: bool
    verbs: frozenset[str]

    @property
    def prefix(self) -> str:
        return (
            f"/api/{self.group_version}" if "/" not in self.group_version else f"/apis/{self.group_version}"
        )

    @property
    def base(self) -> str:
        """The collection across namespaces (what an informer lists)."""
        return f"{self.prefix}/{self.name}"

    def path(self, namespace: str | None, name: str = "") -> str:
        url = (
            f"{self.prefix}/namespaces/{namespace}/{self.name}"
            if self.namespaced and namespace
            else self.base
        )
        return f"{url}/{name}" if name else url


def discover(kube: Kube) -> list[Resource]:
    versions: list[str] = [str(v) for v in kube.get("/api").get("versions") or ["v1"]]
    for group in kube.get("/apis").get("groups") or []:
        preferred = (group.get("preferredVersion") or {}).get("groupVersion")
        if preferred:
            versions.append(str(preferred))
    found: list[Resource] = []
    for gv in versions:
        prefix = f"/api/{gv}" if "/" not in gv else f"/apis/{gv}"
        try:
            body = kube.get(prefix)
        except Exception as err:
            log.warning("discovery of %s failed: %s", gv, str(err).splitlines()[0])
            continue
        for r in body.get("resources") or []:
            name = str(r.get("name", ""))
            if not name or "/" in name:
                continue
            found.append(
                Resource(
                    gv,
                    name,
                    str(r.get("kind", "")),
                    bool(r.get("namespaced")),
                    frozenset(r.get("verbs") or []),
                )
            )
    return found
