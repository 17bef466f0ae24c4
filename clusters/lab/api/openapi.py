"""OpenAPI v3 documents, built from the real schemas kubernetes-validate ships.

kubectl 1.32 reads ``/openapi/v3`` for three things: whether the server validates fields
itself (a PATCH operation carrying the ``fieldValidation`` query parameter — then ``create -f``
and ``apply -f`` send ``fieldValidation=Strict`` instead of validating client-side), the
patch merge keys for ``apply``, and ``explain``. Each group-version document holds the paths
of its resources and the schemas they reach, with ``$ref``s rewritten to components.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from aiohttp import web

from clusters.lab.api import resources, status, validation
from clusters.lab.api.resources import ResourceType

_lock = threading.Lock()
_defs: dict[str, Any] | None = None
_docs: dict[str, bytes] = {}
_REF_PREFIX = "#/$defs/"


def _definitions() -> dict[str, Any]:
    global _defs
    if _defs is None:
        raw = json.loads((validation._schema_dir(False) / "_definitions.json").read_text())["$defs"]
        _defs = {name: _convert(schema) for name, schema in raw.items()}
    return _defs


def _convert(node: Any) -> Any:
    """JSON-schema-with-nulls -> OpenAPI v3: component refs and no ``null`` in ``type``."""
    if isinstance(node, list):
        return [_convert(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k == "$ref" and isinstance(v, str):
            out[k] = "#/components/schemas/" + v.split("#/$defs/", 1)[-1]
        elif k == "type" and isinstance(v, list):
            types = [t for t in v if t != "null"]
            if len(types) == 1:
                out[k] = types[0]
            elif types:
                out[k] = types
        elif k == "enum" and isinstance(v, list):
            out[k] = [e for e in v if e is not None]
        else:
            out[k] = _convert(v)
    return out


def _def_name(rt: ResourceType, defs: dict[str, Any]) -> str | None:
    for name, schema in defs.items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            if (
                gvk.get("group") == rt.group
                and gvk.get("version") == rt.version
                and gvk.get("kind") == rt.kind
            ) and not name.startswith("io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent"):
                return name
    return None


def _closure(roots: list[str], defs: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen[name] = defs[name]
        text = json.dumps(defs[name])
        for part in text.split('"#/components/schemas/')[1:]:
            todo.append(part.split('"', 1)[0])
    return seen


_PARAMS = [
    {"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
    for n in ("dryRun", "fieldManager", "fieldValidation", "pretty")
]


def _gv_doc(group: str, version: str) -> dict[str, Any] | None:
    types = list(resources.in_group(group, version))
    if not types:
        return None
    defs = _definitions()
    prefix = f"/apis/{group}/{version}" if group else "/api/v1"
    paths: dict[str, Any] = {}
    roots = ["io.k8s.apimachinery.pkg.apis.meta.v1.Status", "io.k8s.apimachinery.pkg.apis.meta.v1.Patch"]
    for rt in types:
        def_name = _def_name(rt, defs)
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        ref = {"$ref": f"#/components/schemas/{def_name}"} if def_name else {"type": "object"}
        if def_name:
            roots.append(def_name)
        base = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"
        ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}
        paths[f"{base}/{{name}}"] = {
            "get": {
                "operationId": f"read{rt.kind}",
                "responses": ok,
                "x-kubernetes-action": "get",
                "x-kubernetes-group-version-kind": gvk,
            },
            "put": {
                "operationId": f"replace{rt.kind}",
                "parameters": _PARAMS,
                "responses": ok,
                "requestBody": {"content": {"*/*": {"schema": ref}}, "required": True},
                "x-kubernetes-action": "put",
                "x-kubernetes-group-version-kind": gvk,
            },
            "patch": {
                "operationId": f"patch{rt.kind}",
                "parameters": [*_PARAMS, {"name": "force", "in": "query", "schema": {"type": "boolean"}}],
                "responses": ok,
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
                "requestBody": {
                    "content": {
                        "application/strategic-merge-patch+json": {
                            "schema": {
                                "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
                            }
                        }
                    },
                    "required": True,
                },
            },
            "delete": {
                "operationId": f"delete{rt.kind}",
                "responses": ok,
                "x-kubernetes-action": "delete",
                "x-kubernetes-group-version-kind": gvk,
            },
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
            + (
                [{"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}]
                if rt.namespaced
                else []
            ),
        }
        paths[base] = {
            "post": {
                "operationId": f"create{rt.kind}",
                "parameters": _PARAMS,
                "responses": ok,
                "requestBody": {"content": {"*/*": {"schema": ref}}, "required": True},
                "x-kubernetes-action": "post",
                "x-kubernetes-group-version-kind": gvk,
            },
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.36.1"},
        "paths": paths,
        "components": {"schemas": _closure(roots, defs)},
    }


def _doc_bytes(key: str) -> bytes | None:
    with _lock:
        if key not in _docs:
            group, _, version = key.rpartition("/")
            doc = _gv_doc(group, version)
            if doc is None:
                return None
            _docs[key] = json.dumps(doc, separators=(",", ":")).encode()
        return _docs[key]


def _gv_keys() -> list[tuple[str, str]]:
    """(path under /openapi/v3, internal key "group/version")."""
    seen = dict.fromkeys((rt.group, rt.version) for rt in resources.RESOURCES)
    return [((f"apis/{g}/{v}" if g else "api/v1"), f"{g}/{v}") for g, v in seen]


def _hash(key: str) -> str:
    return hashlib.sha512(key.encode()).hexdigest()[:32].upper()


def handle(request: web.Request, parts: list[str]) -> web.Response:
    if parts == ["v3"]:
        index = {
            "paths": {
                path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={_hash(key)}"}
                for path, key in _gv_keys()
            }
        }
        return web.Response(body=json.dumps(index).encode(), content_type="application/json")
    if parts and parts[0] == "v3":
        wanted = "/".join(parts[1:])
        for path, key in _gv_keys():
            if path == wanted:
                body = _doc_bytes(key)
                if body is not None:
                    return web.Response(
                        body=body,
                        content_type="application/json",
                        headers={"Cache-Control": "public, immutable"},
                    )
    raise status.path_not_found()
