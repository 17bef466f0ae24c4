"""CNI faults on a node and on the CNI agent, done the way a person would on a kind node.

Node files are changed through the node channel (``docker exec`` on kind, the node shell in the
lab) with ``tee``/``rm``/``cp``, never a bare ``mv`` into ``/etc/cni/net.d``: containerd ignores
the Create event a move makes and would not notice (reference §3.1). What a fault changes is saved
first (:mod:`faults.originals`): a conf file's bytes, a copy of a plugin binary on the node, the
list of IPAM reservations it wrote.

Who rewrites a deleted conf file is the recipe's business (``conf_rewrite``): Cilium re-creates
its own at once, so ``delete_cni_config`` heals itself there; the revert writes the saved bytes
back whatever the CNI.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from typing import Any

from clusters.handle import Cluster
from faults import context, originals
from faults.actions import _support as s
from faults.originals import FaultRecord

__all__ = [
    "break_cni_config",
    "delete_cni_config",
    "exhaust_pod_cidr",
    "release_pod_cidr",
    "remove_cni_plugin",
    "restart_cni_agent",
    "restore_cni_config",
    "restore_cni_plugin",
    "start_cni_agent",
    "stop_cni_agent",
]

log = logging.getLogger(__name__)

CONF_DIR = "/etc/cni/net.d"
BIN_DIR = "/opt/cni/bin"
BACKUP_DIR = "/var/lib/cni/knetcheck-backup"
IPAM_DIR = "/var/lib/cni/networks"
AGENT_DOWN_KEY = "knetcheck.io/cni-agent-down"


def _conf_path(cluster: Cluster, conf_file: str | None) -> str:
    name = conf_file or cluster.cni.conf_file
    if "/" in name:
        raise ValueError(f"conf_file {name!r} must be a file name inside {CONF_DIR}")
    return f"{CONF_DIR}/{name}"


def _malformed(run: str) -> str:
    """A conflist cut off mid-object: what a half-written file or a bad templating leaves."""
    return ('{\n  "cniVersion": "1.0.0",\n  "name": "knetcheck-broken-' + run
            + '",\n  "plugins": [\n    {"type": ')


def _save_conf(cluster: Cluster, node: str, path: str) -> FaultRecord:
    return s.record(cluster, "cni-config", f"node/{node}:{path}", restore_cni_config,
                    {"node": node, "conf_file": path.rsplit("/", 1)[1]},
                    lambda: {"path": path, "content": s.node_run(cluster, node, ["cat", path])})


def break_cni_config(
    node: str,
    conf_file: str | None = None,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Overwrite the node's CNI conf file (default: the recipe's ``conf_file``) with malformed JSON,
    written with ``tee`` in place so containerd reloads and fails (``cni plugin not initialized``;
    the node goes NotReady, new pods there get no sandbox). Revert: :func:`restore_cni_config`."""
    cluster = context.cluster_for(configuration)
    node = s.resolve_node(cluster, node)
    path = _conf_path(cluster, conf_file)
    _save_conf(cluster, node, path)
    s.node_run(cluster, node, ["tee", path], stdin=_malformed(context.run_id()))
    return {"node": node, "path": path, "broken": "malformed JSON"}


def delete_cni_config(
    node: str,
    conf_file: str | None = None,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Delete the node's CNI conf file (``rm``: a Remove event, so containerd reloads and finds no
    network config). Revert: :func:`restore_cni_config`."""
    cluster = context.cluster_for(configuration)
    node = s.resolve_node(cluster, node)
    path = _conf_path(cluster, conf_file)
    _save_conf(cluster, node, path)
    s.node_run(cluster, node, ["rm", "-f", path])
    return {"node": node, "path": path, "deleted": True, "rewritten_by": cluster.cni.conf_rewrite.value}


def restore_cni_config(
    node: str,
    conf_file: str | None = None,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the saved conf file back with ``tee`` (create + write: containerd reloads it)."""
    cluster = context.cluster_for(configuration)
    node = s.resolve_node(cluster, node)
    path = _conf_path(cluster, conf_file)

    def put_back(rec: FaultRecord) -> s.Result:
        s.node_run(cluster, node, ["tee", path], stdin=str(rec.original["content"]))
        return {"node": node, "path": path}

    return s.restore(cluster, "cni-config", f"node/{node}:{path}", put_back)


def _first_plugin(cluster: Cluster, node: str) -> str:
    """The first plugin ``type`` of the node's conf file: the binary every new sandbox needs."""
    text = s.node_run(cluster, node, ["cat", _conf_path(cluster, None)])
    doc = json.loads(text)
    plugins = doc.get("plugins") or [doc]
    return str(plugins[0]["type"])


