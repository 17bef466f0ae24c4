"""Read ``config.conf`` (a ``KubeProxyConfiguration``, kubeproxy.config.k8s.io/v1alpha1) like kube-proxy.

The real decode is strict first, then lenient: an unknown or misspelled key only costs an info
line (``Using lenient decoding as strict decoding failed``) and the key is ignored; a document that
is not YAML, or a value of the wrong type, fails ``Complete`` with ``failed to decode: …``.
Validation runs after defaulting and produces field errors in apimachinery's wording
(``KubeProxyConfiguration.ProxyMode: Invalid value: "foo": …``). The two failures are returned as
:class:`ConfigError` carrying the exact ``err`` text kube-proxy's ``"command failed"`` line shows.

Defaults follow ``pkg/proxy/apis/config/v1alpha1/defaults.go``: a ``0s`` sync period means 30s, a
``0s`` minSyncPeriod means 1s, a blank mode means iptables, blank bind addresses mean
``0.0.0.0:10256`` (healthz) and ``127.0.0.1:10249`` (metrics).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

import yaml

API_VERSION = "kubeproxy.config.k8s.io/v1alpha1"
KIND = "KubeProxyConfiguration"
HEALTHZ_PORT = 10256
METRICS_PORT = 10249
CIDR_EXAMPLE = "must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)"
MODE_DETAIL = (
    "must be iptables, ipvs, nftables or blank (blank means the best-available proxy [currently iptables])"
)


class ProxyMode(enum.Enum):
    IPTABLES = "iptables"
    IPVS = "ipvs"
    NFTABLES = "nftables"


class LocalMode(enum.Enum):
    CLUSTER_CIDR = "ClusterCIDR"
    NODE_CIDR = "NodeCIDR"
    BRIDGE_INTERFACE = "BridgeInterface"
    INTERFACE_NAME_PREFIX = "InterfaceNamePrefix"


class ConfigError(Exception):
    """Config loading failed; ``str(err)`` is the ``err=`` value of kube-proxy's ``command failed`` line."""


# -- the v1alpha1 schema: json name -> leaf type or nested schema ------------------------------

_Schema = dict[str, Any]
_DURATION, _STR, _BOOL, _INT, _STRLIST, _MAP = "duration", "string", "bool", "int32", "[]string", "map"

_SCHEMA: _Schema = {
    "apiVersion": _STR,
    "kind": _STR,
    "featureGates": _MAP,
    "clientConnection": {
        "kubeconfig": _STR,
        "acceptContentTypes": _STR,
        "contentType": _STR,
        "qps": "float32",
        "burst": _INT,
    },
    "logging": {
        "format": _STR,
        "flushFrequency": "flush",
        "verbosity": "uint32",
        "vmodule": "list",
        "options": {
            "json": {"infoBufferSize": "quantity", "splitStream": _BOOL},
            "text": {"infoBufferSize": "quantity", "splitStream": _BOOL},
        },
    },
    "hostnameOverride": _STR,
    "bindAddress": _STR,
    "healthzBindAddress": _STR,
    "metricsBindAddress": _STR,
    "bindAddressHardFail": _BOOL,
    "enableProfiling": _BOOL,
    "showHiddenMetricsForVersion": _STR,
    "mode": _STR,
    "iptables": {
        "masqueradeBit": _INT,
        "masqueradeAll": _BOOL,
        "localhostNodePorts": _BOOL,
        "syncPeriod": _DURATION,
        "minSyncPeriod": _DURATION,
    },
    "ipvs": {
        "syncPeriod": _DURATION,
        "minSyncPeriod": _DURATION,
        "scheduler": _STR,
        "excludeCIDRs": _STRLIST,
        "strictARP": _BOOL,
        "tcpTimeout": _DURATION,
        "tcpFinTimeout": _DURATION,
        "udpTimeout": _DURATION,
    },
    "nftables": {
        "masqueradeBit": _INT,
        "masqueradeAll": _BOOL,
        "syncPeriod": _DURATION,
        "minSyncPeriod": _DURATION,
    },
    "winkernel": {
        "networkName": _STR,
        "sourceVip": _STR,
        "enableDSR": _BOOL,
        "rootHnsEndpointName": _STR,
        "forwardHealthCheckVip": _BOOL,
    },
    "detectLocalMode": _STR,
    "detectLocal": {"bridgeInterface": _STR, "interfaceNamePrefix": _STR},
    "clusterCIDR": _STR,
    "nodePortAddresses": _STRLIST,
    "oomScoreAdj": _INT,
    "conntrack": {
        "maxPerCore": _INT,
        "min": _INT,
        "tcpEstablishedTimeout": _DURATION,
        "tcpCloseWaitTimeout": _DURATION,
        "tcpBeLiberal": _BOOL,
        "udpTimeout": _DURATION,
        "udpStreamTimeout": _DURATION,
    },
    "configSyncPeriod": _DURATION,
    "portRange": _STR,
    "windowsRunAsService": _BOOL,
}


