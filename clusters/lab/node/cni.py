"""The go-cni/libcni role: pick the node's CNI config the way containerd does and run the real
plugin binaries for ADD/DEL inside the node context.

Selection (go-cni ``loadFromConfDir``): files ending ``.conf``, ``.conflist`` or ``.json`` in the
conf dir, sorted as strings, and only the first is used; if it does not parse, loading fails (no
fall-back to the next file). Error texts are go-cni's and libcni's, with paths as seen on the node.
Plugins are found in ``CNI_PATH`` like libcni's ``FindInPath`` and run through the node shell, so
the bridge lands in the node's namespace, host-local keeps per-node state and portmap's iptables
rules land in the node's netfilter tables.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clusters.errors import CommandFailed
from clusters.lab.node import gojson
from clusters.lab.node.nodefs import BIN_DIR, CONF_DIR
from clusters.proc import run

log = logging.getLogger(__name__)

EXTENSIONS = (".conf", ".conflist", ".json")
NOT_INITIALIZED = "cni plugin not initialized"
INVALID_CONFIG = "invalid cni config"
LOAD_FAILED = "failed to load cni config"
PLUGIN_ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOOPBACK_CONF = (
    b'{\n"cniVersion": "0.3.1",\n"name": "cni-loopback",\n"plugins": [{\n  "type": "loopback"\n}]\n}'
)
"""go-cni's ``WithLoNetwork`` list: containerd brings ``lo`` up with the loopback plugin."""

Json = dict[str, object]


class ConfigLoadError(Exception):
    """Loading the conf dir failed; ``str()`` is go-cni's ``Load`` error text."""


class PluginError(Exception):
    """A CNI operation failed; ``str()`` is libcni's text (``plugin type="bridge" failed (add): …``)."""


@dataclass(frozen=True)
class PluginConf:
    type: str
    name: str
    capabilities: tuple[str, ...]
    raw: str
    """The plugin's JSON object as written in the file (re-serialised)."""


@dataclass(frozen=True)
class NetworkList:
    name: str
    cni_version: str
    plugins: tuple[PluginConf, ...]
    source: str
    """Where it came from, as seen on the node (``/etc/cni/net.d/10-lab.conflist``)."""
    raw: bytes = field(repr=False, default=b"")


@dataclass(frozen=True)
class PortMapping:
    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    def as_cni(self) -> Json:
        return {
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol.lower(),
            "hostIP": self.host_ip,
        }


@dataclass(frozen=True)
class Attachment:
    """What the runtime needs to ADD or DEL one pod's network."""

    container_id: str
    netns_path: str
    ifname: str
    cni_args: tuple[tuple[str, str], ...]
    capability_args: Mapping[str, object]


# ---- loading -------------------------------------------------------------------------------


def conf_files(host_dir: Path) -> list[str]:
    """File names libcni's ``ConfFiles`` returns, sorted as go-cni sorts them."""
    try:
        entries = list(os.scandir(host_dir))
    except FileNotFoundError:
        return []
    return sorted(e.name for e in entries if not e.is_dir() and os.path.splitext(e.name)[1] in EXTENSIONS)


def _parse_plugin(obj: object) -> PluginConf:
    """libcni ``ConfFromBytes`` on one plugin entry (the parts that can fail)."""
    prefix = "error parsing configuration: "
    if not isinstance(obj, dict):
        raise ValueError(
            f"{prefix}json: cannot unmarshal {gojson.json_kind(obj)} into Go value of type types.NetConf"
        )
    for key in ("cniVersion", "name", "type"):
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(
                f"{prefix}json: cannot unmarshal {gojson.json_kind(value)} into Go struct field "
                f"NetConf.{key} of type string"
            )
    caps = obj.get("capabilities") or {}
    if not isinstance(caps, dict):
        raise ValueError(
            f"{prefix}json: cannot unmarshal {gojson.json_kind(caps)} into Go struct field "
            "NetConf.capabilities of type map[string]bool"
        )
    ptype = obj.get("type") or ""
    if not ptype:
        raise ValueError(f"{prefix}missing 'type'")
    return PluginConf(
        type=str(ptype),
        name=str(obj.get("name") or ""),
        capabilities=tuple(k for k, v in caps.items() if v is True),
        raw=json.dumps(obj),
    )


def _decode(data: bytes) -> object:
    err = gojson.syntax_error(data)
    if err is not None:
        raise ValueError(err)
    return json.loads(data.decode("utf-8", errors="replace"))


