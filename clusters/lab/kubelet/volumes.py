"""Pod volumes and each container's root directory.

Lab difference (written down, DESIGN §4 fidelity): containers are our own programs, so instead
of a mount namespace each container gets a directory ``<pod_dir>/rootfs/<container>`` in which
every ``volumeMount`` appears at its ``mountPath`` as a symlink to the volume, next to
``etc/hosts``, ``etc/hostname`` and ``etc/resolv.conf``. The program gets
``KNETCHECK_ROOTFS=<that dir>`` and resolves container paths through it. ``readOnly`` is not
enforced and a mount nested inside another mount's path lands in the outer volume.

Volumes live under ``<pod_dir>/volumes/<name>``. ConfigMap and Secret volumes use the kubelet's
atomic writer layout (``..data`` → ``..<timestamp>``, one symlink per key), so programs that
watch their config (CoreDNS ``reload``) see an edit the same way they would on a real node.
``hostPath`` is a path on the *node*: it maps into the node's file tree, never the host's.
"""

from __future__ import annotations

import base64
import os
import posixpath
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clusters.lab.kubelet.env import (
    ObjectSource,
    PodFacts,
    configmap_data,
    field_value,
    resource_value,
    secret_data,
)
from clusters.lab.layout import DNS_SERVICE_IP, LabLayout

JSON = dict[str, Any]
Payload = dict[str, tuple[bytes, int]]
"""Relative file path → (content, mode)."""

CLUSTER_DOMAIN = "cluster.local"
DEFAULT_MODE = 0o644
LAB_TOKEN = "lab-serviceaccount-token"


class VolumeError(Exception):
    """``FailedMount``: ``str(err)`` is the kubelet's event message."""


def node_path(layout: LabLayout, node: str, path: str) -> Path:
    """``path`` on ``node`` as a host path inside the node's file tree (no escape via ``..``)."""
    clean = posixpath.normpath("/" + path).lstrip("/")
    return layout.node_fs(node) / clean


def _mount_error(volume: str, detail: str) -> VolumeError:
    return VolumeError(f'MountVolume.SetUp failed for volume "{volume}" : {detail}')


def _project(
    data: Mapping[str, bytes], items: list[JSON] | None, default_mode: int, volume: str, kind: str
) -> Payload:
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    out: Payload = {}
    for item in items:
        key = str(item["key"])
        if key not in data:
            raise _mount_error(volume, f"{kind} references non-existent config key: {key}")
        out[str(item["path"])] = (data[key], int(item.get("mode", default_mode)))
    return out


def _configmap_payload(src: JSON, namespace: str, source: ObjectSource, volume: str, mode: int) -> Payload:
    name = str(src.get("name", ""))
    cm = source.configmap(namespace, name)
    if cm is None:
        if src.get("optional"):
            return {}
        raise _mount_error(volume, f'configmap "{name}" not found')
    return _project(
        configmap_data(cm), src.get("items"), int(src.get("defaultMode", mode)), volume, "configMap"
    )


def _secret_payload(src: JSON, namespace: str, source: ObjectSource, volume: str, mode: int) -> Payload:
    name = str(src.get("secretName") or src.get("name", ""))
    secret = source.secret(namespace, name)
    if secret is None:
        if src.get("optional"):
            return {}
        raise _mount_error(volume, f'secret "{name}" not found')
    return _project(
        secret_data(secret), src.get("items"), int(src.get("defaultMode", mode)), volume, "secret"
    )


def _downward_payload(src: JSON, pod: JSON, facts: PodFacts, mode: int) -> Payload:
    out: Payload = {}
    containers = {c["name"]: c for c in (pod.get("spec") or {}).get("containers") or []}
    for item in src.get("items") or []:
        if "fieldRef" in item:
            value = field_value(pod, str(item["fieldRef"].get("fieldPath", "")), facts)
        else:
            ref = item.get("resourceFieldRef") or {}
            value = resource_value(containers.get(ref.get("containerName"), {}), ref)
        out[str(item["path"])] = (value.encode(), int(item.get("mode", mode)))
    return out