@dataclass(frozen=True)
class KubeProxyConfig:
    """The fields the lab acts on, after defaulting (durations in seconds)."""

    mode: ProxyMode
    mode_was_blank: bool
    cluster_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    detect_local_mode: LocalMode
    bridge_interface: str
    interface_name_prefix: str
    kubeconfig: str
    hostname_override: str
    bind_address: str
    healthz_bind_address: str
    metrics_bind_address: str
    sync_period: float
    min_sync_period: float
    config_sync_period: float
    masquerade_all: bool
    masquerade_bit: int
    localhost_node_ports: bool
    node_port_addresses: tuple[str, ...]
    """Empty: NodePorts on every local address."""

    @property
    def masquerade_mark(self) -> str:
        """Go's ``fmt.Sprintf("%#08x", 1<<bit)``: ``0x004000`` for the default bit 14."""
        return f"{1 << self.masquerade_bit:#08x}"


@dataclass(frozen=True)
class Decoded:
    config: KubeProxyConfig
    strict_error: str | None
    """Set when strict decoding failed and the lenient decoder was used (the info line's ``err``)."""


# -- Go-shaped parsing helpers ---------------------------------------------------------------

_DURATION_RE = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds; raises ValueError with Go's message."""
    s = text
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_RE.match(s, pos)
        if not m:
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * total


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Go's net.ParseCIDR: an address, a slash and a decimal prefix (host bits allowed)."""
    addr, sep, prefix = text.partition("/")
    if not sep or not prefix.isdigit() or not addr:
        raise ValueError(text)
    return ipaddress.ip_network(text, strict=False)


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_error(value: object, path: str, gotype: str) -> ConfigError:
    return ConfigError(
        f"failed complete: failed to decode: json: cannot unmarshal {_json_type(value)} into Go struct "
        f"field {KIND}.{path} of type {gotype}"
    )


def _yaml_error(err: yaml.YAMLError) -> ConfigError:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    problem = {
        "mapping values are not allowed here": "mapping values are not allowed in this context",
        "found character '\\t' that cannot start any token": "found character that cannot start any token",
    }.get(problem, problem)
    line = f"line {mark.line + 1}: " if mark is not None else ""
    return ConfigError(
        f"failed complete: failed to decode: error converting YAML to JSON: yaml: {line}{problem}"
    )


