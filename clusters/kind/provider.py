"""The kind provider: create (or verify and reuse) ``knetcheck-<cni>``, install the CNI, wait.

Flow, each step a command with a timeout: check the kind version and the Docker engine,
render and validate the kind config, then either create the cluster or reuse a same-named one
only if its recorded config hash matches; preload local images, install the CNI at its pinned
version, poll readiness ourselves (kind's ``--wait`` is not enough), record the hash in
``kube-system/knetcheck-kind-config``. A cluster we created is deleted again if any later
step fails, unless the user asked to keep it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from clusters.capabilities import Capability
from clusters.errors import KnetcheckError, UsageProblem
from clusters.handle import Cluster
from clusters.kind import driver
from clusters.kind.channel import DockerExecChannel
from clusters.kind.cloud import CloudProviderKind
from clusters.kind.config import cluster_name, config_hash, config_yaml, render_kind_config
from clusters.kind.kubectl import Kubectl
from clusters.kind.versions import CNI_BIN_DIR_ENV, DEFAULT_CNI_BIN_DIR, FULL_CNI_PLUGINS, node_image_for
from clusters.labels import MANAGED_BY, MANAGED_BY_LABEL
from clusters.provider import ClusterRequest
from clusters.recipes import CniRecipe, InstallAction, ProviderName, recipe_names
from clusters.validate import validate_kind_config, validate_manifest

log = logging.getLogger(__name__)

CONFIG_MAP = "knetcheck-kind-config"
CONFIG_MAP_NAMESPACE = "kube-system"
HASH_KEY = "config-sha256"
CONFIG_LABEL = "knetcheck.io/kind-config"


def context_name(name: str) -> str:
    return f"kind-{name}"


def cni_bin_dir_from_env() -> Path:
    return Path(os.environ.get(CNI_BIN_DIR_ENV) or DEFAULT_CNI_BIN_DIR)


def check_cni_bin_dir(cni: str, path: Path) -> Path:
    """The full plugin set must be on the host before kind mounts it over /opt/cni/bin."""
    path = path.absolute()
    missing = [p for p in FULL_CNI_PLUGINS if not os.access(path / p, os.X_OK)]
    if missing:
        raise UsageProblem(
            f"cni {cni} on kind mounts {path} over the nodes' /opt/cni/bin but it lacks "
            f"{', '.join(missing)}; install containernetworking-plugins v1.9.1 there "
            f"or set {CNI_BIN_DIR_ENV} to a dir that has them"
        )
    return path


def hash_config_map(
    name: str, digest: str, recipe: CniRecipe, node_image: str, config: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIG_MAP,
            "namespace": CONFIG_MAP_NAMESPACE,
            # Not the run-id label: this object outlives the run that made it, by design.
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, CONFIG_LABEL: "true"},
        },
        "data": {
            HASH_KEY: digest,
            "cluster": name,
            "cni": recipe.name,
            "cni-version": recipe.version,
            "node-image": node_image,
            "kind-config.yaml": config,
        },
    }


class KindProvider:
    """Implements :class:`clusters.provider.Provider` for kind."""

    name = "kind"

    def __init__(
        self,
        timeouts: driver.Timeouts | None = None,
        cni_bin_dir: Path | None = None,
        cloud_settle: float = 2.0,
    ):
        self.timeouts = timeouts or driver.Timeouts()
        self._cni_bin_dir = cni_bin_dir
        self._cloud_settle = cloud_settle
        self._cloud: CloudProviderKind | None = None

    def acquire(self, request: ClusterRequest) -> Cluster:
        recipe = request.cni
        if recipe is None:
            choices = ", ".join(recipe_names(ProviderName.KIND))
            raise UsageProblem(f"a kind cluster needs a CNI; pass --cni with one of: {choices}")
        if not recipe.supports(ProviderName.KIND):
            choices = ", ".join(recipe_names(ProviderName.KIND))
            raise UsageProblem(f"cni {recipe.name} has no kind recipe; choose one of: {choices}")
        t = self.timeouts
        driver.check_kind_version(t)
        driver.check_docker(t)

        name = cluster_name(recipe.name)
        image = node_image_for(request.node_image, request.k8s_version)
        config_path, text, digest = self._write_config(recipe, request, name, image)
        kubeconfig = request.state_dir / f"kubeconfig-{name}"
        kubectl = Kubectl(kubeconfig, context_name(name), t)

        created = name not in driver.kind_clusters(t)
        if not created:
            driver.kind_write_kubeconfig(name, kubeconfig, t)
            self._check_reusable(name, kubectl, digest)
            log.info("reusing kind cluster %s (config %s)", name, digest[:12])
        try:
            if created:
                # Inside the try: a create that times out can leave node containers behind.
                log.info("creating kind cluster %s (%s, %d nodes)", name, image, request.nodes)
                driver.kind_create(name, config_path, kubeconfig, image, t)
                self._preload(recipe, name)
                self._install(recipe, kubectl)
            self._wait_ready(recipe, kubectl)
            if created:
                cm = hash_config_map(name, digest, recipe, image, text)
                validate_manifest(cm)
                kubectl.apply_object(cm)
            capabilities = set(recipe.capabilities) | {Capability.NODE_ACCESS}
            if self._cloud_for(request).attach(name):
                capabilities |= {Capability.LOAD_BALANCER, Capability.INGRESS}
        except BaseException:
            self._detach_cloud(name)
            if created and not request.keep_cluster:
                self._delete_quietly(name, kubeconfig)
            raise

        return Cluster(
            name=name,
            provider=self.name,
            kubeconfig=kubeconfig,
            context=context_name(name),
            cni=recipe,
            capabilities=frozenset(capabilities),
            node_channel=DockerExecChannel(name),
            run_id=request.run_id,
        )

    def release(self, cluster: Cluster, request: ClusterRequest) -> None:
        """Stop cloud-provider-kind and delete the cluster unless the user keeps it.

        Every cluster this provider hands out was created by knetcheck (a reused one carries
        our config ConfigMap), so deleting it never removes someone else's cluster.
        """
        try:
            self._detach_cloud(cluster.name)
        finally:
            if request.keep_cluster:
                log.info(
                    "keeping kind cluster %s (delete: kind delete cluster --name %s)",
                    cluster.name,
                    cluster.name,
                )
            else:
                driver.kind_delete(cluster.name, cluster.kubeconfig, self.timeouts)

    def _write_config(
        self, recipe: CniRecipe, request: ClusterRequest, name: str, image: str
    ) -> tuple[Path, str, str]:
        """Render, validate and write the kind config; return its path, text and hash."""
        bin_dir = None
        if recipe.kind.full_cni_plugins:
            bin_dir = check_cni_bin_dir(recipe.name, self._cni_bin_dir or cni_bin_dir_from_env())
        doc = render_kind_config(recipe, name=name, nodes=request.nodes, cni_bin_dir=bin_dir)
        validate_kind_config(doc)
        text = config_yaml(doc)
        request.state_dir.mkdir(parents=True, exist_ok=True)
        path = request.state_dir / f"kind-{name}.yaml"
        path.write_text(text, encoding="utf-8")
        return path, text, config_hash(doc, image, recipe)

    def close(self) -> None:
        """Stop cloud-provider-kind whatever still uses it (end of session, or a failed run)."""
        if self._cloud is not None:
            self._cloud.stop()

    def _check_reusable(self, name: str, kubectl: Kubectl, digest: str) -> None:
        fix = f"delete it with `kind delete cluster --name {name}` and run again"
        try:
            cm = kubectl.get_object("configmap", CONFIG_MAP, CONFIG_MAP_NAMESPACE)
        except KnetcheckError as err:
            raise UsageProblem(f"kind cluster {name!r} exists but does not answer ({err}); {fix}") from None
        if cm is None:
            raise UsageProblem(
                f"kind cluster {name!r} exists but was not finished by knetcheck "
                f"(no {CONFIG_MAP_NAMESPACE}/{CONFIG_MAP}); {fix}"
            )
        stored = str((cm.get("data") or {}).get(HASH_KEY, ""))
        if stored != digest:
            raise UsageProblem(
                f"kind cluster {name!r} exists with a different config (hash {stored[:12] or 'none'}, "
                f"wanted {digest[:12]}); {fix}"
            )

    def _preload(self, recipe: CniRecipe, name: str) -> None:
        """Load only images the host already has: pulling them here would just move the wait."""
        for image in recipe.images:
            if driver.image_present(image, self.timeouts):
                driver.kind_load(image, name, self.timeouts)
            else:
                log.debug("not preloading %s: not in the local Docker image store", image)

    def _install(self, recipe: CniRecipe, kubectl: Kubectl) -> None:
        for step in recipe.install:
            if step.action is InstallAction.NONE:
                continue
            if step.action is InstallAction.KUBECTL_CREATE:
                kubectl.install_manifest("create", step.source)
            elif step.action is InstallAction.KUBECTL_APPLY:
                kubectl.install_manifest("apply", step.source)
            elif step.action is InstallAction.HELM_INSTALL:
                driver.helm_install(step, kubectl.kubeconfig, kubectl.context, self.timeouts)
            log.info("installed %s %s: %s %s", recipe.name, recipe.version, step.action.value, step.source)

    def _wait_ready(self, recipe: CniRecipe, kubectl: Kubectl) -> None:
        kubectl.wait_nodes_ready()
        for obj in recipe.readiness:
            kubectl.wait_object(obj)
        kubectl.wait_coredns()

    def _cloud_for(self, request: ClusterRequest) -> CloudProviderKind:
        if self._cloud is None:
            self._cloud = CloudProviderKind(
                request.state_dir / "cloud-provider-kind.log", settle=self._cloud_settle
            )
        return self._cloud

    def _detach_cloud(self, name: str) -> None:
        if self._cloud is not None:
            self._cloud.detach(name)

    def _delete_quietly(self, name: str, kubeconfig: Path) -> None:
        try:
            driver.kind_delete(name, kubeconfig, self.timeouts)
        except KnetcheckError as err:
            log.error("could not delete kind cluster %s after a failure: %s", name, err)