def volume_payload(volume: JSON, pod: JSON, facts: PodFacts, source: ObjectSource) -> Payload | None:
    """The files of a ConfigMap/Secret/downwardAPI/projected volume; ``None`` for other kinds."""
    namespace = str((pod.get("metadata") or {}).get("namespace", "default"))
    name = str(volume["name"])
    if "configMap" in volume:
        return _configmap_payload(volume["configMap"], namespace, source, name, DEFAULT_MODE)
    if "secret" in volume:
        return _secret_payload(volume["secret"], namespace, source, name, DEFAULT_MODE)
    if "downwardAPI" in volume:
        src = volume["downwardAPI"]
        return _downward_payload(src, pod, facts, int(src.get("defaultMode", DEFAULT_MODE)))
    if "projected" in volume:
        proj = volume["projected"]
        mode = int(proj.get("defaultMode", DEFAULT_MODE))
        out: Payload = {}
        for part in proj.get("sources") or []:
            if "configMap" in part:
                out.update(_configmap_payload(part["configMap"], namespace, source, name, mode))
            elif "secret" in part:
                out.update(_secret_payload(part["secret"], namespace, source, name, mode))
            elif "downwardAPI" in part:
                out.update(_downward_payload(part["downwardAPI"], pod, facts, mode))
            elif "serviceAccountToken" in part:
                # Lab difference: the lab API server does not issue tokens; a placeholder keeps
                # programs that read the path working.
                out[str(part["serviceAccountToken"].get("path", "token"))] = (LAB_TOKEN.encode(), mode)
        return out
    return None


def _current_payload(target: Path) -> Payload:
    data_dir = target / "..data"
    out: Payload = {}
    if not data_dir.is_dir():
        return out
    root = data_dir.resolve()
    for path in root.rglob("*"):
        if path.is_file():
            out[str(path.relative_to(root))] = (path.read_bytes(), path.stat().st_mode & 0o777)
    return out


def write_atomic(target: Path, payload: Payload) -> bool:
    """The kubelet's AtomicWriter: a new timestamped dir, then swap ``..data``. True if changed."""
    target.mkdir(parents=True, exist_ok=True)
    if (target / "..data").is_symlink() and _current_payload(target) == payload:
        return False
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()) + f"{time.monotonic_ns() % 10**9:09d}"
    new_dir = target / stamp
    new_dir.mkdir()
    for rel, (content, mode) in payload.items():
        path = new_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
    old = os.readlink(target / "..data") if (target / "..data").is_symlink() else None
    tmp = target / "..data_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(stamp)
    tmp.replace(target / "..data")
    tops = {rel.split("/", 1)[0] for rel in payload}
    for top in tops:
        link = target / top
        if not link.is_symlink():
            link.symlink_to(f"..data/{top}")
    for entry in target.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.name not in tops and entry.is_symlink():
            entry.unlink()
    if old and old != stamp:
        shutil.rmtree(target / old, ignore_errors=True)
    return True


def _host_path(volume: JSON, layout: LabLayout, node: str) -> Path:
    spec = volume["hostPath"]
    path = node_path(layout, node, str(spec["path"]))
    kind = str(spec.get("type") or "")
    shown = str(spec["path"])
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    elif kind == "Directory" and not path.is_dir():
        raise _mount_error(volume["name"], f"hostPath type check failed: {shown} is not a directory")
    elif kind == "File" and not path.is_file():
        raise _mount_error(volume["name"], f"hostPath type check failed: {shown} is not a file")
    elif kind in ("Socket", "CharDevice", "BlockDevice") and not path.exists():
        raise _mount_error(volume["name"], f"hostPath type check failed: {shown} is not a {kind}")
    return path


def materialise(
    pod: JSON, layout: LabLayout, node: str, facts: PodFacts, source: ObjectSource
) -> dict[str, Path]:
    """Set up (or refresh) every volume of ``pod``; volume name → the path mounts point at."""
    uid = str(pod["metadata"]["uid"])
    base = layout.pod_dir(uid) / "volumes"
    out: dict[str, Path] = {}
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        name = str(volume["name"])
        if "hostPath" in volume:
            out[name] = _host_path(volume, layout, node)
            continue
        target = base / name
        payload = volume_payload(volume, pod, facts, source)
        if payload is None:
            # emptyDir, and any other kind the lab treats as scratch space.
            target.mkdir(parents=True, exist_ok=True)
        else:
            write_atomic(target, payload)
        out[name] = target
    return out


