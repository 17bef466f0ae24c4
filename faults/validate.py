"""Loading and checking experiment files before anything runs.

Chaos Toolkit's own check (``ensure_experiment_is_valid``: shape, tolerances, ``sig.bind`` of
python activities) runs first, never its ``discover()`` (which would ``pip install``). Then ours:
every activity is one of our exported functions and its arguments bind, and the ``knetcheck``
extension block says which finding the experiment expects, what it needs from the cluster, and
which method activities are the inject, the detection probe and the fix (the runner times those).
Any problem is ONE line naming the file and the fix.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from clusters.capabilities import Capability
from clusters.errors import UsageProblem
from faults.findings import FindingId

log = logging.getLogger(__name__)

EXTENSION = "knetcheck"
Experiment = dict[str, Any]


@dataclass(frozen=True)
class KnetcheckExtension:
    """The experiment's contract with the pytest runner."""

    expected_finding: FindingId
    needs: frozenset[Capability]
    destructive: bool
    inject: str
    detect: str
    fix: str


def experiments_dir() -> Path:
    return Path(str(resources.files("faults") / "experiments"))


def experiment_paths() -> list[Path]:
    """Every shipped experiment file, by name."""
    return sorted(experiments_dir().glob("*.json"))


def load(path: Path) -> Experiment:
    """The experiment in ``path``; unreadable or non-JSON is one line."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageProblem(f"{path}: cannot read the experiment ({exc.strerror}); check the path") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise UsageProblem(f"{path}: not valid JSON at {where}: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise UsageProblem(f"{path}: an experiment is a JSON object, not {type(doc).__name__}")
    return doc


def activities(experiment: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(where, activity) for the hypothesis probes, the method and the rollbacks."""
    for i, probe in enumerate((experiment.get("steady-state-hypothesis") or {}).get("probes") or []):
        yield f"steady-state-hypothesis probe {i + 1}", probe
    for i, act in enumerate(experiment.get("method") or []):
        yield f"method activity {i + 1}", act
    for i, act in enumerate(experiment.get("rollbacks") or []):
        yield f"rollback {i + 1}", act


def check_activity(where: str, activity: Mapping[str, Any]) -> None:
    """Our activities only: module under ``faults``, a function in its ``__all__``, arguments bind."""
    name = activity.get("name", "?")
    provider = activity.get("provider") or {}
    if provider.get("type") != "python":
        raise UsageProblem(f"{where} ({name}): provider type must be 'python', got {provider.get('type')!r}")
    module_name, func_name = str(provider.get("module", "")), str(provider.get("func", ""))
    if not module_name.startswith("faults."):
        raise UsageProblem(f"{where} ({name}): module {module_name!r} is not a knetcheck activity module "
                           "(faults.actions.* or faults.probes)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageProblem(f"{where} ({name}): cannot import {module_name}: {exc}") from None
    exported = getattr(module, "__all__", ())
    if func_name not in exported:
        raise UsageProblem(f"{where} ({name}): {module_name} exports no activity {func_name!r}; "
                           f"choose one of: {', '.join(exported)}")
    arguments = dict(provider.get("arguments") or {})
    for reserved in ("configuration", "secrets"):
        if reserved in arguments:
            raise UsageProblem(
                f"{where} ({name}): {reserved!r} is passed by Chaos Toolkit, not as an argument"
            )
    try:
        inspect.signature(getattr(module, func_name)).bind(**arguments)
    except TypeError as exc:
        raise UsageProblem(
            f"{where} ({name}): arguments do not fit {module_name}.{func_name}: {exc}"
        ) from None


def extension(experiment: Mapping[str, Any]) -> KnetcheckExtension:
    """The ``knetcheck`` extension block, checked against the method."""
    blocks = [e for e in experiment.get("extensions") or []
              if isinstance(e, dict) and e.get("name") == EXTENSION]
    if len(blocks) != 1:
        raise UsageProblem('needs exactly one extension {"name": "knetcheck", "expected_finding": ..., '
                           '"inject": ..., "detect": ..., "fix": ...}')
    raw = blocks[0]
    try:
        finding = FindingId(str(raw.get("expected_finding")))
    except ValueError:
        raise UsageProblem(f"expected_finding {raw.get('expected_finding')!r} is not a doctor finding id; "
                           f"choose one of: {', '.join(f.value for f in FindingId)}") from None
    try:
        needs = frozenset(Capability.parse(str(n)) for n in raw.get("needs") or [])
    except ValueError as exc:
        raise UsageProblem(f"knetcheck extension needs: {exc}") from None
    names = [str(a.get("name")) for a in experiment.get("method") or []]
    ext = KnetcheckExtension(finding, needs, bool(raw.get("destructive", False)),
                             str(raw.get("inject")), str(raw.get("detect")), str(raw.get("fix")))
    for role in ("inject", "detect", "fix"):
        if getattr(ext, role) not in names:
            raise UsageProblem(f"knetcheck extension {role} {getattr(ext, role)!r} names no method activity; "
                               f"method activities: {', '.join(names)}")
    if not names.index(ext.inject) < names.index(ext.detect) < names.index(ext.fix):
        raise UsageProblem("knetcheck extension: the method must run inject, then detect, then fix")
    detect = (experiment["method"][names.index(ext.detect)].get("provider") or {})
    args = detect.get("arguments") or {}
    if detect.get("func") != "doctor_finds" or args.get("finding_id") != finding.value:
        raise UsageProblem(f"knetcheck extension detect {ext.detect!r} must be faults.probes.doctor_finds "
                           f"with finding_id {finding.value!r}")
    return ext


def validate(experiment: Mapping[str, Any], where: str = "experiment") -> KnetcheckExtension:
    """Check ``experiment`` fully (chaoslib's rules, then ours); raise one line naming ``where``."""
    from chaoslib.exceptions import ChaosException
    from chaoslib.experiment import ensure_experiment_is_valid

    try:
        ensure_experiment_is_valid(copy.deepcopy(dict(experiment)))
    except ChaosException as exc:
        raise UsageProblem(f"{where}: {' '.join(str(exc).split())}") from None
    try:
        for place, activity in activities(experiment):
            check_activity(place, activity)
        return extension(experiment)
    except UsageProblem as exc:
        raise UsageProblem(f"{where}: {exc}") from None


def load_valid(path: Path) -> tuple[Experiment, KnetcheckExtension]:
    doc = load(path)
    return doc, validate(doc, str(path))