def remove_cni_plugin(
    node: str,
    plugin: str | None = None,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Remove a CNI plugin binary from the node's ``/opt/cni/bin`` (default: the first plugin of
    the conf file), after copying it to ``/var/lib/cni/knetcheck-backup`` on the node. New pods
    fail with ``failed to find plugin "<type>" in path``. Revert: :func:`restore_cni_plugin`."""
    cluster = context.cluster_for(configuration)
    node = s.resolve_node(cluster, node)
    name = plugin or _first_plugin(cluster, node)
    if "/" in name or not name:
        raise ValueError(f"plugin {name!r} must be a binary name in {BIN_DIR}")
    binary = f"{BIN_DIR}/{name}"
    backup = f"{BACKUP_DIR}/{context.run_id()}-{name}"

    def save_copy() -> dict[str, Any]:
        s.node_run(cluster, node, ["mkdir", "-p", BACKUP_DIR])
        s.node_run(cluster, node, ["cp", "-p", binary, backup])
        return {"binary": binary, "backup": backup}

    rec = s.record(cluster, "cni-plugin", f"node/{node}:{binary}", restore_cni_plugin,
                   {"node": node, "plugin": name}, save_copy)
    s.node_run(cluster, node, ["rm", "-f", binary])
    return {"node": node, "removed": binary, "backup": rec.original["backup"]}


def restore_cni_plugin(
    node: str,
    plugin: str | None = None,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Copy the saved binary back into ``/opt/cni/bin`` and drop the backup (``plugin`` None: every
    binary removed from ``node``)."""
    cluster = context.cluster_for(configuration)
    node = s.resolve_node(cluster, node)
    if plugin is None:
        targets = _targets_on(cluster, "cni-plugin", node)
        results = [restore_cni_plugin(node, t.rsplit("/", 1)[1], configuration) for t in targets]
        return {"node": node, "reverted": bool(results), "plugins": results}
    binary = f"{BIN_DIR}/{plugin}"

    def put_back(rec: FaultRecord) -> s.Result:
        backup = str(rec.original["backup"])
        if s.node_try(cluster, node, ["test", "-e", backup]):
            s.node_run(cluster, node, ["cp", "-p", backup, binary])
            s.node_run(cluster, node, ["rm", "-f", backup])
        elif not s.node_try(cluster, node, ["test", "-x", binary]):
            raise FileNotFoundError(f"node {node}: backup {backup} is gone and {binary} is missing; "
                                    f"copy {plugin} from another node's {BIN_DIR}")
        return {"node": node, "binary": binary}

    return s.restore(cluster, "cni-plugin", f"node/{node}:{binary}", put_back)