def hosts_file(pod: JSON, pod_ip: str) -> str:
    """The kubelet-managed ``/etc/hosts`` (``kubelet_pods.go managedHostsFileContent``)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    hostname = str(spec.get("hostname") or meta.get("name", ""))
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    if spec.get("subdomain"):
        fqdn = f"{hostname}.{spec['subdomain']}.{meta.get('namespace', 'default')}.svc.{CLUSTER_DOMAIN}"
        lines.append(f"{pod_ip}\t{fqdn}\t{hostname}")
    else:
        lines.append(f"{pod_ip}\t{hostname}")
    for alias in spec.get("hostAliases") or []:
        lines.append(
            f"\n# Entries added by HostAliases.\n{alias['ip']}\t" + "\t".join(alias.get("hostnames", []))
        )
    return "\n".join(lines) + "\n"


def resolv_conf(pod: JSON, node_resolv: str) -> str:
    """``/etc/resolv.conf`` for the pod's dnsPolicy (``pkg/kubelet/network/dns``)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    policy = spec.get("dnsPolicy", "ClusterFirst")
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        policy = "Default"
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        ns = meta.get("namespace", "default")
        nameservers = [str(DNS_SERVICE_IP)]
        searches = [f"{ns}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]
        options = ["ndots:5"]
    elif policy == "Default":
        for line in node_resolv.splitlines():
            words = line.split()
            if not words:
                continue
            if words[0] == "nameserver":
                nameservers += words[1:2]
            elif words[0] == "search":
                searches += words[1:]
            elif words[0] == "options":
                options += words[1:]
    config = spec.get("dnsConfig") or {}
    nameservers += [n for n in config.get("nameservers") or [] if n not in nameservers]
    searches += [s for s in config.get("searches") or [] if s not in searches]
    for opt in config.get("options") or []:
        text = opt["name"] + (f":{opt['value']}" if opt.get("value") is not None else "")
        options = [o for o in options if o.split(":")[0] != opt["name"]] + [text]
    lines = []
    if searches:
        lines.append("search " + " ".join(searches))
    lines += [f"nameserver {n}" for n in nameservers]
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def build_rootfs(
    pod: JSON,
    container: JSON,
    volumes: Mapping[str, Path],
    layout: LabLayout,
    node: str,
    pod_ip: str,
) -> Path:
    """(Re)create the container's root directory and return it (``KNETCHECK_ROOTFS``)."""
    uid = str(pod["metadata"]["uid"])
    spec = pod.get("spec") or {}
    root = layout.pod_dir(uid) / "rootfs" / str(container["name"])
    if root.exists():
        shutil.rmtree(root)
    (root / "etc").mkdir(parents=True)
    (root / "tmp").mkdir()
    node_etc = node_path(layout, node, "/etc")
    if spec.get("hostNetwork"):
        hosts = (
            (node_etc / "hosts").read_text() if (node_etc / "hosts").is_file() else hosts_file(pod, pod_ip)
        )
        hostname = node
    else:
        hosts = hosts_file(pod, pod_ip)
        hostname = str(spec.get("hostname") or pod["metadata"]["name"])
    node_resolv = (node_etc / "resolv.conf").read_text() if (node_etc / "resolv.conf").is_file() else ""
    (root / "etc" / "hosts").write_text(hosts)
    (root / "etc" / "hostname").write_text(hostname + "\n")
    (root / "etc" / "resolv.conf").write_text(resolv_conf(pod, node_resolv))
    mounts = sorted(container.get("volumeMounts") or [], key=lambda m: len(str(m["mountPath"])))
    for mount in mounts:
        name = str(mount["name"])
        if name not in volumes:
            raise VolumeError(f'unable to find volume "{name}" for container "{container["name"]}"')
        source = volumes[name]
        if mount.get("subPath"):
            source = source / posixpath.normpath("/" + str(mount["subPath"])).lstrip("/")
            if not source.exists():
                source.mkdir(parents=True)
        link = root / posixpath.normpath("/" + str(mount["mountPath"])).lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        link.symlink_to(source)
    return root


def decode_b64(text: str) -> bytes:
    """Exposed for tests and callers that hold raw Secret ``data`` values."""
    return base64.b64decode(text)
