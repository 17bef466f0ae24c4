"""Schema checks for everything we hand to a cluster we cannot run here.

kind never runs on the machines that build this project, so a manifest or kind config with a
typo would only fail on a user's machine, minutes into a run. Checking each one against the
real schemas (Kubernetes OpenAPI via ``kubernetes-validate``; kind v1alpha4 written down as
JSON schema from reference §1.2) turns that into an immediate one-line error.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate

from clusters.errors import KnetcheckError

K8S_VERSION = "1.36"
"""The Kubernetes minor the pinned kind node image (v1.36.1) runs."""


class ManifestInvalid(KnetcheckError):
    """A manifest or kind config does not match its schema; the message names the object."""


def _where(path: Any) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "(top)"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def validate_manifest(obj: Mapping[str, Any], k8s_version: str = K8S_VERSION) -> None:
    """Raise :class:`ManifestInvalid` unless ``obj`` matches the strict OpenAPI schema of its kind.

    Strict mode rejects unknown fields, the typo class that a real API server silently drops.
    """
    kind = str(obj.get("kind", "?"))
    meta = obj.get("metadata")
    name = str(meta.get("name", "?")) if isinstance(meta, Mapping) else "?"
    label = f"{kind}/{name}"
    if "apiVersion" not in obj or "kind" not in obj:
        raise ManifestInvalid(f"manifest {label}: apiVersion and kind are required")
    try:
        kubernetes_validate.validate(dict(obj), k8s_version, strict=True)
    except kubernetes_validate.ValidationError as err:
        raise ManifestInvalid(
            f"manifest {label} invalid for Kubernetes {k8s_version} at {_where(err.absolute_path)}: "
            f"{_one_line(err.message)}"
        ) from None
    except kubernetes_validate.SchemaNotFoundError as err:
        raise ManifestInvalid(f"manifest {label}: {_one_line(err.message)}") from None
    except kubernetes_validate.utils.VersionNotSupportedError:
        raise ManifestInvalid(
            f"manifest {label}: no schemas for Kubernetes {k8s_version} in kubernetes-validate "
            f"(newest: {kubernetes_validate.latest_version()}); pass an older version"
        ) from None


@functools.cache
def _kind_schema() -> dict[str, Any]:
    text = resources.files("clusters.kind").joinpath("schema/kind-v1alpha4.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def validate_kind_config(obj: Mapping[str, Any]) -> None:
    """Raise :class:`ManifestInvalid` unless ``obj`` is a kind v1alpha4 Cluster config kind accepts."""
    validator = jsonschema.Draft202012Validator(_kind_schema())
    errors = sorted(validator.iter_errors(dict(obj)), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        first = errors[0]
        name = obj.get("name", "?")
        raise ManifestInvalid(
            f"kind config Cluster/{name} invalid at {_where(first.absolute_path)}: {_one_line(first.message)}"
        )
