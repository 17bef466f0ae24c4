"""The pytest plugin, run for real with pytester: options, gates, the cluster lifecycle and sweeps.

Two kinds of fake cluster: a conftest written by pytester that overrides the ``cluster``
fixture (for gates), and a fake provider swapped into :mod:`clusters.registry` by monkeypatch
(for the plugin's own ``cluster`` fixture: acquire, release, sweeps). Namespaces live in a fake
API server over HTTP, so creates, lists and deletes go through the real client.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import kubernetes.config
import pytest
from fakekube import FakeKube, serve

from clusters import options, registry
from clusters.capabilities import Capability
from clusters.handle import Cluster, NoNodeChannel
from clusters.labels import MANAGED_BY_LABEL, RUN_ID_LABEL, run_labels
from clusters.provider import ClusterKind, ClusterRequest
from clusters.recipes import load_recipe
from suites import namespaces

pytest_plugins = ["pytester"]

# Imported here so they stay loaded: pytester forgets modules an in-process run imported first,
# and re-importing the kubernetes client in every inner run costs seconds.
PRELOADED = (kubernetes.client.CoreV1Api, kubernetes.client.V1Namespace, kubernetes.config.load_kube_config)

RUN = "rtest0001"
MARKERS = """
[pytest]
addopts = -p no:hypothesispytest -p no:cacheprovider
markers =
    conformance: c
    chaos: c
    destructive: d
    requires(capability): r
    lab: l
filterwarnings =
    error
    ignore:Module already imported so cannot be rewritten:pytest.PytestAssertRewriteWarning
"""


@pytest.fixture(autouse=True)
def _clean_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for spec in options.OPTIONS:
        if spec.env:
            monkeypatch.delenv(spec.env, raising=False)
    monkeypatch.setenv("KNETCHECK_RUN_ID", RUN)
    pytester.makeini(MARKERS)


def error_lines(result: pytest.RunResult) -> list[str]:
    return [line for line in result.errlines if line.strip()]


# ---- options


def test_bad_cluster_is_one_line_listing_choices(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--cluster=minikube")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    expected = "ERROR: unknown --cluster 'minikube'; choose one of: kind, existing, lab, auto"
    assert error_lines(result) == [expected]


def test_unknown_cni_is_one_line_listing_recipes(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--cluster=kind", "--cni=canal")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("ERROR: unknown CNI 'canal'; choose one of: calico,")


def test_bad_value_from_env_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLUSTER", "k3d")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert error_lines(result)[0].startswith("ERROR: unknown CLUSTER (for --cluster) 'k3d'")


def test_help_shows_every_option_even_with_a_bad_env(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLUSTER", "k3d")
    result = pytester.runpytest("--help")
    assert result.ret == 0
    text = result.stdout.str()
    assert "knetcheck: which cluster and CNI to check:" in text
    for spec in options.OPTIONS:
        assert re.search(rf"^\s+{re.escape(spec.flag)}\b", text, re.M), spec.flag


def test_report_header_says_which_cluster_and_cni(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--cluster=kind", "--allow-destructive")
    result.stdout.fnmatch_lines([
        f"knetcheck: cluster=kind, cni=kindnet, run-id={RUN}, state-dir=.knetcheck",
        "knetcheck: note: --allow-destructive has no effect on a kind cluster*",
    ])


def test_broken_defaults_wait_until_a_test_needs_a_cluster(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(options.DEFAULT_CNI, ClusterKind.LAB, "no-such-recipe")
    monkeypatch.setattr(registry, "resolve_auto", lambda: options.AutoChoice(ClusterKind.LAB, "r", "s"))
    pytester.makepyfile(test_plain="def test_plain(): pass")
    assert pytester.runpytest().ret == 0
    pytester.makepyfile(test_needs="def test_needs(cluster): pass")
    result = pytester.runpytest("test_needs.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*knetcheck: unknown CNI 'no-such-recipe'; choose one of:*"])


# ---- gates, with the cluster fixture overridden in a conftest

FAKE_CONFTEST = """
import pytest
from clusters.capabilities import Capability
from clusters.handle import Cluster, NoNodeChannel
from clusters.recipes import load_recipe

ACQUIRED = []

@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    ACQUIRED.append(1)
    with open("acquired", "w") as f:  # the inner run's cwd is this test's own directory
        f.write("yes")
    return Cluster(
        name={name!r}, provider={provider!r}, kubeconfig=tmp_path_factory.getbasetemp() / "kc",
        context=None, cni=load_recipe({cni!r}), capabilities=frozenset({caps}),
        node_channel=NoNodeChannel("no nodes in this fake"),
    )
