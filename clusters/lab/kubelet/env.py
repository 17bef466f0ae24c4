"""A container's environment, resolved as the kubelet does (``kubelet_pods.go makeEnvironmentVariables``).

Order and precedence follow the real kubelet: service link variables first, then ``envFrom``,
then ``env``, each ``$(VAR)`` expanded against what came before; the same expansion applies to
``command``/``args``. Lookups of ConfigMaps, Secrets and Services go through :class:`ObjectSource`
so this module stays pure and unit-testable.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

JSON = dict[str, Any]

KUBERNETES_SERVICE_HOST = "10.96.0.1"
KUBERNETES_SERVICE_PORT = "443"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NODE_CPU = "2"
NODE_MEMORY_BYTES = 8 * 1024**3


class ContainerConfigError(Exception):
    """``CreateContainerConfigError``: ``str(err)`` is the kubelet's message."""


class ObjectSource(Protocol):
    """Reads the objects a pod references; ``None`` when the object does not exist."""

    def configmap(self, namespace: str, name: str) -> JSON | None: ...

    def secret(self, namespace: str, name: str) -> JSON | None: ...

    def services(self, namespace: str) -> list[JSON]: ...


@dataclass(frozen=True)
class PodFacts:
    """Values only the kubelet knows when it starts a container."""

    pod_ip: str
    pod_ips: tuple[str, ...]
    host_ip: str
    node_name: str


def secret_data(secret: Mapping[str, Any]) -> dict[str, bytes]:
    out = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    out.update({k: str(v).encode() for k, v in (secret.get("stringData") or {}).items()})
    return out


def configmap_data(cm: Mapping[str, Any]) -> dict[str, bytes]:
    out = {k: str(v).encode() for k, v in (cm.get("data") or {}).items()}
    out.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
    return out


_EXPAND = re.compile(r"\$\$|\$\(([^)]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: ``$$`` escapes, unknown references stay as written."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _EXPAND.sub(sub, text)


_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(pod: Mapping[str, Any], path: str, facts: PodFacts) -> str:
    """A ``fieldRef`` value (the downward API paths the API server accepts)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName") or facts.node_name,
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": facts.pod_ip,
        "status.podIPs": ",".join(facts.pod_ips),
        "status.hostIP": facts.host_ip,
        "status.hostIPs": facts.host_ip,
    }
    if path in simple:
        return str(simple[path])
    m = _SUBSCRIPT.match(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = sorted((meta.get(path.split(".")[1]) or {}).items())
        return "\n".join(f'{k}="{v}"' for k, v in items)
    raise ContainerConfigError(f'unsupported fieldRef path "{path}"')


_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(text: str) -> float:
    m = _QUANTITY.match(str(text).strip())
    if not m or m.group(2) not in _SUFFIX:
        raise ContainerConfigError(f'invalid quantity "{text}"')
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def resource_value(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    """``resourceFieldRef``: the container's value, or node allocatable when unset (as real)."""
    resource = str(ref.get("resource", ""))
    kind, _, what = resource.partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(what)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(what)
    if raw is None:
        raw = NODE_CPU if what == "cpu" else str(NODE_MEMORY_BYTES)
    divisor = quantity(str(ref.get("divisor") or "1"))
    value = quantity(str(raw)) / divisor
    return str(int(-(-value // 1)))  # ceil, like the kubelet


def service_env(services: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Docker-link style variables for the namespace's Services (enableServiceLinks)."""
    env: dict[str, str] = {}
    for svc in services:
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None":
            continue
        prefix = str((svc.get("metadata") or {}).get("name", "")).upper().replace("-", "_")
        ports = spec.get("ports") or []
        if not ports:
            continue
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{str(port['name']).upper().replace('-', '_')}"] = str(
                    port["port"]
                )
        first = ports[0]
        env[f"{prefix}_PORT"] = f"{str(first.get('protocol', 'TCP')).lower()}://{ip}:{first['port']}"
        for port in ports:
            proto = str(port.get("protocol", "TCP"))
            base = f"{prefix}_PORT_{port['port']}_{proto}"
            env[base] = f"{proto.lower()}://{ip}:{port['port']}"
            env[f"{base}_PROTO"] = proto.lower()
            env[f"{base}_PORT"] = str(port["port"])
            env[f"{base}_ADDR"] = ip
    return env


def kubernetes_env() -> dict[str, str]:
    """The master service variables every real pod gets, whatever enableServiceLinks says."""
    host, port = KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{port}_TCP_PORT": port,
        f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
    }


def _key_ref(source: ObjectSource, namespace: str, ref: Mapping[str, Any], kind: str) -> str | None:
    name = str(ref.get("name", ""))
    key = str(ref.get("key", ""))
    optional = bool(ref.get("optional"))
    if kind == "ConfigMap":
        obj = source.configmap(namespace, name)
        data = configmap_data(obj) if obj is not None else None
        missing = f'configmap "{name}" not found'
    else:
        obj = source.secret(namespace, name)
        data = secret_data(obj) if obj is not None else None
        missing = f'secret "{name}" not found'
    if data is None:
        if optional:
            return None
        raise ContainerConfigError(missing)
    if key not in data:
        if optional:
            return None
        raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return data[key].decode(errors="replace")


def container_env(
    pod: Mapping[str, Any], container: Mapping[str, Any], facts: PodFacts, source: ObjectSource
) -> dict[str, str]:
    """The variables the container's process sees (without lab-only additions)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    namespace = str(meta.get("namespace", "default"))
    env: dict[str, str] = {"PATH": IMAGE_PATH, "HOSTNAME": str(spec.get("hostname") or meta.get("name", ""))}
    if spec.get("enableServiceLinks", True):
        env.update(service_env(source.services(namespace)))
    env.update(kubernetes_env())
    for src in container.get("envFrom") or []:
        prefix = str(src.get("prefix", ""))
        if "configMapRef" in src:
            ref, kind = src["configMapRef"], "ConfigMap"
            obj = source.configmap(namespace, str(ref.get("name", "")))
            data = configmap_data(obj) if obj is not None else None
        else:
            ref, kind = src.get("secretRef") or {}, "Secret"
            obj = source.secret(namespace, str(ref.get("name", "")))
            data = secret_data(obj) if obj is not None else None
        if data is None:
            if ref.get("optional"):
                continue
            raise ContainerConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
        for key, raw in data.items():
            env[prefix + key] = raw.decode(errors="replace")
    for var in container.get("env") or []:
        name = str(var["name"])
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        value_from = var["valueFrom"]
        value: str | None
        if "fieldRef" in value_from:
            value = field_value(pod, str(value_from["fieldRef"].get("fieldPath", "")), facts)
        elif "resourceFieldRef" in value_from:
            value = resource_value(container, value_from["resourceFieldRef"])
        elif "configMapKeyRef" in value_from:
            value = _key_ref(source, namespace, value_from["configMapKeyRef"], "ConfigMap")
        elif "secretKeyRef" in value_from:
            value = _key_ref(source, namespace, value_from["secretKeyRef"], "Secret")
        else:
            raise ContainerConfigError(f"unsupported valueFrom for env var {name}")
        if value is not None:
            env[name] = value
    return env


def expand_command(words: Sequence[str], env: Mapping[str, str]) -> list[str]:
    return [expand(str(w), env) for w in words]