def _check(doc: dict[str, Any], schema: _Schema, prefix: str, unknown: list[str]) -> None:
    """Type-check known keys (a wrong type fails like json.Unmarshal) and collect unknown ones."""
    for key, value in doc.items():
        path = f"{prefix}{key}"
        kind = schema.get(str(key))
        if kind is None:
            unknown.append(path)
            continue
        if value is None:
            continue
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                raise _type_error(value, path, "v1alpha1.section")
            _check(value, kind, f"{path}.", unknown)
        elif kind in (_STR, _DURATION) and not isinstance(value, str):
            raise _type_error(value, path, "string")
        elif kind == _BOOL and not isinstance(value, bool):
            raise _type_error(value, path, "bool")
        elif kind in (_INT, "uint32") and (isinstance(value, bool) or not isinstance(value, int)):
            raise _type_error(value, path, kind)
        elif kind == _STRLIST and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise _type_error(value, path, "[]string")
        elif kind == _MAP and not isinstance(value, dict):
            raise _type_error(value, path, "map[string]bool")
        if kind == _DURATION:
            try:
                parse_duration(value)
            except ValueError as err:
                raise ConfigError(f"failed complete: failed to decode: {err}") from None


def _get(doc: dict[str, Any], *path: str) -> Any:
    cur: Any = doc
    for part in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _duration(doc: dict[str, Any], *path: str) -> float:
    value = _get(doc, *path)
    return parse_duration(value) if isinstance(value, str) else 0.0


# -- decode, default, validate ----------------------------------------------------------------


def decode(text: str) -> tuple[dict[str, Any], str | None]:
    """Parse ``text``; return the document and the strict-decoding error (None when strict passed)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise _yaml_error(err) from None
    if not isinstance(doc, dict):
        raise ConfigError(
            f"failed complete: failed to decode: couldn't get version/kind; json parse error: "
            f"json: cannot unmarshal {_json_type(doc)} into Go value of type struct {{ APIVersion string "
            f'"json:\\"apiVersion,omitempty\\""; Kind string "json:\\"kind,omitempty\\"" }}'
        )
    kind, version = doc.get("kind"), doc.get("apiVersion")
    if not kind:
        raise ConfigError(f"failed complete: failed to decode: Object 'Kind' is missing in '{text.strip()}'")
    if kind != KIND or version != API_VERSION:
        raise ConfigError(
            f'failed complete: failed to decode: no kind "{kind}" is registered for version "{version}" '
            f'in scheme "pkg/proxy/apis/config/scheme/scheme.go:28"'
        )
    unknown: list[str] = []
    _check(doc, _SCHEMA, "", unknown)
    strict = None
    if unknown:
        strict = "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown)
    return doc, strict


def _field_invalid(path: str, value: object, detail: str) -> str:
    shown = f'"{value}"' if isinstance(value, str) else str(value)
    return f"{KIND}.{path}: Invalid value: {shown}: {detail}"


def _aggregate(errors: list[str]) -> str:
    """apimachinery's utilerrors.NewAggregate(...).Error()."""
    return errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"


