"""The three patch formats kubectl and client libraries send.

JSON merge patch (RFC 7386), JSON patch (RFC 6902), and strategic merge patch: a merge patch
whose lists of named things (containers, env, ports, …) merge element-wise by a merge key, with
the ``$patch``, ``$setElementOrder``, ``$deleteFromPrimitiveList`` and ``$retainKeys``
directives kubectl apply emits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clusters.lab.api.store import clone


class PatchError(Exception):
    """The patch cannot be applied; the message says why (the server answers 422 or 400)."""


# -- RFC 7386 ----------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return clone(patch)
    result = clone(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# -- RFC 6902 ----------------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> tuple[Any, str]:
    cur = doc
    for part in parts[:-1]:
        if isinstance(cur, dict):
            if part not in cur:
                raise PatchError(f"doc is missing path: /{'/'.join(parts)}")
            cur = cur[part]
        elif isinstance(cur, list):
            cur = cur[_index(cur, part, False)]
        else:
            raise PatchError(f"doc is missing path: /{'/'.join(parts)}")
    return cur, parts[-1]


def _index(lst: list[Any], part: str, adding: bool) -> int:
    if adding and part == "-":
        return len(lst)
    try:
        idx = int(part)
    except ValueError:
        raise PatchError(f"invalid array index {part!r}") from None
    if idx < 0 or idx > len(lst) or (idx == len(lst) and not adding):
        raise PatchError(f"array index out of bounds: {idx}")
    return idx


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent, last = _parent(doc, parts)
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"doc is missing key: {path}")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, False)]
    raise PatchError(f"doc is missing path: {path}")


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent, last = _parent(doc, parts)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, True), value)
    else:
        raise PatchError(f"doc is missing path: {path}")
    return doc


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent, last = _parent(doc, parts)
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"Unable to remove nonexistent key: {last}: missing value")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, False)]
    else:
        raise PatchError(f"doc is missing path: {path}")
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = clone(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, clone(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = _remove(doc, path) if _pointer(path) else doc
            doc = _add(doc, path, clone(op.get("value")))
        elif kind == "move":
            value = _get(doc, op["from"])
            doc = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, clone(_get(doc, op["from"])))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}")
    return doc


# -- strategic merge patch ---------------------------------------------------------------------

_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "addresses": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "readinessGates": "conditionType",
}
_PRIMITIVE_MERGE = {"finalizers"}


def _merge_key(path: Sequence[str], field: str) -> str | None:
    if field == "ports":
        # Container ports merge on containerPort; Service (and most other) ports on port.
        return "containerPort" if path and path[-1] in ("containers", "initContainers") else "port"
    if field == "conditions" and "spec" in path:
        return None
    if field == "addresses" and path[-1:] != ["status"]:
        return None
    return _MERGE_KEYS.get(field)


def strategic_merge(original: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    if not isinstance(patch, dict):
        return clone(patch)
    if patch.get("$patch") == "replace":
        return {k: clone(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result: dict[str, Any] = clone(original) if isinstance(original, dict) else {}
    orders: dict[str, list[Any]] = {}
    retain: list[str] | None = None
    for key, value in patch.items():
        if key == "$patch":
            continue
        if key == "$retainKeys":
            retain = list(value or [])
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = list(value or [])
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in (value or [])]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value, (*path, key))
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, path, key)
        else:
            result[key] = value
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _apply_order(result[field], order, _merge_key(path, field))
    if retain is not None:
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(original: Any, patch: list[Any], path: tuple[str, ...], field: str) -> list[Any]:
    orig = original if isinstance(original, list) else []
    if field in _PRIMITIVE_MERGE:
        out = list(orig)
        for v in patch:
            if v not in out:
                out.append(v)
        return out
    key = _merge_key(path, field)
    if key is None or not all(isinstance(p, dict) for p in patch):
        return [clone(p) for p in patch]
    if any(p.get("$patch") == "replace" for p in patch):
        return [clone(p) for p in patch if p.get("$patch") != "replace"]
    out = [clone(o) for o in orig]
    for item in patch:
        if key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}")
        idx = next((i for i, o in enumerate(out) if isinstance(o, dict) and o.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
            continue
        if idx is None:
            out.append({k: clone(v) for k, v in item.items() if k != "$patch"})
        else:
            out[idx] = strategic_merge(out[idx], item, (*path, field))
    return out


def _apply_order(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """Reorder per ``$setElementOrder``; items the order does not name keep their place at the end."""
    if key is None:
        return items

    def ident(item: Any) -> Any:
        return item.get(key) if isinstance(item, dict) else item

    wanted = [ident(o) for o in order]
    ranked = sorted(items, key=lambda it: wanted.index(ident(it)) if ident(it) in wanted else len(wanted))
    return ranked
