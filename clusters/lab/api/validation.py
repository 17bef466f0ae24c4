"""Validate incoming objects against the real Kubernetes JSON schemas (kubernetes-validate).

Schema errors become the real apiserver's answers: a missing required field or a bad name is
422 Invalid with causes; a field of the wrong JSON type is 400 BadRequest (the real server fails
to decode it); an unknown field is 400 under ``fieldValidation=Strict`` and a warning otherwise.
Schemas load lazily on first use so the server starts fast.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate
from referencing import Registry, Resource

from clusters.lab.api import status
from clusters.lab.api.resources import ResourceType

K8S_VERSION = "1.36.0"
_SCHEMA_ROOT = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
_lock = threading.Lock()
_registries: dict[bool, Registry] = {}
_validators: dict[tuple[str, bool], Any] = {}

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAMES = {"Namespace", "Service"}
_PATH_NAMES = {"Node", "Event", "Lease", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


@dataclass(frozen=True)
class Outcome:
    warnings: tuple[str, ...]


def _schema_dir(strict: bool) -> Path:
    return _SCHEMA_ROOT / (f"v{K8S_VERSION}-local" + ("-strict" if strict else ""))


def _validator(rt: ResourceType, strict: bool) -> Any:
    key = (rt.key, strict)
    with _lock:
        if key in _validators:
            return _validators[key]
        if strict not in _registries:
            defs = json.loads((_schema_dir(strict) / "_definitions.json").read_text())
            _registries[strict] = Resource.from_contents(defs) @ Registry()
        group = rt.group.split(".", 1)[0]
        name = f"{rt.kind.lower()}-{group + '-' if group else ''}{rt.version}.json"
        path = _schema_dir(strict) / name
        if not path.is_file():
            _validators[key] = None
            return None
        schema = json.loads(path.read_text())
        registry = Resource.from_contents(schema) @ _registries[strict]
        _validators[key] = jsonschema.validators.Draft202012Validator(schema, registry=registry)
        return _validators[key]


def _field(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_GO_TYPES = {"integer": "int32", "string": "string", "boolean": "bool", "object": "map", "array": "slice"}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _leaf_errors(errors: Iterator[Any]) -> Iterator[Any]:
    for err in errors:
        if err.context:
            yield from _leaf_errors(iter(err.context))
        else:
            yield err


def validate(rt: ResourceType, obj: dict[str, Any], field_validation: str = "Warn") -> Outcome:
    """Raise :class:`status.ApiError` like the real server would; return warnings otherwise."""
    name = str(obj.get("metadata", {}).get("name") or "")
    warnings: list[str] = []
    lenient = _validator(rt, strict=False)
    if lenient is not None:
        causes: list[tuple[str, str, str]] = []
        for err in sorted(lenient.iter_errors(obj), key=lambda e: list(map(str, e.path))):
            field = _field(err.absolute_path)
            if err.validator == "required":
                missing = re.findall(r"'([^']+)' is a required property", err.message)
                for m in missing:
                    causes.append(("FieldValueRequired", f"{field}.{m}" if field else m, "Required value"))
            elif err.validator == "type":
                expected = err.validator_value
                if isinstance(expected, list):
                    expected = next(t for t in expected if t != "null")
                raise status.bad_request(
                    f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: json: cannot '
                    f"unmarshal {_json_type(err.instance)} into Go struct field .{field} of type "
                    f"{_GO_TYPES.get(str(expected), str(expected))}"
                )
            elif err.validator == "enum":
                allowed = ", ".join(json.dumps(v) for v in err.validator_value if v is not None)
                causes.append(
                    (
                        "FieldValueNotSupported",
                        field,
                        f"Unsupported value: {json.dumps(err.instance)}: supported values: {allowed}",
                    )
                )
            else:
                causes.append(
                    ("FieldValueInvalid", field, f"Invalid value: {json.dumps(err.instance)}: {err.message}")
                )
        causes.extend(_semantic(rt, obj))
        if causes:
            raise status.invalid(rt, name, causes)
    else:
        causes = _semantic(rt, obj)
        if causes:
            raise status.invalid(rt, name, causes)
    if field_validation in ("Strict", "Warn"):
        strict = _validator(rt, strict=True)
        unknown: list[str] = []
        if strict is not None:
            for err in _leaf_errors(strict.iter_errors(obj)):
                if err.validator == "additionalProperties":
                    extra = re.findall(r"'([^']+)' was unexpected", err.message)
                    base = _field(err.absolute_path)
                    unknown.extend(f"{base}.{e}" if base else e for e in extra)
        if unknown and field_validation == "Strict":
            joined = ", ".join(f'unknown field "{u}"' for u in sorted(set(unknown)))
            raise status.bad_request(f"strict decoding error: {joined}")
        warnings.extend(f'unknown field "{u}"' for u in sorted(set(unknown)))
    return Outcome(tuple(warnings))


def _name_cause(kind: str, name: str) -> tuple[str, str, str] | None:
    if kind in _PATH_NAMES:
        bad = "/" in name or "%" in name or name in (".", "..")
        msg = "may not contain '/'" if bad else ""
    elif kind in _LABEL_NAMES:
        pattern = DNS1035_LABEL if kind == "Service" else DNS1123_LABEL
        bad = len(name) > 63 or not pattern.match(name)
        label = "DNS-1035" if kind == "Service" else "RFC 1123"
        msg = (
            f"a lowercase {label} label must consist of lower case alphanumeric characters or '-', "
            + ("start with an alphabetic character, " if kind == "Service" else "")
            + "and end with an alphanumeric character"
        )
    else:
        bad = len(name) > 253 or not DNS1123_SUBDOMAIN.match(name)
        msg = (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character"
        )
    if bad:
        return ("FieldValueInvalid", "metadata.name", f'Invalid value: "{name}": {msg}')
    return None


def _semantic(rt: ResourceType, obj: dict[str, Any]) -> list[tuple[str, str, str]]:
    causes: list[tuple[str, str, str]] = []
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    if not name:
        causes.append(
            ("FieldValueRequired", "metadata.name", "Required value: name or generateName is required")
        )
    else:
        cause = _name_cause(rt.kind, name)
        if cause:
            causes.append(cause)
    raw_spec = obj.get("spec")
    spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
    if rt.kind == "Pod":
        causes.extend(_pod_spec(spec, "spec"))
    elif rt.kind in ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet"):
        template = spec.get("template") or {}
        causes.extend(_pod_spec(template.get("spec") or {}, "spec.template.spec"))
        selector = spec.get("selector")
        if not selector:
            causes.append(("FieldValueRequired", "spec.selector", "Required value"))
        else:
            from clusters.lab.api.selectors import from_label_selector

            labels = (template.get("metadata") or {}).get("labels") or {}
            if not from_label_selector(selector).matches(labels):
                causes.append(
                    (
                        "FieldValueInvalid",
                        "spec.template.metadata.labels",
                        f"Invalid value: {json.dumps(labels)}: `selector` does not match template `labels`",
                    )
                )
    elif rt.kind == "Service":
        ports = spec.get("ports") or []
        if spec.get("type", "ClusterIP") != "ExternalName" and spec.get("clusterIP") != "None" and not ports:
            causes.append(("FieldValueRequired", "spec.ports", "Required value"))
        if len(ports) > 1:
            for i, port in enumerate(ports):
                if isinstance(port, dict) and not port.get("name"):
                    causes.append(("FieldValueRequired", f"spec.ports[{i}].name", "Required value"))
    return causes


def _pod_spec(spec: dict[str, Any], base: str) -> list[tuple[str, str, str]]:
    causes: list[tuple[str, str, str]] = []
    containers = spec.get("containers")
    if isinstance(containers, list) and not containers:
        causes.append(("FieldValueRequired", f"{base}.containers", "Required value"))
    seen: set[str] = set()
    for key in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(key) or []):
            if not isinstance(c, dict):
                continue
            cname = str(c.get("name") or "")
            field = f"{base}.{key}[{i}]"
            if cname and not DNS1123_LABEL.match(cname):
                causes.append(
                    (
                        "FieldValueInvalid",
                        f"{field}.name",
                        f'Invalid value: "{cname}": a lowercase RFC 1123 label must consist of lower '
                        "case alphanumeric characters or '-', and must start and end with an "
                        "alphanumeric character",
                    )
                )
            if cname in seen:
                causes.append(("FieldValueDuplicate", f"{field}.name", f'Duplicate value: "{cname}"'))
            seen.add(cname)
            if not c.get("image"):
                causes.append(("FieldValueRequired", f"{field}.image", "Required value"))
    return causes


def warm() -> None:
    """Load the schemas for the most used kinds (call from a background thread)."""
    from clusters.lab.api.resources import RESOURCES

    for rt in RESOURCES[:3]:
        _validator(rt, strict=False)
        _validator(rt, strict=True)
