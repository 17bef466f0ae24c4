"""Doctor output: a block per finding for a person, or JSON for scripts and experiments.

The JSON is :meth:`Finding.to_dict` per finding, so an experiment's probe and a person's eyes read
the same ids and evidence.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from faults.findings import Finding

NO_FINDINGS = "no findings"


def text(findings: Sequence[Finding], *, elapsed: float | None = None) -> str:
    if not findings:
        return NO_FINDINGS + (f" ({elapsed:.1f}s)" if elapsed is not None else "")
    blocks = []
    for f in findings:
        lines = [f"[{f.severity.value}] {f.id.value}  {f.subject}", f"  {f.summary}", "  evidence:"]
        lines += [f"    - {e}" for e in f.evidence]
        lines.append(f"  fix: {f.fix}")
        if f.related:
            lines.append(f"  related: {', '.join(f.related)}")
        blocks.append("\n".join(lines))
    tail = f"{len(findings)} finding(s)" + (f" in {elapsed:.1f}s" if elapsed is not None else "")
    return "\n\n".join([*blocks, tail])


def as_json(findings: Sequence[Finding], *, elapsed: float | None = None) -> str:
    doc: dict[str, object] = {"findings": [f.to_dict() for f in findings]}
    if elapsed is not None:
        doc["elapsed_seconds"] = round(elapsed, 2)
    return json.dumps(doc, indent=2)
