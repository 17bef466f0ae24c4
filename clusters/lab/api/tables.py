"""Server-side printing: ``meta.k8s.io/v1 Table`` responses for ``kubectl get``.

kubectl asks the server for Tables and prints the cells as given, so the columns and cell text
here are the real apiserver's printers (pkg/printers/internalversion), for the kinds people get.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from clusters.lab.api.resources import ResourceType

Obj = dict[str, Any]
Column = tuple[str, str, int]  # name, type, priority
Row = list[Any]


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        sec = s % 60
        return f"{minutes}m" if sec == 0 else f"{minutes}m{sec}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    when = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return human_duration((datetime.now(UTC) - when).total_seconds())


def _meta(o: Obj) -> Obj:
    return o.get("metadata") or {}


def _age(o: Obj) -> str:
    return age(_meta(o).get("creationTimestamp"))


def _none(v: Any) -> str:
    return str(v) if v not in (None, "", []) else "<none>"


def _selector_text(sel: Obj | None) -> str:
    if not sel:
        return "<none>"
    parts = [f"{k}={v}" for k, v in (sel.get("matchLabels") or {}).items()]
    for e in sel.get("matchExpressions") or []:
        op = e.get("operator")
        vals = ",".join(e.get("values") or [])
        parts.append(
            {"In": f"{e['key']} in ({vals})", "NotIn": f"{e['key']} notin ({vals})", "Exists": e["key"]}.get(
                op, f"!{e['key']}"
            )
        )
    return ",".join(parts) or "<none>"


def _containers(spec: Obj) -> tuple[str, str]:
    cs = (spec.get("template") or {}).get("spec", {}).get("containers") or []
    return ",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs)


# -- pods --------------------------------------------------------------------------------------


def pod_status_text(pod: Obj) -> str:
    """kubectl's STATUS column logic (printPod)."""
    st = pod.get("status") or {}
    reason = st.get("reason") or st.get("phase") or "Unknown"
    init_statuses = st.get("initContainerStatuses") or []
    initializing = False
    n_init = len((pod.get("spec") or {}).get("initContainers") or [])
    for i, cs in enumerate(init_statuses):
        state = cs.get("state") or {}
        term = state.get("terminated")
        if term and term.get("exitCode") == 0:
            continue
        if term:
            if term.get("reason"):
                reason = "Init:" + term["reason"]
            elif term.get("signal"):
                reason = f"Init:Signal:{term['signal']}"
            else:
                reason = f"Init:ExitCode:{term.get('exitCode')}"
        elif state.get("waiting") and state["waiting"].get("reason") not in (None, "", "PodInitializing"):
            reason = "Init:" + state["waiting"]["reason"]
        else:
            reason = f"Init:{i}/{n_init}"
        initializing = True
        break
    if not initializing:
        has_running = False
        for cs in reversed(st.get("containerStatuses") or []):
            state = cs.get("state") or {}
            if state.get("waiting") and state["waiting"].get("reason"):
                reason = state["waiting"]["reason"]
            elif state.get("terminated"):
                term = state["terminated"]
                if term.get("reason"):
                    reason = term["reason"]
                elif term.get("signal"):
                    reason = f"Signal:{term['signal']}"
                else:
                    reason = f"ExitCode:{term.get('exitCode')}"
            elif state.get("running") and cs.get("ready"):
                has_running = True
        if reason == "Completed" and has_running:
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []
            )
            reason = "Running" if ready else "NotReady"
    if _meta(pod).get("deletionTimestamp"):
        reason = "Unknown" if st.get("reason") == "NodeLost" else "Terminating"
    return str(reason)


