"""The existing-cluster provider: attach to a cluster from a kubeconfig, never create or delete it.

Everything it decides is read-only: does the API answer, which CNI runs (by the recipes' agent
DaemonSets), and what the cluster can do. Capabilities are claimed only on evidence, because a
wrongly claimed capability turns into a failing test on someone's production cluster, while a
missing one only skips with a reason:

- the CNI's capabilities come from its recipe (node-access, ingress and load-balancer excluded:
  those belong to the cluster, not the CNI);
- ingress when at least one IngressClass exists (a controller registered itself);
- load-balancer only when some Service of type LoadBalancer already has an address in its
  status, i.e. a load-balancer implementation demonstrably works here;
- node-access only with ``--allow-destructive`` (debug pods, :mod:`clusters.existing.debugpod`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import urllib3

from clusters import recipes
from clusters.capabilities import Capability
from clusters.errors import ClusterUnavailable, UsageProblem
from clusters.existing.debugpod import DebugPodChannel
from clusters.handle import Cluster, NoNodeChannel
from clusters.provider import ClusterRequest
from clusters.recipes import CniRecipe, ProviderName

log = logging.getLogger(__name__)

API_TIMEOUT = 10.0
_NOT_FROM_RECIPE = frozenset({Capability.NODE_ACCESS, Capability.INGRESS, Capability.LOAD_BALANCER})
NO_NODE_ACCESS = "node access needs --allow-destructive on an existing cluster"


@dataclass(frozen=True)
class _Api:
    """A configured client plus what to name in messages (server and context)."""

    client: Any
    server: str
    context: str

    def where(self) -> str:
        return f"the API server {self.server} (context {self.context})"


class ExistingProvider:
    name = "existing"

    def acquire(self, request: ClusterRequest) -> Cluster:
        if request.kubeconfig is None:
            raise UsageProblem(
                "--cluster=existing needs a kubeconfig: pass --kubeconfig=PATH or set KUBECONFIG"
            )
        api = _connect(request)
        _check_answers(api)
        cni = request.cni or detect_cni(api)
        caps = set(cni.capabilities - _NOT_FROM_RECIPE)
        if _has_ingress_class(api):
            caps.add(Capability.INGRESS)
        if _has_working_load_balancer(api):
            caps.add(Capability.LOAD_BALANCER)
        channel: DebugPodChannel | NoNodeChannel
        if request.allow_destructive:
            caps.add(Capability.NODE_ACCESS)
            channel = DebugPodChannel(request.kubeconfig, request.context, request.run_id)
        else:
            channel = NoNodeChannel(NO_NODE_ACCESS)
        log.info("existing cluster %s: cni=%s, capabilities %s", api.context, cni.name,
                 ", ".join(sorted(caps)) or "none")
        return Cluster(
            name=api.context,
            provider=self.name,
            kubeconfig=request.kubeconfig,
            context=request.context,
            cni=cni,
            capabilities=frozenset(caps),
            node_channel=channel,
            run_id=request.run_id,
        )

    def release(self, cluster: Cluster, request: ClusterRequest) -> None:
        """Remove the debug pods, if any; the cluster itself is never touched."""
        if isinstance(cluster.node_channel, DebugPodChannel):
            cluster.node_channel.close()


def _connect(request: ClusterRequest) -> _Api:
    from kubernetes import client, config

    cfg = client.Configuration()
    load: Any = config.load_kube_config  # untyped in the client; called with keywords only
    try:
        load(
            config_file=str(request.kubeconfig), context=request.context, client_configuration=cfg,
            persist_config=False,
        )
    except config.ConfigException as exc:
        raise UsageProblem(f"kubeconfig {request.kubeconfig} (context {request.context}) is unusable: "
                           f"{str(exc).splitlines()[0]}") from None
    cfg.retries = 1
    return _Api(client.ApiClient(cfg), cfg.host, request.context or "current-context")


def _reason(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if status:
        return f"HTTP {status} {getattr(exc, 'reason', '')}".strip()
    text = str(exc).strip().splitlines()
    reason = getattr(exc, "reason", None)
    return str(reason) if reason is not None else (text[-1] if text else type(exc).__name__)


def _check_answers(api: _Api) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        client.VersionApi(api.client).get_code(_request_timeout=API_TIMEOUT)
    except ApiException as exc:
        if exc.status in (401, 403):
            raise UsageProblem(f"{api.where()} refused our credentials ({_reason(exc)}): check the user "
                               "in the kubeconfig") from None
        raise ClusterUnavailable(f"{api.where()} answered {_reason(exc)} to GET /version: is that "
                                 "a Kubernetes API server?") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:  # refused, reset, timed out, TLS, DNS
        raise ClusterUnavailable(
            f"{api.where()} does not answer ({_reason(exc)}): check --kubeconfig/--context and that "
            "the cluster is up"
        ) from None


class _Forbidden(Exception):
    """The credentials may not read this: callers decide whether that is fatal."""


def _get(api: _Api, call: Any, *args: Any, **kwargs: Any) -> Any | None:
    """``call(...)``, or None when the object is absent (404); 401/403 raise :class:`_Forbidden`."""
    from kubernetes.client.exceptions import ApiException

    try:
        return call(*args, _request_timeout=API_TIMEOUT, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            return None
        if exc.status in (401, 403):
            raise _Forbidden(_reason(exc)) from None
        raise ClusterUnavailable(f"{api.where()} failed ({_reason(exc)})") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:  # the cluster went away after answering
        raise ClusterUnavailable(f"{api.where()} stopped answering ({_reason(exc)})") from None


def detect_cni(api: _Api) -> CniRecipe:
    """The recipe whose agent DaemonSet runs in the cluster; none or several found is an error."""
    from kubernetes import client

    apps = client.AppsV1Api(api.client)
    by_agent: dict[tuple[str, str], list[CniRecipe]] = {}
    for recipe in recipes.all_recipes().values():
        by_agent.setdefault((recipe.agent.namespace, recipe.agent.daemonset), []).append(recipe)
    found: list[CniRecipe] = []
    for (namespace, name), owners in by_agent.items():
        try:
            daemonset = _get(api, apps.read_namespaced_daemon_set, name, namespace)
        except _Forbidden as exc:
            raise UsageProblem(
                f"cannot read DaemonSet {namespace}/{name} in {api.where()} ({exc}) to detect the CNI: "
                "pass --cni"
            ) from None
        if daemonset is not None:
            found.extend(owners)
    usable = [r for r in found if r.supports(ProviderName.EXISTING)]
    choices = ", ".join(recipes.recipe_names(ProviderName.EXISTING))
    if len(usable) == 1:
        return usable[0]
    if len(usable) > 1:
        raise UsageProblem(f"{api.where()} runs the agents of several CNIs: {_agents(usable)}; "
                           "pass --cni to choose")
    if found:
        raise UsageProblem(f"{api.where()} runs {_agents(found)}, which knetcheck does not check on "
                           f"existing clusters; supported: {choices}")
    looked = ", ".join(f"{r.agent.namespace}/{r.agent.daemonset}" for r in recipes.all_recipes().values()
                       if r.supports(ProviderName.EXISTING))
    raise UsageProblem(f"no known CNI agent DaemonSet in {api.where()} (looked for {looked}); "
                       f"pass --cni, one of: {choices}")


def _agents(found: list[CniRecipe]) -> str:
    """``ds kube-system/calico-node (calico), ds kube-system/lab-cni (lab or lab-vxlan)``."""
    owners: dict[str, list[str]] = {}
    for recipe in found:
        owners.setdefault(f"ds {recipe.agent.namespace}/{recipe.agent.daemonset}", []).append(recipe.name)
    return ", ".join(f"{ds} ({' or '.join(sorted(names))})" for ds, names in sorted(owners.items()))


def _has_ingress_class(api: _Api) -> bool:
    from kubernetes import client

    try:
        listing = _get(api, client.NetworkingV1Api(api.client).list_ingress_class, limit=1)
    except _Forbidden as exc:
        log.info("not claiming ingress: cannot list IngressClasses (%s)", exc)
        return False
    return bool(listing is not None and listing.items)


def _has_working_load_balancer(api: _Api) -> bool:
    """True when some LoadBalancer Service already got an address (pages through all Services)."""
    from kubernetes import client

    core = client.CoreV1Api(api.client)
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": 500}
        if token:
            kwargs["_continue"] = token
        try:
            listing = _get(api, core.list_service_for_all_namespaces, **kwargs)
        except _Forbidden as exc:
            log.info("not claiming load-balancer: cannot list Services (%s)", exc)
            return False
        if listing is None:
            return False
        for svc in listing.items:
            if svc.spec is not None and svc.spec.type == "LoadBalancer":
                balancer = svc.status.load_balancer if svc.status else None
                if balancer is not None and balancer.ingress:
                    return True
        token = listing.metadata._continue if listing.metadata else None
        if not token:
            return False
