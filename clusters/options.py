"""The user's options, declared once for pytest and the ``knetcheck`` CLI, and validated into a request.

One table (:data:`OPTIONS`) is rendered into a pytest option group and into argparse, so
``pytest --help`` and ``knetcheck test --help`` can never disagree. Every flag is registered with
no default (``None`` = not given), so :func:`parse` can tell "given" from "defaulted" and fall back
to the environment variable, then to the table's default. Validation lives here, not in argparse:
a bad value becomes one :class:`~clusters.errors.UsageProblem` line that names the choices, which
argparse's two-line usage dump cannot do and which an environment variable would bypass.
"""

from __future__ import annotations

import argparse
import enum
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from clusters import recipes
from clusters.errors import UsageProblem
from clusters.labels import env_run_id, new_run_id
from clusters.provider import ClusterKind, ClusterRequest
from clusters.recipes import CniRecipe, ProviderName

GROUP = "knetcheck"
GROUP_HELP = "knetcheck: which cluster and CNI to check"

DEFAULT_CNI = {ClusterKind.KIND: "kindnet", ClusterKind.LAB: "lab"}
"""The CNI a cluster we create gets when --cni is not given; an existing cluster's is detected."""

_PROVIDER_PHRASE = {
    ProviderName.KIND: "kind",
    ProviderName.EXISTING: "an existing cluster",
    ProviderName.LAB: "the lab",
}


class OptionType(enum.Enum):
    CHOICE = "choice"
    TEXT = "text"
    PATH = "path"
    INT = "int"
    FLAG = "flag"


@dataclass(frozen=True)
class OptionSpec:
    """One option: its flag is ``--<name>``, its pytest/argparse dest ``knetcheck_<name>``."""

    name: str
    type: OptionType
    help: str
    default: str | int | bool | None = None
    choices: tuple[str, ...] = ()
    env: str | None = None
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def dest(self) -> str:
        return "knetcheck_" + self.name.replace("-", "_")

    def help_line(self) -> str:
        """The one-line help, with the default and the environment variable a person can use."""
        extras = []
        if self.default not in (None, False):
            extras.append(f"default {self.default}")
        if self.env:
            extras.append(f"env {self.env}")
        return self.help + (f" ({'; '.join(extras)})" if extras else "")


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "cluster", OptionType.CHOICE, "where to run: create a kind cluster, use an existing one, "
        "start the embedded lab, or auto (kind when Docker answers, else the lab)",
        default="auto", choices=tuple(k.value for k in (ClusterKind.KIND, ClusterKind.EXISTING,
                                                         ClusterKind.LAB, ClusterKind.AUTO)),
        env="CLUSTER",
    ),
    OptionSpec(
        "cni", OptionType.TEXT, "CNI recipe to install (kind: kindnet, lab: lab; existing: detected)",
        env="CNI", metavar="NAME",
    ),
    OptionSpec(
        "kubeconfig", OptionType.PATH, "kubeconfig of an existing cluster (else $KUBECONFIG, "
        "else ~/.kube/config)", metavar="PATH",
    ),
    OptionSpec("context", OptionType.TEXT, "kubeconfig context of an existing cluster "
               "(default: its current-context)", metavar="NAME"),
    OptionSpec("keep-cluster", OptionType.FLAG, "keep the kind cluster or lab after the run, "
               "for debugging or reuse", env="KNETCHECK_KEEP_CLUSTER"),
    OptionSpec("allow-destructive", OptionType.FLAG, "allow node-level faults and kube-system "
               "changes on an existing cluster (privileged debug pods on its nodes)"),
    OptionSpec("node-image", OptionType.TEXT, "kind node image (overrides --k8s-version)",
               env="NODE_IMAGE", metavar="IMAGE"),
    OptionSpec("k8s-version", OptionType.TEXT, "Kubernetes minor version for manifest validation "
               "and the kind node image", env="K8S_VERSION", metavar="X.Y"),
    OptionSpec("nodes", OptionType.INT, "nodes in a cluster knetcheck creates: one control plane "
               "plus workers", default=3, env="KNETCHECK_NODES", metavar="N"),
    OptionSpec("state-dir", OptionType.PATH, "where kubeconfigs, rendered configs and logs go",
               default=".knetcheck", env="KNETCHECK_STATE_DIR", metavar="PATH"),
    OptionSpec("reports-dir", OptionType.PATH, "where JUnit, HTML and JSON reports go",
               default="reports", env="KNETCHECK_REPORTS_DIR", metavar="PATH"),
)
"""Every knetcheck option. --allow-destructive has no environment variable on purpose: changing
someone's nodes should take a flag typed on the command line, not a variable left in a shell."""