def parse_conflist(data: bytes, source: str) -> NetworkList:
    """libcni ``ConfListFromBytes``; raises ValueError with libcni's text."""
    prefix = "error parsing configuration list: "
    try:
        raw = _decode(data)
    except ValueError as exc:
        raise ValueError(f"{prefix}{exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(
            f"{prefix}json: cannot unmarshal {gojson.json_kind(raw)} "
            "into Go value of type map[string]interface {}"
        )
    if "name" not in raw:
        raise ValueError(f"{prefix}no name")
    name = raw["name"]
    if not isinstance(name, str):
        raise ValueError(f"{prefix}invalid name type {gojson.type_name(name)}")
    version = raw.get("cniVersion", "")
    if not isinstance(version, str):
        raise ValueError(f"{prefix}invalid cniVersion type {gojson.type_name(version)}")
    if "disableCheck" in raw and not isinstance(raw["disableCheck"], bool):
        raise ValueError(f"{prefix}invalid disableCheck type {gojson.type_name(raw['disableCheck'])}")
    if "plugins" not in raw:
        raise ValueError(f"{prefix}no 'plugins' key")
    plugins = raw["plugins"]
    if not isinstance(plugins, list):
        raise ValueError(f"{prefix}invalid 'plugins' type {gojson.type_name(plugins)}")
    if not plugins:
        raise ValueError(f"{prefix}no plugins in list")
    parsed = []
    for i, obj in enumerate(plugins):
        try:
            parsed.append(_parse_plugin(obj))
        except ValueError as exc:
            raise ValueError(f"failed to parse plugin config {i}: {exc}") from None
    return NetworkList(name=name, cni_version=version, plugins=tuple(parsed), source=source, raw=data)


def parse_conf(data: bytes, source: str) -> NetworkList:
    """libcni ``ConfFromBytes`` + ``ConfListFromConf`` for a single-plugin ``.conf``/``.json``."""
    try:
        raw = _decode(data)
    except ValueError as exc:
        raise ValueError(f"error parsing configuration: {exc}") from None
    plugin = _parse_plugin(raw if raw is not None else {})
    top = raw if isinstance(raw, dict) else {}
    name, version = top.get("name", ""), top.get("cniVersion", "")
    return NetworkList(name=str(name), cni_version=str(version), plugins=(plugin,), source=source, raw=data)


def load_conf_dir(host_dir: Path, node_dir: str = CONF_DIR) -> NetworkList:
    """go-cni ``Load(WithLoNetwork, WithDefaultConf)`` with ``max_conf_num = 1``.

    Raises :class:`ConfigLoadError` with the full go-cni text, e.g. ``cni config load failed:
    failed to load CNI config list file /etc/cni/net.d/00-bad.conflist: error parsing
    configuration list: unexpected end of JSON input: invalid cni config: failed to load cni
    config``.
    """

    def fail(msg: str) -> ConfigLoadError:
        return ConfigLoadError(f"cni config load failed: {msg}: {LOAD_FAILED}")

    files = conf_files(host_dir)
    if not files:
        raise fail(f"no network config found in {node_dir}: {NOT_INITIALIZED}")
    first = files[0]
    source = f"{node_dir.rstrip('/')}/{first}"
    try:
        data = (host_dir / first).read_bytes()
    except OSError as exc:
        what = "CNI config list file" if first.endswith(".conflist") else "CNI config file"
        raise fail(
            f"failed to load {what} {source}: error reading {source}: open {source}: "
            f"{(exc.strerror or str(exc)).lower()}: {INVALID_CONFIG}"
        ) from None
    try:
        if first.endswith(".conflist"):
            return parse_conflist(data, source)
    except ValueError as exc:
        raise fail(f"failed to load CNI config list file {source}: {exc}: {INVALID_CONFIG}") from None
    try:
        return parse_conf(data, source)
    except ValueError as exc:
        raise fail(f"failed to load CNI config file {source}: {exc}: {INVALID_CONFIG}") from None


def loopback_network() -> NetworkList:
    return parse_conflist(LOOPBACK_CONF, "<go-cni loopback>")


# ---- running plugins -----------------------------------------------------------------------


def describe(plugin: PluginConf) -> str:
    """libcni ``pluginDescription``: the name appears only when the plugin entry has one."""
    return f'type="{plugin.type}"' + (f' name="{plugin.name}"' if plugin.name else "")