def _host_local(conf: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The network name and the host-local ``ipam`` block of a conf(list), or a clear error."""
    plugins = conf.get("plugins") or [conf]
    for plugin in plugins:
        ipam = plugin.get("ipam") or {}
        if ipam.get("type") == "host-local":
            return str(conf.get("name") or plugin.get("name")), ipam
    raise ValueError("the node's CNI config has no host-local IPAM: pod-CIDR exhaustion needs a CNI that "
                     "allocates from the node podCIDR with host-local (kindnet, Flannel, the lab)")


def _free_addresses(ipam: dict[str, Any], taken: set[str]) -> list[str]:
    subnets = [r["subnet"] for rs in ipam.get("ranges") or [] for r in rs if "subnet" in r]
    if not subnets and ipam.get("subnet"):
        subnets = [ipam["subnet"]]
    free: list[str] = []
    for subnet in subnets:
        net = ipaddress.ip_network(subnet, strict=False)
        if net.version != 4:
            continue
        gateway = net.network_address + 1
        free += [str(ip) for ip in net.hosts() if ip != gateway and str(ip) not in taken]
    return free


def exhaust_pod_cidr(
    node: str,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Use up every address of the node's pod range in host-local's store.

    Writes a reservation file for each free address into ``/var/lib/cni/networks/<network>/`` on
    the node, exactly what host-local writes per pod, so the next pod there fails with
    ``no IP addresses available in range set`` (the real host-local error) without running 250
    pods. Running pods keep their addresses. Revert: :func:`release_pod_cidr` removes only the
    files this wrote.
    """
    cluster = context.cluster_for(configuration)
    node = s.resolve_node(cluster, node)
    name, ipam = _host_local(json.loads(s.node_run(cluster, node, ["cat", _conf_path(cluster, None)])))
    store = str(ipam.get("dataDir") or f"{IPAM_DIR}/{name}")
    s.node_run(cluster, node, ["mkdir", "-p", store])
    taken = set(s.node_run(cluster, node, ["ls", "-1", store]).split())
    files = [f"{store}/{ip}" for ip in _free_addresses(ipam, taken)]
    rec = s.record(cluster, "pod-cidr", f"node/{node}:{store}", release_pod_cidr, {"node": node},
                   lambda: {"store": store, "files": files})
    files = [str(f) for f in rec.original["files"]]
    if files:
        s.node_run(cluster, node, ["tee", *files], stdin=f"knetcheck-fault-{rec.run_id}\r\neth0")
    log.info("node %s: reserved %d free pod addresses in %s", node, len(files), store)
    return {"node": node, "store": store, "reserved": len(files)}


def release_pod_cidr(
    node: str,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Remove the reservation files :func:`exhaust_pod_cidr` wrote (and nothing else)."""
    cluster = context.cluster_for(configuration)
    node = s.resolve_node(cluster, node)
    found = _targets_on(cluster, "pod-cidr", node)
    if not found:
        return {"fault": "pod-cidr", "target": f"node/{node}", "reverted": False}

    def put_back(rec: FaultRecord) -> s.Result:
        files = [str(f) for f in rec.original["files"]]
        if files:
            s.node_run(cluster, node, ["rm", "-f", *files])
        return {"node": node, "released": len(files)}

    return s.restore(cluster, "pod-cidr", found[0], put_back)


def _targets_on(cluster: Cluster, fault: str, node: str) -> list[str]:
    """Targets of saved ``fault`` records on ``node`` (from any run)."""
    return sorted({r.target for r in originals.list_all(cluster)
                   if r.fault == fault and r.target.startswith(f"node/{node}:")})


def _agent(cluster: Cluster) -> tuple[str, str]:
    agent = cluster.cni.agent
    return agent.namespace, agent.daemonset


def stop_cni_agent(
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Take the CNI agent DaemonSet (the recipe's ``agent``) off every node: a DaemonSet cannot be
    scaled to 0, so patch in a nodeSelector no node matches (reference §3.4). Existing pods keep
    their network; what breaks next depends on the CNI. Revert: :func:`start_cni_agent`."""
    cluster = context.cluster_for(configuration)
    namespace, name = _agent(cluster)
    ds = s.apps(cluster).read_namespaced_daemon_set(name, namespace, _request_timeout=s.API_TIMEOUT)
    selector = dict(ds.spec.template.spec.node_selector or {})
    s.record(cluster, "cni-agent", f"daemonset/{namespace}/{name}", start_cni_agent, {},
             lambda: {"nodeSelector": json.dumps(selector, sort_keys=True)})
    body = {"spec": {"template": {"spec": {"nodeSelector": {AGENT_DOWN_KEY: context.run_id()}}}}}
    s.apps(cluster).patch_namespaced_daemon_set(name, namespace, body, _request_timeout=s.API_TIMEOUT)
    return {"daemonset": f"{namespace}/{name}", "nodeSelector": {AGENT_DOWN_KEY: context.run_id()}}


def start_cni_agent(
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Remove the impossible nodeSelector :func:`stop_cni_agent` added, with a JSON patch."""
    cluster = context.cluster_for(configuration)
    namespace, name = _agent(cluster)

    def put_back(rec: FaultRecord) -> s.Result:
        ds = s.apps(cluster).read_namespaced_daemon_set(name, namespace, _request_timeout=s.API_TIMEOUT)
        current = dict(ds.spec.template.spec.node_selector or {})
        if AGENT_DOWN_KEY in current:
            path = "/spec/template/spec/nodeSelector/" + AGENT_DOWN_KEY.replace("~", "~0").replace("/", "~1")
            s.apps(cluster).patch_namespaced_daemon_set(name, namespace, [{"op": "remove", "path": path}],
                                                        _request_timeout=s.API_TIMEOUT)
        return {"daemonset": f"{namespace}/{name}"}

    return s.restore(cluster, "cni-agent", f"daemonset/{namespace}/{name}", put_back)


def restart_cni_agent(
    node: str | None = None,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Delete the CNI agent's pod on ``node`` (all nodes when None), so its DaemonSet starts a new
    one: the runbook's way to make an agent rewrite its conf file (reference §3.1)."""
    cluster = context.cluster_for(configuration)
    agent = cluster.cni.agent
    fields = f"spec.nodeName={s.resolve_node(cluster, node)}" if node else None
    pods = s.core(cluster).list_namespaced_pod(agent.namespace, label_selector=agent.selector,
                                               field_selector=fields, _request_timeout=s.API_TIMEOUT).items
    deleted = []
    for pod in pods:
        try:
            s.core(cluster).delete_namespaced_pod(pod.metadata.name, agent.namespace,
                                                  _request_timeout=s.API_TIMEOUT)
            deleted.append(pod.metadata.name)
        except Exception as exc:
            if not s.is_not_found(exc):
                raise
    return {"deleted": deleted}