SPECS = {spec.name: spec for spec in OPTIONS}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
_K8S_VERSION = re.compile(r"^v?(\d+)\.(\d+)$")


class _AddOption(Protocol):
    def __call__(self, *opts: str, **attrs: Any) -> Any: ...


def _register(add: _AddOption) -> None:
    for spec in OPTIONS:
        kwargs: dict[str, Any] = {"dest": spec.dest, "default": None, "help": spec.help_line()}
        if spec.type is OptionType.FLAG:
            kwargs["action"] = "store_true"
        else:
            kwargs["metavar"] = spec.metavar or ("{" + ",".join(spec.choices) + "}")
        add(spec.flag, **kwargs)


def add_to_pytest(group: Any) -> None:
    """Register :data:`OPTIONS` in a pytest ``OptionGroup`` (typed loosely: pytest's own type)."""
    _register(group.addoption)


def add_to_argparse(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(GROUP, GROUP_HELP)
    _register(group.add_argument)


def given_values(getter: Callable[[str], object]) -> dict[str, object]:
    """The raw values by option name, read through ``getter(dest)`` (pytest or argparse)."""
    return {spec.name: getter(spec.dest) for spec in OPTIONS}


def to_argv(values: Mapping[str, object]) -> list[str]:
    """Turn given values back into flags, so the CLI can hand them to pytest unchanged."""
    argv: list[str] = []
    for spec in OPTIONS:
        value = values.get(spec.name)
        if value is None or value is False:
            continue
        argv.append(spec.flag if value is True else f"{spec.flag}={value}")
    return argv


@dataclass(frozen=True)
class AutoChoice:
    """What ``--cluster=auto`` chose and why, for messages such as "no Docker engine answers"."""

    kind: ClusterKind
    reason: str
    """Why, as a clause: "no Docker engine answers here"."""
    switch: str
    """What would make auto choose otherwise: "start Docker", "put kind on PATH"."""


@dataclass(frozen=True)
class Settings:
    """A validated request plus notes about options that have no effect with the chosen cluster."""

    request: ClusterRequest
    auto: AutoChoice | None
    notes: tuple[str, ...]

    def summary(self) -> str:
        req = self.request
        how = f" (auto: {self.auto.reason})" if self.auto else ""
        cni = req.cni.name if req.cni else "detected from the cluster"
        return f"cluster={req.kind.value}{how}, cni={cni}, run-id={req.run_id}, state-dir={req.state_dir}"


class _Raw:
    """Given value, else environment variable, else default, remembering where each came from."""

    def __init__(self, values: Mapping[str, object], env: Mapping[str, str]):
        self._values = values
        self._env = env

    def get(self, name: str) -> tuple[object, str]:
        spec = SPECS[name]
        value = self._values.get(name)
        if value is not None and value is not False:
            return value, spec.flag
        if spec.env and self._env.get(spec.env, "") != "":
            return self._env[spec.env], f"{spec.env} (for {spec.flag})"
        return (False if spec.type is OptionType.FLAG and spec.default is None else spec.default), "default"

    def given(self, name: str) -> bool:
        return self.get(name)[1] != "default"

    def text(self, name: str) -> str | None:
        value, _ = self.get(name)
        return None if value is None else str(value)

    def flag(self, name: str) -> bool:
        value, origin = self.get(name)
        if isinstance(value, bool):
            return value
        lowered = str(value).strip().lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise UsageProblem(f"{origin} wants true or false, got {value!r}")


def parse(
    values: Mapping[str, object],
    *,
    env: Mapping[str, str] | None = None,
    auto: Callable[[], AutoChoice] | None = None,
    run_id: str | None = None,
) -> Settings:
    """Validate the options into :class:`Settings`; the first problem raises one UsageProblem line.

    ``auto`` decides what ``--cluster=auto`` means (default :func:`clusters.registry.resolve_auto`);
    it is only called when needed, so ``--cluster=lab`` never runs ``docker``.
    """
    environ = os.environ if env is None else env
    raw = _Raw(values, environ)
    kind, auto_choice = _cluster_kind(raw, auto)
    nodes = _nodes(raw)
    k8s_version = _k8s_version(raw)
    kubeconfig, context = _kubeconfig(raw, kind, environ)
    cni = _cni(raw, kind, auto_choice)
    state_dir = Path(raw.text("state-dir") or ".knetcheck")
    if state_dir.exists() and not state_dir.is_dir():
        raise UsageProblem(f"--state-dir {state_dir} is a file; give a directory (created if missing)")
    keep = raw.flag("keep-cluster")
    destructive = raw.flag("allow-destructive")
    request = ClusterRequest(
        kind=kind,
        cni=cni,
        run_id=run_id or env_run_id() or new_run_id(),
        state_dir=state_dir,
        kubeconfig=kubeconfig,
        context=context,
        keep_cluster=keep,
        allow_destructive=destructive,
        node_image=raw.text("node-image"),
        k8s_version=k8s_version,
        nodes=nodes,
    )
    return Settings(request=request, auto=auto_choice, notes=_notes(raw, kind))


def build_request(values: Mapping[str, object], **kwargs: Any) -> ClusterRequest:
    """:func:`parse` without the notes: the validated :class:`ClusterRequest`."""
    return parse(values, **kwargs).request


def reports_dir(values: Mapping[str, object], env: Mapping[str, str] | None = None) -> Path:
    return Path(_Raw(values, os.environ if env is None else env).text("reports-dir") or "reports")


def _cluster_kind(
    raw: _Raw, auto: Callable[[], AutoChoice] | None
) -> tuple[ClusterKind, AutoChoice | None]:
    value, origin = raw.get("cluster")
    choices = SPECS["cluster"].choices
    if str(value) not in choices:
        raise UsageProblem(f"unknown {origin} {value!r}; choose one of: {', '.join(choices)}")
    kind = ClusterKind(str(value))
    if kind is not ClusterKind.AUTO:
        return kind, None
    if raw.given("kubeconfig") or raw.given("context"):
        raise UsageProblem(
            "--kubeconfig/--context name an existing cluster: add --cluster=existing "
            "(auto never picks an existing cluster by itself)"
        )
    if auto is None:
        from clusters import registry

        auto = registry.resolve_auto
    choice = auto()
    return choice.kind, choice


def _nodes(raw: _Raw) -> int:
    value, origin = raw.get("nodes")
    try:
        nodes = int(str(value))
    except ValueError:
        nodes = 0
    if nodes < 1:
        raise UsageProblem(f"{origin} wants a whole number of nodes >= 1, got {value!r}")
    return nodes


def _k8s_version(raw: _Raw) -> str | None:
    value, origin = raw.get("k8s-version")
    if value is None:
        return None
    match = _K8S_VERSION.match(str(value).strip())
    if not match:
        raise UsageProblem(f"{origin} wants a Kubernetes minor version X.Y (e.g. 1.32), got {value!r}")
    return f"{int(match[1])}.{int(match[2])}"


def _kubeconfig(
    raw: _Raw, kind: ClusterKind, environ: Mapping[str, str]
) -> tuple[Path | None, str | None]:
    """For an existing cluster: the kubeconfig file kubectl would use, and a context that is in it."""
    if kind is not ClusterKind.EXISTING:
        if raw.given("kubeconfig") or raw.given("context"):
            raise UsageProblem(
                f"--kubeconfig/--context are for --cluster=existing; a {kind.value} cluster writes "
                "its own kubeconfig under --state-dir"
            )
        return None, None
    path = kubeconfig_path(raw.text("kubeconfig"), environ)
    doc = read_kubeconfig(path)
    contexts = _context_names(doc)
    if not contexts:
        raise UsageProblem(f"kubeconfig {path} has no contexts: is it a kubeconfig? pass another "
                           "--kubeconfig")
    context = raw.text("context")
    if context is None:
        current = doc.get("current-context") if isinstance(doc, dict) else None
        if not current:
            raise UsageProblem(f"kubeconfig {path} has no current-context: pass --context, one of: "
                               f"{', '.join(contexts)}")
        context = str(current)
        if context not in contexts:
            raise UsageProblem(f"kubeconfig {path} has current-context {context!r}, which it does not "
                               f"define: pass --context, one of: {', '.join(contexts)}")
    if context not in contexts:
        raise UsageProblem(f"unknown --context {context!r} in kubeconfig {path}; choose one of: "
                           f"{', '.join(contexts)}")
    return path, context


def read_kubeconfig(path: Path) -> Any:
    """The parsed kubeconfig at ``path``; a missing, unreadable or malformed file is one line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageProblem(
            f"kubeconfig {path} does not exist: pass --kubeconfig=PATH or set KUBECONFIG"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise UsageProblem(f"kubeconfig {path} is not readable ({reason}): fix it or pass another "
                           "--kubeconfig") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageProblem(f"kubeconfig {path} is not valid YAML{where}: fix it or pass another "
                           "--kubeconfig") from None


def kubeconfig_path(given: str | None, environ: Mapping[str, str]) -> Path:
    """The kubeconfig kubectl would use: ``given``, else a single-file ``KUBECONFIG``, else ~/.kube/config."""
    if given:
        return Path(given).expanduser()
    from_env = environ.get("KUBECONFIG", "")
    if from_env:
        parts = [p for p in from_env.split(os.pathsep) if p]
        if len(parts) > 1:
            raise UsageProblem(
                f"KUBECONFIG lists {len(parts)} files; knetcheck needs one: pass --kubeconfig=PATH"
            )
        return Path(parts[0]).expanduser()
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".kube" / "config"


def _context_names(doc: object) -> list[str]:
    if not isinstance(doc, dict):
        return []
    entries = doc.get("contexts") or []
    if not isinstance(entries, list):
        return []
    return [str(e["name"]) for e in entries if isinstance(e, dict) and e.get("name")]


def _cni(raw: _Raw, kind: ClusterKind, auto: AutoChoice | None) -> CniRecipe | None:
    name = raw.text("cni")
    provider = ProviderName(kind.value)
    if name is None:
        default = DEFAULT_CNI.get(kind)
        return recipes.load_recipe(default) if default else None
    recipe = recipes.load_recipe(name)
    if recipe.supports(provider):
        return recipe
    needs = " or ".join(_PROVIDER_PHRASE[p] for p in ProviderName if recipe.supports(p)) or "no provider"
    fits = recipes.recipe_names(provider)
    use = f"--cni={fits[0]}" + (f" (or {', '.join(fits[1:])})" if len(fits) > 1 else "") if fits else ""
    if auto is not None:
        fix = f"use {use} or {auto.switch}" if use else auto.switch
        chose = "the lab" if kind is ClusterKind.LAB else kind.value
        raise UsageProblem(f"cni={name} needs {needs}; {auto.reason}, so --cluster=auto chose {chose}: "
                           f"{fix}")
    fix = f"use {use}" if use else "choose another --cluster"
    raise UsageProblem(f"cni={name} needs {needs}, not --cluster={kind.value}: {fix}")


def _notes(raw: _Raw, kind: ClusterKind) -> tuple[str, ...]:
    """Options accepted but without effect on this cluster, said once so nobody wonders."""
    notes = []
    if kind is not ClusterKind.EXISTING and raw.flag("allow-destructive"):
        notes.append(f"--allow-destructive has no effect on a {kind.value} cluster: knetcheck made it, "
                     "so node-level faults always run there")
    if kind is ClusterKind.EXISTING:
        for name in ("keep-cluster", "node-image", "nodes"):
            if raw.given(name) and (name != "keep-cluster" or raw.flag(name)):
                notes.append(f"{SPECS[name].flag} has no effect on an existing cluster: knetcheck never "
                             "creates or deletes it")
    if kind is ClusterKind.LAB and raw.given("node-image"):
        notes.append("--node-image has no effect on the lab: it runs no node images")
    return tuple(notes)