def build(doc: dict[str, Any]) -> KubeProxyConfig:
    """Default and validate a decoded document; raise ConfigError("failed validate: …")."""
    raw_mode = str(doc.get("mode") or "")
    errors: list[str] = []
    mode = ProxyMode.IPTABLES
    if raw_mode:
        try:
            mode = ProxyMode(raw_mode)
        except ValueError:
            errors.append(_field_invalid("ProxyMode", raw_mode, MODE_DETAIL))

    raw_local = str(doc.get("detectLocalMode") or "") or LocalMode.CLUSTER_CIDR.value
    local_mode = LocalMode.CLUSTER_CIDR
    try:
        local_mode = LocalMode(raw_local)
    except ValueError:
        supported = ", ".join(f'"{m.value}"' for m in sorted(LocalMode, key=lambda m: m.value))
        errors.append(
            f'{KIND}.DetectLocalMode: Unsupported value: "{raw_local}": supported values: {supported}'
        )

    cidr_text = str(doc.get("clusterCIDR") or "")
    cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    parts = cidr_text.split(",") if cidr_text else []
    if local_mode is LocalMode.CLUSTER_CIDR and parts:
        path = "DetectLocal.ClusterCIDRs"
        if len(parts) > 2:
            errors.append(
                _field_invalid(
                    path,
                    "[" + " ".join(parts) + "]",
                    "must be a either a single CIDR or dual-stack pair of CIDRs "
                    "(e.g. [10.100.0.0/16, fde4:8dba:82e1::/48]",
                )
            )
        else:
            for i, part in enumerate(parts):
                try:
                    cidrs.append(parse_cidr(part))
                except ValueError:
                    errors.append(_field_invalid(f"{path}[{i}]", part, CIDR_EXAMPLE))
            if len(cidrs) == 2 and cidrs[0].version == cidrs[1].version:
                errors.append(
                    _field_invalid(
                        path,
                        "[" + " ".join(parts) + "]",
                        "must be a valid DualStack CIDR (e.g. [10.100.0.0/16, fde4:8dba:82e1::/48]",
                    )
                )

    section = "ipvs" if mode is ProxyMode.IPVS else "nftables" if mode is ProxyMode.NFTABLES else "iptables"
    sync = _duration(doc, section, "syncPeriod") or 30.0
    min_sync = _duration(doc, section, "minSyncPeriod") or 1.0
    masq_bit = _get(doc, section if section != "ipvs" else "iptables", "masqueradeBit")
    masq_bit = 14 if masq_bit is None else int(masq_bit)
    if not 0 <= masq_bit <= 31:
        errors.append(_field_invalid("IPTables.MasqueradeBit", masq_bit, "must be within the range [0, 31]"))

    bind = str(doc.get("bindAddress") or "0.0.0.0")
    try:
        ipaddress.ip_address(bind)
    except ValueError:
        errors.append(
            _field_invalid("BindAddress", bind, "not a valid textual representation of an IP address")
        )
    healthz = _with_port(str(doc.get("healthzBindAddress") or "0.0.0.0"), HEALTHZ_PORT)
    metrics = _with_port(str(doc.get("metricsBindAddress") or "127.0.0.1"), METRICS_PORT)

    npa = tuple(_get(doc, "nodePortAddresses") or ())
    for i, entry in enumerate(npa):
        if entry == "primary" and len(npa) == 1:
            continue
        try:
            parse_cidr(entry)
        except ValueError:
            errors.append(_field_invalid(f"NodePortAddresses[{i}]", entry, CIDR_EXAMPLE))

    if errors:
        raise ConfigError("failed validate: " + _aggregate(errors))
    masq_all = bool(_get(doc, section if section != "ipvs" else "iptables", "masqueradeAll"))
    lhnp = _get(doc, "iptables", "localhostNodePorts")
    return KubeProxyConfig(
        mode=mode,
        mode_was_blank=not raw_mode,
        cluster_cidrs=tuple(cidrs),
        detect_local_mode=local_mode,
        bridge_interface=str(_get(doc, "detectLocal", "bridgeInterface") or ""),
        interface_name_prefix=str(_get(doc, "detectLocal", "interfaceNamePrefix") or ""),
        kubeconfig=str(_get(doc, "clientConnection", "kubeconfig") or ""),
        hostname_override=str(doc.get("hostnameOverride") or ""),
        bind_address=bind,
        healthz_bind_address=healthz,
        metrics_bind_address=metrics,
        sync_period=sync,
        min_sync_period=min_sync,
        config_sync_period=_duration(doc, "configSyncPeriod") or 900.0,
        masquerade_all=masq_all,
        masquerade_bit=masq_bit,
        localhost_node_ports=True if lhnp is None else bool(lhnp),
        node_port_addresses=tuple(str(a) for a in npa),
    )


def _with_port(addr: str, port: int) -> str:
    """proxyutil.AppendPortIfNeeded: ``0.0.0.0`` → ``0.0.0.0:10256``."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def load(text: str) -> Decoded:
    """Decode, default and validate ``text``; raise ConfigError with kube-proxy's err text."""
    doc, strict = decode(text)
    return Decoded(config=build(doc), strict_error=strict)