class CniExec:
    """Runs plugin binaries for one node.

    ``node_fs`` is the node tree on the host (to find binaries and keep libcni's result cache);
    ``node_argv`` wraps an argv so it runs in the node context (the node shell).
    """

    def __init__(
        self,
        node_fs: Path,
        node_argv: Callable[[Sequence[str]], list[str]],
        *,
        timeout: float = 30.0,
        cni_path: Sequence[str] = (BIN_DIR,),
    ):
        self.node_fs = node_fs
        self.node_argv = node_argv
        self.timeout = timeout
        self.cni_path = tuple(cni_path)

    def _host(self, node_path: str) -> Path:
        return self.node_fs / node_path.lstrip("/")

    def find_in_path(self, plugin: str) -> str:
        """libcni ``FindInPath``: the first regular file named ``plugin`` in CNI_PATH."""
        for d in self.cni_path:
            candidate = f"{d.rstrip('/')}/{plugin}"
            if self._host(candidate).is_file():
                return candidate
        dirs = " ".join(self.cni_path)
        raise PluginError(f'failed to find plugin "{plugin}" in path [{dirs}]')

    def _env(self, command: str, att: Attachment) -> dict[str, str]:
        return {
            "PATH": PLUGIN_ENV_PATH,
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": att.container_id,
            "CNI_NETNS": att.netns_path,
            "CNI_ARGS": ";".join(f"{k}={v}" for k, v in att.cni_args),
            "CNI_IFNAME": att.ifname,
            "CNI_PATH": ":".join(self.cni_path),
        }

    def _exec(self, path: str, conf: Json, command: str, att: Attachment) -> bytes:
        host = self._host(path)
        if not os.access(host, os.X_OK):
            raise PluginError(f"netplugin failed with no error message: fork/exec {path}: permission denied")
        stdin = json.dumps(conf).encode()
        try:
            res = run(
                self.node_argv([path]),
                timeout=self.timeout,
                stdin=stdin,
                env=self._env(command, att),
                check=False,
            )
        except CommandFailed as exc:  # only a timeout gets here
            raise PluginError(f"netplugin failed: {path} timed out after {self.timeout:.0f}s") from exc
        if res.stderr.strip():
            log.debug("%s %s stderr: %s", path, command, res.stderr.strip())
        if res.ok:
            return res.stdout.encode()
        return self._plugin_error(res.returncode, res.stdout, res.stderr)

    @staticmethod
    def _plugin_error(code: int, stdout: str, stderr: str) -> bytes:
        """libcni ``pluginErr``: the plugin's JSON error (``msg; details``) or its stderr."""
        if not stdout.strip():
            if not stderr.strip():
                raise PluginError(f"netplugin failed with no error message: exit status {code}")
            raise PluginError(f"netplugin failed: {json.dumps(stderr)}")
        try:
            err = json.loads(stdout)
            msg, details = str(err.get("msg", "")), str(err.get("details", ""))
        except (ValueError, AttributeError) as exc:
            raise PluginError(
                f"netplugin failed but error parsing its diagnostic message {json.dumps(stdout)}: {exc}"
            ) from None
        raise PluginError(f"{msg}; {details}" if details else msg)

    @staticmethod
    def _build(net: NetworkList, plugin: PluginConf, prev: Json | None, att: Attachment) -> Json:
        """libcni ``buildOneConfig``: inject name, cniVersion, prevResult and runtimeConfig."""
        conf: Json = json.loads(plugin.raw)
        conf["name"] = net.name
        conf["cniVersion"] = net.cni_version
        if prev is not None:
            conf["prevResult"] = prev
        runtime = {c: att.capability_args[c] for c in plugin.capabilities if c in att.capability_args}
        if runtime:
            conf["runtimeConfig"] = runtime
        return conf

    def _cache_path(self, net: NetworkList, att: Attachment) -> Path:
        return self._host(f"/var/lib/cni/results/{net.name}-{att.container_id}-{att.ifname}")

    def add(self, net: NetworkList, att: Attachment) -> Json:
        """libcni ``AddNetworkList``: run the chain in order, each result the next prevResult."""
        result: Json | None = None
        for plugin in net.plugins:
            try:
                path = self.find_in_path(plugin.type)
                out = self._exec(path, self._build(net, plugin, result, att), "ADD", att)
                parsed = json.loads(out) if out.strip() else {}
            except PluginError as exc:
                raise PluginError(f"plugin {describe(plugin)} failed (add): {exc}") from None
            except ValueError as exc:
                raise PluginError(
                    f"plugin {describe(plugin)} failed (add): decoding version from network config: {exc}"
                ) from None
            result = parsed if isinstance(parsed, dict) else {}
        final = result or {}
        self._write_cache(net, att, final)
        return final

    def delete(self, net: NetworkList, att: Attachment) -> None:
        """libcni ``DelNetworkList``: reverse order, the cached ADD result as prevResult (≥ 0.4.0)."""
        cache = self._cache_path(net, att)
        prev: Json | None = None
        if _version_tuple(net.cni_version) >= (0, 4, 0) and cache.exists():
            try:
                cached = json.loads(cache.read_text())
                prev = cached.get("result") if isinstance(cached, dict) else None
            except ValueError:
                prev = None
        for plugin in reversed(net.plugins):
            try:
                path = self.find_in_path(plugin.type)
                self._exec(path, self._build(net, plugin, prev, att), "DEL", att)
            except PluginError as exc:
                raise PluginError(f"plugin {describe(plugin)} failed (delete): {exc}") from None
        cache.unlink(missing_ok=True)

    def _write_cache(self, net: NetworkList, att: Attachment, result: Json) -> None:
        """libcni's result cache (``/var/lib/cni/results``), which DEL reads back."""
        path = self._cache_path(net, att)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "kind": "cniCacheV1",
            "containerId": att.container_id,
            "config": base64.b64encode(net.raw).decode(),
            "ifName": att.ifname,
            "networkName": net.name,
            "cniArgs": [list(kv) for kv in att.cni_args],
            "capabilityArgs": dict(att.capability_args),
            "result": result,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entry))
        tmp.replace(path)


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


def result_ips(result: Mapping[str, object]) -> tuple[str, ...]:
    """Pod IPs (without prefix length) from a CNI 0.3+/1.0 result."""
    ips = result.get("ips")
    if not isinstance(ips, list):
        return ()
    out = []
    for entry in ips:
        if isinstance(entry, dict) and isinstance(entry.get("address"), str):
            out.append(entry["address"].split("/", 1)[0])
    return tuple(out)