def _pod_row(pod: Obj) -> Row:
    st = pod.get("status") or {}
    spec = pod.get("spec") or {}
    statuses = st.get("containerStatuses") or []
    total = len(spec.get("containers") or [])
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    last_restart = None
    for c in statuses:
        fin = ((c.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
        if fin and (last_restart is None or fin > last_restart):
            last_restart = fin
    restarts_text = str(restarts)
    if restarts and last_restart:
        restarts_text = f"{restarts} ({age(last_restart)} ago)"
    gates = spec.get("readinessGates") or []
    if gates:
        conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
        gate_text = f"{sum(1 for g in gates if conds.get(g.get('conditionType')) == 'True')}/{len(gates)}"
    else:
        gate_text = "<none>"
    return [
        _meta(pod).get("name"),
        f"{ready}/{total}",
        pod_status_text(pod),
        restarts_text,
        _age(pod),
        _none(st.get("podIP")),
        _none(spec.get("nodeName")),
        _none(st.get("nominatedNodeName")),
        gate_text,
    ]


# -- nodes -------------------------------------------------------------------------------------


def _node_row(node: Obj) -> Row:
    st = node.get("status") or {}
    spec = node.get("spec") or {}
    ready = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)
    text = "Ready" if ready and ready.get("status") == "True" else ("NotReady" if ready else "Unknown")
    if spec.get("unschedulable"):
        text += ",SchedulingDisabled"
    roles = sorted(
        k.split("/", 1)[1]
        for k in (_meta(node).get("labels") or {})
        if k.startswith("node-role.kubernetes.io/") and k.split("/", 1)[1]
    )
    addrs = st.get("addresses") or []
    internal = next((a["address"] for a in addrs if a.get("type") == "InternalIP"), "<none>")
    external = next((a["address"] for a in addrs if a.get("type") == "ExternalIP"), "<none>")
    info = st.get("nodeInfo") or {}
    return [
        _meta(node).get("name"),
        text,
        ",".join(roles) or "<none>",
        _age(node),
        info.get("kubeletVersion", ""),
        internal,
        external,
        info.get("osImage", "<unknown>"),
        info.get("kernelVersion", "<unknown>"),
        info.get("containerRuntimeVersion", "<unknown>"),
    ]


# -- services and friends ----------------------------------------------------------------------


def _svc_row(svc: Obj) -> Row:
    spec = svc.get("spec") or {}
    typ = spec.get("type", "ClusterIP")
    ips = [
        i.get("ip") or i.get("hostname")
        for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    ]
    ext = spec.get("externalIPs") or []
    if typ == "ExternalName":
        external = spec.get("externalName") or "<none>"
    elif typ == "LoadBalancer":
        external = ",".join([*ips, *ext]) if (ips or ext) else "<pending>"
    else:
        external = ",".join(ext) if ext else "<none>"
    ports = []
    for p in spec.get("ports") or []:
        text = f"{p.get('port')}/{p.get('protocol', 'TCP')}"
        if p.get("nodePort"):
            text = f"{p.get('port')}:{p['nodePort']}/{p.get('protocol', 'TCP')}"
        ports.append(text)
    selector = spec.get("selector") or {}
    return [
        _meta(svc).get("name"),
        typ,
        spec.get("clusterIP") or "<none>",
        external,
        ",".join(ports) or "<none>",
        _age(svc),
        ",".join(f"{k}={v}" for k, v in selector.items()) or "<none>",
    ]


def _endpoints_row(ep: Obj) -> Row:
    addrs = []
    for subset in ep.get("subsets") or []:
        ports = subset.get("ports") or [{}]
        for a in subset.get("addresses") or []:
            for p in ports:
                addrs.append(f"{a.get('ip')}:{p['port']}" if p.get("port") else str(a.get("ip")))
    text = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [_meta(ep).get("name"), text or "<none>", _age(ep)]


def _slice_row(es: Obj) -> Row:
    ports = ",".join(str(p.get("port")) for p in es.get("ports") or [] if p.get("port") is not None)
    addrs = [a for e in es.get("endpoints") or [] for a in e.get("addresses") or []]
    text = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [_meta(es).get("name"), es.get("addressType", ""), ports or "<unset>", text or "<unset>", _age(es)]


# -- workloads ---------------------------------------------------------------------------------


def _deploy_row(d: Obj) -> Row:
    spec, st = d.get("spec") or {}, d.get("status") or {}
    names, images = _containers(spec)
    return [
        _meta(d).get("name"),
        f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        st.get("updatedReplicas", 0),
        st.get("availableReplicas", 0),
        _age(d),
        names,
        images,
        _selector_text(spec.get("selector")),
    ]


def _rs_row(rs: Obj) -> Row:
    spec, st = rs.get("spec") or {}, rs.get("status") or {}
    names, images = _containers(spec)
    return [
        _meta(rs).get("name"),
        spec.get("replicas", 1),
        st.get("replicas", 0),
        st.get("readyReplicas", 0),
        _age(rs),
        names,
        images,
        _selector_text(spec.get("selector")),
    ]


def _ds_row(ds: Obj) -> Row:
    spec, st = ds.get("spec") or {}, ds.get("status") or {}
    names, images = _containers(spec)
    node_sel = ((spec.get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
    return [
        _meta(ds).get("name"),
        st.get("desiredNumberScheduled", 0),
        st.get("currentNumberScheduled", 0),
        st.get("numberReady", 0),
        st.get("updatedNumberScheduled", 0),
        st.get("numberAvailable", 0),
        ",".join(f"{k}={v}" for k, v in node_sel.items()) or "<none>",
        _age(ds),
        names,
        images,
        _selector_text(spec.get("selector")),
    ]


def _sts_row(s: Obj) -> Row:
    spec, st = s.get("spec") or {}, s.get("status") or {}
    names, images = _containers(spec)
    return [
        _meta(s).get("name"),
        f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        _age(s),
        names,
        images,
    ]


# -- the rest ----------------------------------------------------------------------------------


def _event_row(ev: Obj) -> Row:
    obj = ev.get("involvedObject") or {}
    last = ev.get("lastTimestamp") or ev.get("eventTime") or _meta(ev).get("creationTimestamp")
    first = ev.get("firstTimestamp") or ev.get("eventTime") or _meta(ev).get("creationTimestamp")
    source = ev.get("source") or {}
    src = source.get("component", "") + (f", {source['host']}" if source.get("host") else "")
    return [
        age(last) if isinstance(last, str) and len(last) == 20 else "<unknown>",
        ev.get("type", ""),
        ev.get("reason", ""),
        f"{str(obj.get('kind', '')).lower()}/{obj.get('name', '')}",
        obj.get("fieldPath", ""),
        src or ev.get("reportingComponent", ""),
        str(ev.get("message", "")).strip(),
        age(first) if isinstance(first, str) and len(first) == 20 else "<unknown>",
        ev.get("count", 1),
        _meta(ev).get("name"),
    ]


def _ingress_row(ing: Obj) -> Row:
    spec = ing.get("spec") or {}
    hosts = [r.get("host") for r in spec.get("rules") or [] if r.get("host")]
    lb = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    addr = ",".join(i.get("ip") or i.get("hostname") or "" for i in lb)
    return [
        _meta(ing).get("name"),
        spec.get("ingressClassName") or "<none>",
        ",".join(hosts) or "*",
        addr,
        "80, 443" if spec.get("tls") else "80",
        _age(ing),
    ]


def _netpol_row(np: Obj) -> Row:
    sel = (np.get("spec") or {}).get("podSelector")
    text = _selector_text(sel)
    return [_meta(np).get("name"), "<none>" if text == "<none>" else text, _age(np)]


Printer = tuple[list[Column], Callable[[Obj], Row]]
_S, _I = "string", "integer"

PRINTERS: dict[str, Printer] = {
    "Pod": (
        [
            ("Name", _S, 0),
            ("Ready", _S, 0),
            ("Status", _S, 0),
            ("Restarts", _S, 0),
            ("Age", _S, 0),
            ("IP", _S, 1),
            ("Node", _S, 1),
            ("Nominated Node", _S, 1),
            ("Readiness Gates", _S, 1),
        ],
        _pod_row,
    ),
    "Node": (
        [
            ("Name", _S, 0),
            ("Status", _S, 0),
            ("Roles", _S, 0),
            ("Age", _S, 0),
            ("Version", _S, 0),
            ("Internal-IP", _S, 1),
            ("External-IP", _S, 1),
            ("OS-Image", _S, 1),
            ("Kernel-Version", _S, 1),
            ("Container-Runtime", _S, 1),
        ],
        _node_row,
    ),
    "Service": (
        [
            ("Name", _S, 0),
            ("Type", _S, 0),
            ("Cluster-IP", _S, 0),
            ("External-IP", _S, 0),
            ("Port(s)", _S, 0),
            ("Age", _S, 0),
            ("Selector", _S, 1),
        ],
        _svc_row,
    ),
    "Endpoints": ([("Name", _S, 0), ("Endpoints", _S, 0), ("Age", _S, 0)], _endpoints_row),
    "EndpointSlice": (
        [("Name", _S, 0), ("AddressType", _S, 0), ("Ports", _S, 0), ("Endpoints", _S, 0), ("Age", _S, 0)],
        _slice_row,
    ),
    "Deployment": (
        [
            ("Name", _S, 0),
            ("Ready", _S, 0),
            ("Up-to-date", _I, 0),
            ("Available", _I, 0),
            ("Age", _S, 0),
            ("Containers", _S, 1),
            ("Images", _S, 1),
            ("Selector", _S, 1),
        ],
        _deploy_row,
    ),
    "ReplicaSet": (
        [
            ("Name", _S, 0),
            ("Desired", _I, 0),
            ("Current", _I, 0),
            ("Ready", _I, 0),
            ("Age", _S, 0),
            ("Containers", _S, 1),
            ("Images", _S, 1),
            ("Selector", _S, 1),
        ],
        _rs_row,
    ),
    "DaemonSet": (
        [
            ("Name", _S, 0),
            ("Desired", _I, 0),
            ("Current", _I, 0),
            ("Ready", _I, 0),
            ("Up-to-date", _I, 0),
            ("Available", _I, 0),
            ("Node Selector", _S, 0),
            ("Age", _S, 0),
            ("Containers", _S, 1),
            ("Images", _S, 1),
            ("Selector", _S, 1),
        ],
        _ds_row,
    ),
    "StatefulSet": (
        [("Name", _S, 0), ("Ready", _S, 0), ("Age", _S, 0), ("Containers", _S, 1), ("Images", _S, 1)],
        _sts_row,
    ),
    "Namespace": (
        [("Name", _S, 0), ("Status", _S, 0), ("Age", _S, 0)],
        lambda o: [_meta(o).get("name"), (o.get("status") or {}).get("phase", ""), _age(o)],
    ),
    "ConfigMap": (
        [("Name", _S, 0), ("Data", _I, 0), ("Age", _S, 0)],
        lambda o: [_meta(o).get("name"), len(o.get("data") or {}) + len(o.get("binaryData") or {}), _age(o)],
    ),
    "Secret": (
        [("Name", _S, 0), ("Type", _S, 0), ("Data", _I, 0), ("Age", _S, 0)],
        lambda o: [_meta(o).get("name"), o.get("type", ""), len(o.get("data") or {}), _age(o)],
    ),
    "ServiceAccount": (
        [("Name", _S, 0), ("Secrets", _I, 0), ("Age", _S, 0)],
        lambda o: [_meta(o).get("name"), len(o.get("secrets") or []), _age(o)],
    ),
    "Event": (
        [
            ("Last Seen", _S, 0),
            ("Type", _S, 0),
            ("Reason", _S, 0),
            ("Object", _S, 0),
            ("Subobject", _S, 1),
            ("Source", _S, 1),
            ("Message", _S, 0),
            ("First Seen", _S, 1),
            ("Count", _I, 1),
            ("Name", _S, 1),
        ],
        _event_row,
    ),
    "NetworkPolicy": ([("Name", _S, 0), ("Pod-Selector", _S, 0), ("Age", _S, 0)], _netpol_row),
    "Ingress": (
        [
            ("Name", _S, 0),
            ("Class", _S, 0),
            ("Hosts", _S, 0),
            ("Address", _S, 0),
            ("Ports", _S, 0),
            ("Age", _S, 0),
        ],
        _ingress_row,
    ),
    "IngressClass": (
        [("Name", _S, 0), ("Controller", _S, 0), ("Parameters", _S, 0), ("Age", _S, 0)],
        lambda o: [
            _meta(o).get("name"),
            (o.get("spec") or {}).get("controller", ""),
            _none((o.get("spec") or {}).get("parameters")),
            _age(o),
        ],
    ),
    "Lease": (
        [("Name", _S, 0), ("Holder", _S, 0), ("Age", _S, 0)],
        lambda o: [_meta(o).get("name"), (o.get("spec") or {}).get("holderIdentity", ""), _age(o)],
    ),
}
_DEFAULT: Printer = ([("Name", _S, 0), ("Age", _S, 0)], lambda o: [_meta(o).get("name"), _age(o)])
_DESCRIPTIONS = {"Name": "Name must be unique within a namespace."}


def partial_metadata(obj: Obj) -> Obj:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def table(
    rt: ResourceType,
    items: list[Obj],
    rv: str,
    include_object: str = "Metadata",
    with_columns: bool = True,
    cont: str | None = None,
) -> Obj:
    columns, row = PRINTERS.get(rt.kind, _DEFAULT)
    rows = []
    for obj in items:
        r: Obj = {"cells": row(obj)}
        if include_object == "Object":
            r["object"] = obj
        elif include_object != "None":
            r["object"] = partial_metadata(obj)
        rows.append(r)
    out: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv}}
    if cont:
        out["metadata"]["continue"] = cont
    if with_columns:
        out["columnDefinitions"] = [
            {
                "name": name,
                "type": typ,
                "format": "name" if name == "Name" else "",
                "description": _DESCRIPTIONS.get(name, name),
                "priority": prio,
            }
            for name, typ, prio in columns
        ]
    out["rows"] = rows
    return out