"""

GATED_TESTS = """
import pytest

@pytest.mark.requires("network-policy")
def test_policy():
    pass

@pytest.mark.requires("host-port")
def test_hostport():
    pass

@pytest.mark.destructive
def test_break_nodes():
    pass
"""


def fake_conftest(pytester: pytest.Pytester, caps: str, provider: str = "kind", cni: str = "flannel",
                  name: str = "knetcheck-flannel") -> None:
    pytester.makeconftest(FAKE_CONFTEST.format(name=name, provider=provider, cni=cni, caps=caps))


def test_requires_skips_with_the_missing_capability(pytester: pytest.Pytester) -> None:
    fake_conftest(pytester, "{Capability.HOST_PORT, Capability.NODE_ACCESS}")
    pytester.makepyfile(GATED_TESTS)
    result = pytester.runpytest("--cluster=kind", "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]1] *: cni=flannel on kind cluster 'knetcheck-flannel' lacks network-policy"]
    )


def test_destructive_skips_without_node_access_unless_allowed(pytester: pytest.Pytester) -> None:
    fake_conftest(pytester, "{Capability.NETWORK_POLICY, Capability.HOST_PORT}", provider="existing",
                  cni="calico", name="prod")
    pytester.makepyfile(GATED_TESTS)
    result = pytester.runpytest("--cluster=kind", "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1] *: destructive test: existing cluster 'prod' grants no node "
                                 "access; pass --allow-destructive*"])
    allowed = pytester.runpytest("--cluster=kind", "--allow-destructive")
    allowed.assert_outcomes(passed=3)


def test_unknown_capability_in_a_marker_fails_collection_without_a_cluster(pytester: pytest.Pytester) -> None:
    fake_conftest(pytester, "set()")
    pytester.makepyfile("import pytest\n@pytest.mark.requires('telepathy')\ndef test_x(): pass\n")
    result = pytester.runpytest("--cluster=kind")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "unknown capability 'telepathy'; choose from: network-policy" in result.errlines[0]
    assert not (pytester.path / "acquired").exists()


def test_collect_only_and_ungated_tests_acquire_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[ClusterKind] = []

    def provider_for(kind: ClusterKind) -> FakeProvider:
        asked.append(kind)
        raise AssertionError("no cluster should be acquired")

    monkeypatch.setattr(registry, "provider_for", provider_for)
    pytester.makepyfile(GATED_TESTS + "\ndef test_plain():\n    pass\n")
    assert pytester.runpytest("--cluster=kind", "--collect-only").ret == 0
    assert pytester.runpytest("--cluster=kind", "-k", "plain").ret == 0
    assert asked == []


# ---- the plugin's own cluster fixture, with a fake provider


class FakeProvider:
    """Hands out a Cluster whose API is the fake server; records acquire and release."""

    name = "kind"

    def __init__(self, kube: FakeKube, kubeconfig: Path, caps: frozenset[Capability] = frozenset()):
        self.kube = kube
        self.kubeconfig = kubeconfig
        self.caps = caps
        self.events: list[str] = []

    def acquire(self, request: ClusterRequest) -> Cluster:
        self.events.append(f"acquire {request.kind.value} {request.run_id}")
        return Cluster(name="knetcheck-kindnet", provider="kind", kubeconfig=self.kubeconfig, context=None,
                       cni=load_recipe("kindnet"), capabilities=self.caps,
                       node_channel=NoNodeChannel("fake"), run_id=request.run_id)

    def release(self, cluster: Cluster, request: ClusterRequest) -> None:
        self.events.append(f"release {cluster.name} keep={request.keep_cluster}")


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with serve() as fake:
        yield fake


@pytest.fixture
def provider(kube: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeProvider:
    fake = FakeProvider(kube, kube.write_kubeconfig(tmp_path / "kubeconfig"))
    monkeypatch.setattr(registry, "provider_for", lambda kind: fake)
    return fake


def seed_leftovers(kube: FakeKube) -> None:
    kube.add_namespace("kc-rold-a", run_labels("rold"), age=dt.timedelta(hours=2))
    kube.add_namespace("kc-ryoung-a", run_labels("ryoung"), age=dt.timedelta(minutes=5))
    kube.add_namespace(f"kc-{RUN}-leftover", run_labels(RUN))
    kube.add_namespace("kc-unmanaged", {RUN_ID_LABEL: RUN}, age=dt.timedelta(days=3))
    kube.add_namespace("default", {}, age=dt.timedelta(days=30))


def test_cluster_is_acquired_once_announced_and_released(
    pytester: pytest.Pytester, provider: FakeProvider
) -> None:
    pytester.makepyfile("""
        def test_a(cluster):
            assert cluster.name == "knetcheck-kindnet"

        def test_b(cluster, run_id):
            assert cluster.run_id == run_id == "rtest0001"
    """)
    result = pytester.runpytest("--cluster=kind", "--keep-cluster")
    result.assert_outcomes(passed=2)
    assert provider.events == [f"acquire kind {RUN}", "release knetcheck-kindnet keep=True"]
    result.stdout.fnmatch_lines([
        "*knetcheck: acquiring a kind cluster (cni=kindnet, run rtest0001)",
        "*knetcheck: using kind cluster 'knetcheck-kindnet', cni=kindnet, capabilities: none",
    ])


def test_namespace_fixture_creates_a_labelled_namespace_and_deletes_it(
    pytester: pytest.Pytester, provider: FakeProvider, kube: FakeKube
) -> None:
    pytester.makepyfile("""
        def test_uses_namespace(namespace, run_id):
            assert namespace.startswith(f"kc-{run_id}-uses-namespace-")
            with open("seen", "w") as f:
                f.write(namespace)
    """)
    pytester.runpytest("--cluster=kind").assert_outcomes(passed=1)
    name = (pytester.path / "seen").read_text()
    assert ("POST", "/api/v1/namespaces") in kube.requests
    assert name in kube.deleted() and name not in kube.namespaces


def test_sweeps_touch_only_managed_namespaces_even_when_tests_fail(
    pytester: pytest.Pytester, provider: FakeProvider, kube: FakeKube
) -> None:
    seed_leftovers(kube)
    pytester.makepyfile("""
        def test_fails(namespace):
            assert False, "boom"
    """)
    result = pytester.runpytest("--cluster=kind")
    result.assert_outcomes(failed=1)
    deleted = kube.deleted()
    assert "kc-rold-a" in deleted and f"kc-{RUN}-leftover" in deleted
    assert {"kc-ryoung-a", "kc-unmanaged", "default"} <= set(kube.namespaces)
    assert deleted.index("kc-rold-a") < deleted.index(f"kc-{RUN}-leftover")
    result.stdout.fnmatch_lines(["*knetcheck: swept stale namespaces of earlier runs: kc-rold-a"])
    assert provider.events[-1].startswith("release")


def test_ctrl_c_still_sweeps_this_run_and_releases(
    pytester: pytest.Pytester, provider: FakeProvider, kube: FakeKube
) -> None:
    seed_leftovers(kube)
    pytester.makepyfile("""
        def test_interrupted(namespace):
            raise KeyboardInterrupt

        def test_never_runs(cluster):
            pass
    """)
    reprec = pytester.inline_run("--cluster=kind", no_reraise_ctrlc=True)
    assert reprec.ret == pytest.ExitCode.INTERRUPTED
    assert f"kc-{RUN}-leftover" in kube.deleted()
    ours = [n for n, ns in kube.namespaces.items() if MANAGED_BY_LABEL in ns["metadata"]["labels"]
            and ns["metadata"]["labels"].get(RUN_ID_LABEL) == RUN]
    assert ours == []
    assert provider.events == [f"acquire kind {RUN}", "release knetcheck-kindnet keep=False"]


def test_cluster_that_cannot_be_had_stops_the_session_with_one_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clusters.errors import ClusterUnavailable

    def provider_for(kind: ClusterKind) -> FakeProvider:
        raise ClusterUnavailable("the embedded lab is not available yet")

    monkeypatch.setattr(registry, "provider_for", provider_for)
    pytester.makepyfile("def test_a(cluster): pass\ndef test_b(cluster): pass\n")
    result = pytester.runpytest("--cluster=lab")
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    result.stdout.fnmatch_lines(["*knetcheck: the embedded lab is not available yet*"])
    assert result.stdout.str().count("not available yet") == 1


# ---- namespace names


def test_namespace_names_are_valid_labels_and_unique_per_test() -> None:
    long = "test_" + "very_long_parametrised_name" * 4 + "[10.0.0.1-tcp]"
    a = namespaces.namespace_name(RUN, long, "suites/x.py::" + long)
    b = namespaces.namespace_name(RUN, long, "suites/y.py::" + long)
    for name in (a, b):
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
        assert name.startswith(f"kc-{RUN}-very-long-parametrised-name")
    assert a != b
    assert namespaces.namespace_name(RUN, "test_dns[A]", "t::test_dns[A]").startswith(f"kc-{RUN}-dns-a-")
