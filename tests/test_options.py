"""Option validation: every problem is one line that names it and the fix."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from clusters import options
from clusters.errors import UsageProblem
from clusters.options import AutoChoice, Settings, parse
from clusters.provider import ClusterKind
from clusters.recipes import ProviderName, recipe_names

NO_DOCKER = AutoChoice(ClusterKind.LAB, "no Docker engine answers here", "start Docker")
DOCKER = AutoChoice(ClusterKind.KIND, "a Docker engine answers and kind is on PATH", "pass --cluster=lab")


def settle(values: dict[str, object], env: dict[str, str] | None = None,
           auto: AutoChoice = NO_DOCKER) -> Settings:
    return parse(values, env=env or {}, auto=lambda: auto, run_id="rtest0001")


def problem(values: dict[str, object], env: dict[str, str] | None = None,
            auto: AutoChoice = NO_DOCKER) -> str:
    with pytest.raises(UsageProblem) as err:
        settle(values, env, auto)
    line = str(err.value)
    assert "\n" not in line
    return line


def kubeconfig(tmp_path: Path, contexts: tuple[str, ...] = ("prod", "staging"),
               current: str | None = "prod") -> Path:
    doc: dict[str, object] = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": c, "context": {"cluster": "c", "user": "u"}} for c in contexts],
    }
    if current is not None:
        doc["current-context"] = current
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


# ---- the table renders into both front ends


def test_every_option_has_one_line_help_and_a_unique_flag() -> None:
    flags = [spec.flag for spec in options.OPTIONS]
    assert len(flags) == len(set(flags))
    for spec in options.OPTIONS:
        assert spec.help and "\n" not in spec.help_line()
    assert {"--cluster", "--cni", "--kubeconfig", "--context", "--keep-cluster", "--allow-destructive",
            "--node-image", "--k8s-version", "--nodes", "--state-dir", "--reports-dir"} <= set(flags)


def test_argparse_rendering_reads_back_into_values() -> None:
    parser = argparse.ArgumentParser()
    options.add_to_argparse(parser)
    ns = parser.parse_args(["--cluster=lab", "--keep-cluster", "--nodes", "2"])
    values = options.given_values(lambda dest: getattr(ns, dest))
    assert values["cluster"] == "lab" and values["keep-cluster"] is True and values["cni"] is None
    assert options.to_argv(values) == ["--cluster=lab", "--keep-cluster", "--nodes=2"]


# ---- cluster and CNI


def test_unknown_cluster_lists_choices() -> None:
    assert problem({"cluster": "minikube"}) == (
        "unknown --cluster 'minikube'; choose one of: kind, existing, lab, auto")


def test_unknown_cluster_from_the_environment_names_the_variable() -> None:
    line = problem({}, env={"CLUSTER": "k3d"})
    assert line.startswith("unknown CLUSTER (for --cluster) 'k3d'; choose one of: kind, existing")


def test_unknown_cni_lists_every_recipe() -> None:
    line = problem({"cluster": "kind", "cni": "canal"})
    assert line == f"unknown CNI 'canal'; choose one of: {', '.join(recipe_names())}"


def test_cni_the_auto_chosen_lab_cannot_run_says_why_auto_chose_it() -> None:
    lab = recipe_names(ProviderName.LAB)
    line = problem({"cni": "calico"})
    assert line.startswith("cni=calico needs kind or an existing cluster; no Docker engine answers here, "
                           f"so --cluster=auto chose the lab: use --cni={lab[0]}")
    assert line.endswith("or start Docker")


def test_cni_the_auto_chosen_kind_cannot_run_offers_the_lab() -> None:
    line = problem({"cni": "lab"}, auto=DOCKER)
    assert line.startswith("cni=lab needs the lab; a Docker engine answers and kind is on PATH, so "
                           "--cluster=auto chose kind: use --cni=")
    assert line.endswith("or pass --cluster=lab")


def test_cni_an_explicit_cluster_cannot_run_lists_what_it_can() -> None:
    line = problem({"cluster": "lab", "cni": "flannel"})
    assert line.startswith("cni=flannel needs kind or an existing cluster, not --cluster=lab: use --cni=")


def test_default_cni_per_cluster_kind(tmp_path: Path) -> None:
    assert settle({"cluster": "kind"}).request.cni.name == "kindnet"  # type: ignore[union-attr]
    assert settle({"cluster": "lab"}).request.cni.name == "lab"  # type: ignore[union-attr]
    existing = settle({"cluster": "existing", "kubeconfig": str(kubeconfig(tmp_path))})
    assert existing.request.cni is None


def test_auto_is_resolved_only_when_asked_for() -> None:
    def no_docker_probe() -> AutoChoice:
        raise AssertionError("auto resolved for an explicit --cluster")

    assert parse({"cluster": "lab"}, env={}, auto=no_docker_probe).auto is None
    chosen = settle({}, auto=DOCKER)
    assert chosen.request.kind is ClusterKind.KIND and chosen.auto == DOCKER
    assert "auto: a Docker engine answers" in chosen.summary()


def test_auto_never_picks_an_existing_cluster(tmp_path: Path) -> None:
    line = problem({"kubeconfig": str(kubeconfig(tmp_path))})
    assert line.startswith("--kubeconfig/--context name an existing cluster: add --cluster=existing")


def test_kubeconfig_flag_on_a_created_cluster_is_refused(tmp_path: Path) -> None:
    line = problem({"cluster": "kind", "context": "prod"})
    assert line.startswith("--kubeconfig/--context are for --cluster=existing; a kind cluster writes")


def test_kubeconfig_env_does_not_bother_a_created_cluster(tmp_path: Path) -> None:
    assert settle({"cluster": "lab"}, env={"KUBECONFIG": "/nonexistent"}).request.kubeconfig is None


# ---- kubeconfig and context for an existing cluster


def test_existing_uses_kubeconfig_env_then_home(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path)
    got = settle({"cluster": "existing"}, env={"KUBECONFIG": str(path)}).request
    assert (got.kubeconfig, got.context) == (path, "prod")
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    path.rename(home / ".kube" / "config")
    got = settle({"cluster": "existing"}, env={"HOME": str(home)}).request
    assert got.kubeconfig == home / ".kube" / "config"


def test_existing_without_any_kubeconfig(tmp_path: Path) -> None:
    line = problem({"cluster": "existing"}, env={"HOME": str(tmp_path)})
    assert line == (f"kubeconfig {tmp_path}/.kube/config does not exist: pass --kubeconfig=PATH or set "
                    "KUBECONFIG")


def test_kubeconfig_list_in_env_needs_one_file(tmp_path: Path) -> None:
    line = problem({"cluster": "existing"}, env={"KUBECONFIG": "/a:/b"})
    assert line == "KUBECONFIG lists 2 files; knetcheck needs one: pass --kubeconfig=PATH"


def test_unreadable_kubeconfig(tmp_path: Path) -> None:
    line = problem({"cluster": "existing", "kubeconfig": str(tmp_path)})
    assert line.startswith(f"kubeconfig {tmp_path} is not readable (Is a directory)")


def test_kubeconfig_that_is_not_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "kc"
    bad.write_text("apiVersion: v1\ncontexts: [\n")
    assert problem({"cluster": "existing", "kubeconfig": str(bad)}).startswith(
        f"kubeconfig {bad} is not valid YAML at line")


def test_kubeconfig_without_contexts(tmp_path: Path) -> None:
    bad = tmp_path / "kc"
    bad.write_text("just: a mapping\n")
    assert problem({"cluster": "existing", "kubeconfig": str(bad)}).startswith(
        f"kubeconfig {bad} has no contexts")


def test_kubeconfig_without_current_context_lists_contexts(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, current=None)
    assert problem({"cluster": "existing", "kubeconfig": str(path)}) == (
        f"kubeconfig {path} has no current-context: pass --context, one of: prod, staging")


def test_unknown_context_lists_contexts(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path)
    assert problem({"cluster": "existing", "kubeconfig": str(path), "context": "dev"}) == (
        f"unknown --context 'dev' in kubeconfig {path}; choose one of: prod, staging")


def test_current_context_that_is_not_defined(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, current="gone")
    assert problem({"cluster": "existing", "kubeconfig": str(path)}) == (
        f"kubeconfig {path} has current-context 'gone', which it does not define: pass --context, one of: "
        "prod, staging")


def test_given_context_is_kept(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path)
    got = settle({"cluster": "existing", "kubeconfig": str(path), "context": "staging"}).request
    assert got.context == "staging"


# ---- numbers, versions, paths, flags


@pytest.mark.parametrize("value", ["0", "-1", "three"])
def test_nodes_must_be_positive(value: str) -> None:
    assert problem({"cluster": "lab", "nodes": value}) == (
        f"--nodes wants a whole number of nodes >= 1, got {value!r}")


def test_nodes_from_env() -> None:
    assert settle({"cluster": "lab"}, env={"KNETCHECK_NODES": "2"}).request.nodes == 2
    assert "KNETCHECK_NODES (for --nodes)" in problem({"cluster": "lab"}, env={"KNETCHECK_NODES": "x"})


@pytest.mark.parametrize(("given", "kept"), [("1.32", "1.32"), ("v1.31", "1.31")])
def test_k8s_version_is_a_minor_version(given: str, kept: str) -> None:
    assert settle({"cluster": "kind", "k8s-version": given}).request.k8s_version == kept


@pytest.mark.parametrize("value", ["1.32.1", "latest", "132"])
def test_bad_k8s_version(value: str) -> None:
    assert problem({"cluster": "kind", "k8s-version": value}) == (
        f"--k8s-version wants a Kubernetes minor version X.Y (e.g. 1.32), got {value!r}")


def test_state_dir_that_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_text("")
    assert problem({"cluster": "lab", "state-dir": str(file)}) == (
        f"--state-dir {file} is a file; give a directory (created if missing)")


def test_flag_from_env_must_be_boolean() -> None:
    assert settle({"cluster": "lab"}, env={"KNETCHECK_KEEP_CLUSTER": "yes"}).request.keep_cluster
    assert problem({"cluster": "lab"}, env={"KNETCHECK_KEEP_CLUSTER": "maybe"}) == (
        "KNETCHECK_KEEP_CLUSTER (for --keep-cluster) wants true or false, got 'maybe'")


def test_allow_destructive_has_no_environment_variable() -> None:
    assert options.SPECS["allow-destructive"].env is None


def test_reports_dir_default_and_env() -> None:
    assert options.reports_dir({}, env={}) == Path("reports")
    assert options.reports_dir({}, env={"KNETCHECK_REPORTS_DIR": "/r"}) == Path("/r")


# ---- accepted but without effect: noted, not refused



def test_allow_destructive_on_a_created_cluster_is_noted() -> None:
    got = settle({"cluster": "kind", "allow-destructive": True})
    assert got.request.allow_destructive
    assert got.notes == ("--allow-destructive has no effect on a kind cluster: knetcheck made it, so "
                         "node-level faults always run there",)


def test_creation_options_on_an_existing_cluster_are_noted(tmp_path: Path) -> None:
    got = settle({"cluster": "existing", "kubeconfig": str(kubeconfig(tmp_path)), "keep-cluster": True,
                  "nodes": "5"})
    assert [n.split(" ", 1)[0] for n in got.notes] == ["--keep-cluster", "--nodes"]
    assert all("never creates or deletes it" in n for n in got.notes)


def test_no_notes_for_plain_options() -> None:
    assert settle({"cluster": "lab"}).notes == ()


# ---- what auto means, and which provider serves a kind (clusters.registry)


def fake_bin(tmp_path: Path, name: str, code: int, out: str = "") -> None:
    script = tmp_path / name
    script.write_text(f"#!/bin/sh\necho '{out}'\nexit {code}\n")
    script.chmod(0o755)


@pytest.mark.parametrize(
    ("docker", "kind", "chosen", "reason"),
    [
        (None, True, ClusterKind.LAB, "no Docker engine answers here"),
        (1, True, ClusterKind.LAB, "no Docker engine answers here"),
        (0, False, ClusterKind.LAB, "a Docker engine answers but kind is not on PATH"),
        (0, True, ClusterKind.KIND, "a Docker engine answers and kind is on PATH"),
    ],
)
def test_resolve_auto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker: int | None, kind: bool,
                      chosen: ClusterKind, reason: str) -> None:
    from clusters import registry

    if docker is not None:
        fake_bin(tmp_path, "docker", docker, "27.3.1")
    if kind:
        fake_bin(tmp_path, "kind", 0)
    monkeypatch.setenv("PATH", str(tmp_path))
    got = registry.resolve_auto()
    assert (got.kind, got.reason) == (chosen, reason)


def test_provider_for_imports_lazily_and_names_a_missing_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    from clusters import registry
    from clusters.errors import ClusterUnavailable
    from clusters.existing.provider import ExistingProvider

    assert isinstance(registry.provider_for(ClusterKind.EXISTING), ExistingProvider)
    monkeypatch.setitem(registry._PROVIDERS, ClusterKind.LAB,
                        ("clusters.lab.no_such_provider", "LabProvider", "the embedded lab"))
    with pytest.raises(ClusterUnavailable, match=r"^the embedded lab is not available yet \(clusters"):
        registry.provider_for(ClusterKind.LAB)
