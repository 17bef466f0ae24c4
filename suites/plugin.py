"""The knetcheck pytest plugin: options, the session ``cluster``, per-test namespaces, gates, sweeps.

Registered through the ``pytest11`` entry point, so it is active in every pytest run of an
environment where knetcheck is installed, including the project's own ``tests/``. Hence:

- nothing touches a cluster until a test asks for one: the ``cluster`` fixture is the only place a
  cluster is acquired, so ``pytest --help`` and ``pytest --collect-only`` never create one;
- options are validated in ``pytest_configure``. A problem with what the user gave (a flag or
  its environment variable) stops the run there with one line (exit 4). A problem with the
  defaults alone (the user asked for nothing) is held back until a test asks for a cluster,
  so a run that needs no cluster is never stopped by one.

Gates (``requires``, ``destructive``) are evaluated before the test's fixtures are set up once a
cluster is known (``pytest_runtest_setup``), and by an autouse fixture for the first gated test,
which is what acquires the cluster then; both use :func:`gate_reason`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

import pytest

from clusters import options, registry
from clusters.capabilities import Capability
from clusters.errors import KnetcheckError, UsageProblem
from clusters.handle import Cluster
from clusters.labels import env_run_id, new_run_id
from clusters.options import Settings
from suites import namespaces, sweep

log = logging.getLogger(__name__)

pytest_plugins = ["suites.reportplugin"]
"""Reports (JUnit, JSON, HTML) and the ``report``/``progress`` fixtures live in their own plugin."""

_SETTINGS = pytest.StashKey[Settings]()
_DEFERRED = pytest.StashKey[UsageProblem]()
_RUN_ID = pytest.StashKey[str]()
_CLUSTER = pytest.StashKey[Cluster]()


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_to_pytest(parser.getgroup(options.GROUP, options.GROUP_HELP))


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("help", False):
        return
    run_id = env_run_id() or new_run_id()
    config.stash[_RUN_ID] = run_id
    values = options.given_values(config.getoption)
    try:
        config.stash[_SETTINGS] = options.parse(values, run_id=run_id)
    except UsageProblem as exc:
        if _anything_given(values):
            raise pytest.UsageError(str(exc)) from None
        config.stash[_DEFERRED] = exc


def _anything_given(values: dict[str, object]) -> bool:
    given = any(v is not None and v is not False for v in values.values())
    return given or any(spec.env and os.environ.get(spec.env) for spec in options.OPTIONS)


def settings(config: pytest.Config) -> Settings:
    """The validated options; raises the held-back problem when the defaults did not validate."""
    if _SETTINGS in config.stash:
        return config.stash[_SETTINGS]
    raise config.stash.get(_DEFERRED, UsageProblem("knetcheck options were not parsed (pytest --help?)"))


def pytest_report_header(config: pytest.Config) -> list[str]:
    if _SETTINGS not in config.stash:
        return []
    found = config.stash[_SETTINGS]
    return [f"knetcheck: {found.summary()}", *(f"knetcheck: note: {n}" for n in found.notes)]


def _say(config: pytest.Config, line: str) -> None:
    """One line on the terminal (around pytest's progress output), and in the log."""
    log.info("%s", line)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


@pytest.fixture(scope="session")
def run_id(pytestconfig: pytest.Config) -> str:
    """This run's id: in every object's labels and in every namespace name."""
    return pytestconfig.stash[_RUN_ID]


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Iterator[Cluster]:
    """The cluster under test, acquired once per session and released at its end (Ctrl-C too).

    Other runs' stale namespaces are swept right after acquiring; this run's before releasing.
    A cluster that cannot be had stops the session with its one-line reason.
    """
    config = pytestconfig
    try:
        request = settings(config).request
        provider = registry.provider_for(request.kind)
        cni = request.cni.name if request.cni else "detect"
        _say(config, f"knetcheck: acquiring a {provider.name} cluster (cni={cni}, run {request.run_id})")
        handle = provider.acquire(request)
    except KnetcheckError as exc:
        usage = isinstance(exc, UsageProblem)
        code = pytest.ExitCode.USAGE_ERROR if usage else pytest.ExitCode.INTERNAL_ERROR
        pytest.exit(f"knetcheck: {exc}", returncode=code)
    caps = ", ".join(sorted(handle.capabilities)) or "none"
    _say(config, f"knetcheck: using {handle.provider} cluster {handle.name!r}, cni={handle.cni.name}, "
                 f"capabilities: {caps}")
    config.stash[_CLUSTER] = handle
    try:
        _sweep(config, "stale namespaces of earlier runs", lambda: sweep.sweep_stale(handle, request.run_id))
        yield handle
    finally:
        try:
            _sweep(config, "this run's namespaces", lambda: sweep.sweep_run(handle, request.run_id))
        finally:
            del config.stash[_CLUSTER]
            if request.keep_cluster:
                _say(config, f"knetcheck: keeping {handle.provider} cluster {handle.name!r} "
                             f"(kubeconfig {handle.kubeconfig})")
            provider.release(handle, request)


def _sweep(config: pytest.Config, what: str, action: Callable[[], list[str]]) -> None:
    """Run a sweep; a failing sweep is reported, never allowed to hide the test results."""
    try:
        deleted = action()
    except Exception as exc:  # the API may be gone; the next run's start sweep is the backstop
        _say(config, f"knetcheck: could not sweep {what}: {exc}")
        return
    if deleted:
        _say(config, f"knetcheck: swept {what}: {', '.join(deleted)}")


@pytest.fixture
def namespace(cluster: Cluster, run_id: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, labelled with the run id, deleted when the test ends."""
    name = namespaces.namespace_name(run_id, request.node.name, request.node.nodeid)
    namespaces.create(cluster, name, run_id)
    try:
        yield name
    finally:
        namespaces.delete(cluster, name)


def _capabilities(item: pytest.Item) -> list[Capability]:
    caps: list[Capability] = []
    for mark in item.iter_markers("requires"):
        if not mark.args:
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.requires needs a capability, e.g. "
                                    f"requires('network-policy')")
        for arg in mark.args:
            try:
                caps.append(Capability.parse(str(arg)))
            except ValueError as exc:
                raise pytest.UsageError(f"{item.nodeid}: {exc}") from None
    return caps


def _allow_destructive(config: pytest.Config) -> bool:
    return _SETTINGS in config.stash and config.stash[_SETTINGS].request.allow_destructive


def _gated(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(name) is not None for name in ("requires", "destructive"))


def gate_reason(item: pytest.Item, cluster: Cluster, allow_destructive: bool) -> str | None:
    """Why ``item`` must skip on ``cluster``, or None when it may run."""
    for cap in _capabilities(item):
        reason = cluster.missing(cap)
        if reason:
            return reason
    if (
        item.get_closest_marker("destructive") is not None
        and not cluster.has(Capability.NODE_ACCESS)
        and not allow_destructive
    ):
        return (f"destructive test: {cluster.provider} cluster {cluster.name!r} grants no node access; "
                "pass --allow-destructive to let knetcheck change its nodes and kube-system")
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check marker arguments at collection (a typo fails fast); needs no cluster."""
    for item in items:
        _capabilities(item)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip before any fixture is set up, once the cluster is known (saves building topologies)."""
    if _gated(item) and _CLUSTER in item.config.stash:
        reason = gate_reason(item, item.config.stash[_CLUSTER], _allow_destructive(item.config))
        if reason:
            pytest.skip(reason)


@pytest.fixture(autouse=True)
def _knetcheck_gates(request: pytest.FixtureRequest) -> None:
    """Evaluate ``requires``/``destructive`` for gated tests; this may acquire the cluster."""
    item = request.node
    if not isinstance(item, pytest.Item) or not _gated(item):
        return
    handle: Cluster = request.getfixturevalue("cluster")
    request.config.stash.setdefault(_CLUSTER, handle)
    reason = gate_reason(item, handle, _allow_destructive(request.config))
    if reason:
        pytest.skip(reason)
