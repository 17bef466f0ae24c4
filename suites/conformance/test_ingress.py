"""Ingress: the address the cluster publishes routes by host and path, serves TLS from a Secret,
and answers unmatched hosts and broken backends the way the controller promises.

Two one-replica netexec Deployments, ``foo`` and ``bar``, with ClusterIP Services, live in the
topology's namespace; each test creates its own Ingresses (run-id labelled, deleted after the
test) with the cluster's IngressClass named explicitly, waits for the address in
``status.loadBalancer.ingress``, and probes it with curl from one ordinary probe pod per node
(rows ``<node>/a``). Columns are the requests with what they must get; a cell is right when the
reply met it (status, which backend answered, certificate CN, Location). Wrong cells are
re-probed until the convergence deadline (controllers reload asynchronously); a failure prints
the matrices and, per wrong cell, expected vs observed and a ``kubectl get --raw`` that repeats
the probe.

An Ingress that never gets an address within ``KNETCHECK_INGRESS_TIMEOUT`` (default 120 s) FAILS
with the evidence: a cluster that declares the ``ingress`` capability must serve one. The class
is the default IngressClass unless ``KNETCHECK_INGRESS_CLASS`` names one.

Not covered: a backend Service without ready endpoints (only a missing Service), the fake
certificate for hosts without a Secret, the ``ssl-redirect: "false"`` annotation, pathType
``ImplementationSpecific``, wildcard hosts, ``spec.defaultBackend``, and controllers' behaviour
that :data:`suites.ingress.CONTROLLERS` does not list (their redirect check skips).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from clusters.handle import Cluster
from suites import curlprobe as cp
from suites import ingress as ing
from suites.conformance.conftest import INGRESS_TIMEOUT_ENV, converge_timeout, setting
from suites.connectivity import Check, Outcome, run_checks
from suites.curlprobe import Expect, Request
from suites.ingress import IngressSpec, Route, Rule
from suites.progress import Progress
from suites.reports import Recorder
from suites.topology import Placed, Topology
from suites.truthtable import TruthTable

pytestmark = [pytest.mark.conformance, pytest.mark.requires("ingress")]

FOO, BAR = "foo", "bar"
CLASS_ENV = "KNETCHECK_INGRESS_CLASS"
TIMEOUT_ENV = INGRESS_TIMEOUT_ENV
BACKENDS_TIMEOUT = 240.0
MAX_WORKERS = 16
OK = frozenset({200})

Columns = Mapping[str, tuple[Request, Expect]]
T = TypeVar("T")


def address_timeout() -> float:
    return setting(TIMEOUT_ENV)


def _or_fail(wait: Callable[[], T]) -> T:
    """``wait()``, or fail the test with the evidence it raised (once: not chained to the wait's
    own traceback)."""
    try:
        return wait()
    except ing.IngressNotReady as exc:
        evidence = str(exc)
    pytest.fail(evidence, pytrace=False)


@dataclass(frozen=True)
class World:
    topology: Topology
    klass: ing.IngressClassInfo
    answers: Mapping[str, frozenset[str]]
    """Backend name -> the pod hostnames that answer for it."""
    run_id: str

    @property
    def namespace(self) -> str:
        return self.topology.namespace

    @property
    def clients(self) -> list[Placed]:
        """The ingress is reached from every node's pods."""
        return self.topology.one_per_node

    @property
    def expectations(self) -> ing.ControllerExpectations:
        return ing.expectations_for(self.klass.controller)

    def host(self, label: str) -> str:
        """A host name of this run only: another run's or a user's Ingress cannot share it."""
        return f"{label}.{self.run_id.lower()}.example"

    def served_by(self, backend: str, status: frozenset[int] = OK) -> Expect:
        return Expect(status, responders=self.answers[backend])


@pytest.fixture(scope="module")
def world(cluster: Cluster, topology: Topology, run_id: str, progress: Progress) -> World:
    """The IngressClass to use and the foo/bar backends Ready behind their Services (the
    topology's namespace takes them away at module end)."""
    picked = ing.pick_class(ing.list_classes(cluster), os.environ.get(CLASS_ENV, "").strip())
    if isinstance(picked, str):
        pytest.fail(f"cluster declares ingress, but {picked} (set {CLASS_ENV} to choose a class)",
                    pytrace=False)
    with progress.step(f"ingress backends {FOO}, {BAR} Ready in {topology.namespace}", total=1) as step:
        answers = _or_fail(
            lambda: ing.deploy_backends(cluster, topology.namespace, run_id, [FOO, BAR], BACKENDS_TIMEOUT))
        step.advance()
    return World(topology, picked, answers, run_id)


@pytest.fixture(scope="module")
def curl_channel(cluster: Cluster) -> Iterator[cp.CurlChannel]:
    channel = cp.CurlChannel(cluster, pool_size=MAX_WORKERS)
    try:
        yield channel
    finally:
        channel.close()


@pytest.fixture
def serve(cluster: Cluster, world: World, progress: Progress) -> Iterator[Callable[[IngressSpec], str]]:
    """``serve(spec)``: create the Ingress, wait for its published address, return it; every
    Ingress made is deleted when the test ends."""
    made: list[str] = []

    def create(spec: IngressSpec) -> str:
        manifest = ing.ingress_manifest(world.namespace, world.run_id, spec, world.klass.name)
        ing.create_ingress(cluster, manifest)
        made.append(spec.name)
        timeout = address_timeout()
        with progress.step(f"address of Ingress {world.namespace}/{spec.name}", total=1) as step:
            address = _or_fail(lambda: ing.wait_address(cluster, world.namespace, spec.name, world.klass,
                                                         timeout))
            step.advance()
        why = ing.unusable_from_pods(address)
        if why:
            pytest.fail(f"Ingress {world.namespace}/{spec.name} published address {address!r}, which a pod "
                        f"cannot use: {why} (the controller publishes an address for the host only)",
                        pytrace=False)
        return address

    try:
        yield create
    finally:
        for name in made:
            ing.delete_ingress(cluster, world.namespace, name)


@pytest.fixture
def verify(
    curl_channel: cp.CurlChannel, world: World, report: Recorder, progress: Progress
) -> Callable[[str, str, Columns], Outcome]:
    """``verify(name, address, columns)``: every client requests every column once, wrong cells
    are re-probed until the deadline, the matrices go to the report; fails on a wrong cell."""

    def run(name: str, address: str, columns: Columns) -> Outcome:
        froms = [c.pod.key for c in world.clients]
        expected = TruthTable.filled(froms, list(columns), True)
        jobs = {
            (c.pod.key, col): cp.job_for(c.ref, request, address)
            for c in world.clients
            for col, (request, _) in columns.items()
        }
        expects = {col: expect for col, (_, expect) in columns.items()}
        check = Check(f"{name} (via {address})", expected, jobs, cp.meets(expects))
        (outcome,) = run_checks(curl_channel, [check], timeout=converge_timeout(), progress=progress,
                                max_workers=MAX_WORKERS)
        report.outcome(outcome)
        if not outcome.ok:
            pytest.fail(cp.failure_message(outcome, expects), pytrace=False)
        return outcome

    return run


Verify = Callable[[str, str, Columns], Outcome]


def column(request: Request, expect: Expect, gets: str) -> tuple[str, tuple[Request, Expect]]:
    """A matrix column: the URL and, briefly, what it must get (the failure spells it out)."""
    return f"{request.url} -> {gets}", (request, expect)


def prefix(path: str, service: str) -> Route:
    return Route(path, "Prefix", service)


def test_host_routing(world: World, serve: Callable[[IngressSpec], str], verify: Verify) -> None:
    foo, bar = world.host("foo"), world.host("bar")
    address = serve(IngressSpec("hosts", (Rule(foo, (prefix("/", FOO),)), Rule(bar, (prefix("/", BAR),)))))
    verify("host routing: each host reaches its own backend", address, dict([
        column(Request(foo, "/hostname"), world.served_by(FOO), FOO),
        column(Request(bar, "/hostname"), world.served_by(BAR), BAR),
    ]))


def test_path_routing(world: World, serve: Callable[[IngressSpec], str], verify: Verify) -> None:
    """Prefix matches whole path elements (``/foo``, ``/foo/x``, not ``/foobar``); Exact only
    the path itself; everything else falls to the ``/`` rule (bar), so "not foo" is observable."""
    host = world.host("paths")
    address = serve(IngressSpec("paths", (
        Rule(host, (prefix("/foo", FOO), Route("/exact", "Exact", FOO), prefix("/", BAR))),
    )))
    foo, bar = world.served_by(FOO), world.served_by(BAR)
    verify("path routing: Prefix /foo and Exact /exact -> foo, the rest -> bar", address, dict([
        column(Request(host, "/foo"), foo, FOO),
        column(Request(host, "/foo/x"), foo, FOO),
        column(Request(host, "/foobar"), bar, BAR),
        column(Request(host, "/exact"), foo, FOO),
        column(Request(host, "/exact/x"), bar, BAR),
    ]))


def test_default_backend_for_unmatched_host(
    world: World, serve: Callable[[IngressSpec], str], verify: Verify
) -> None:
    """A host no rule names gets 404 (status only: default backends' bodies differ); the served
    host beside it proves the address routes at all."""
    known = world.host("known")
    address = serve(IngressSpec("default", (Rule(known, (prefix("/", FOO),)),)))
    verify("default backend: an unmatched host gets 404", address, dict([
        column(Request(known, "/hostname"), world.served_by(FOO), FOO),
        column(Request(world.host("nomatch"), "/hostname"), Expect(frozenset({404})), "404"),
    ]))


def test_missing_backend_service(world: World, serve: Callable[[IngressSpec], str], verify: Verify) -> None:
    """A path whose Service does not exist answers the controller's 5xx (ingress-nginx: 503)."""
    host = world.host("missing")
    address = serve(IngressSpec("missing", (Rule(host, (prefix("/", "no-such-service"),)),)))
    status = world.expectations.missing_backend
    verify(f"missing backend Service: {world.klass.controller or world.klass.name} answers "
           f"{'|'.join(map(str, sorted(status)))}", address, dict([
        column(Request(host, "/hostname"), Expect(status), "|".join(map(str, sorted(status)))),
    ]))


@pytest.fixture(scope="module")
def tls_secret(cluster: Cluster, world: World) -> str:
    """A self-signed certificate for the module's TLS host, in a Secret; its name."""
    if shutil.which("openssl") is None:
        pytest.skip("the TLS checks need the openssl CLI on the machine running pytest "
                    "(apt-get install openssl)")
    host = world.host("tls")
    with tempfile.TemporaryDirectory(prefix="knetcheck-tls-") as tmp:
        cert, key = ing.self_signed(host, Path(tmp))
    name = "tls-cert"
    ing.create_secret(cluster, ing.tls_secret_manifest(world.namespace, world.run_id, name, cert, key))
    return name


def test_tls_from_secret(
    world: World, tls_secret: str, serve: Callable[[IngressSpec], str], verify: Verify
) -> None:
    """HTTPS for the host is served with the Secret's certificate (CN = host) and routed to foo."""
    host = world.host("tls")
    address = serve(IngressSpec("tls", (Rule(host, (prefix("/", FOO),)),), tls=((host, tls_secret),)))
    expect = Expect(OK, responders=world.answers[FOO], common_name=host)
    verify("TLS: the Secret's certificate for its host", address, dict([
        column(Request(host, "/hostname", "https"), expect, f"{FOO} with its certificate"),
    ]))


def test_tls_redirects_plain_http(
    world: World, tls_secret: str, serve: Callable[[IngressSpec], str], verify: Verify
) -> None:
    """Plain HTTP to a TLS host is redirected to HTTPS, path kept (ingress-nginx: 308, the
    ``ssl-redirect`` default); controllers that promise no redirect skip, saying so."""
    code = world.expectations.tls_redirect
    if code is None:
        pytest.skip(f"controller {world.klass.controller or '?'} (class {world.klass.name}) promises no "
                    "HTTP->HTTPS redirect for TLS hosts")
    host = world.host("tls")
    spec = IngressSpec("tls-redirect", (Rule(host, (prefix("/", FOO),)),), tls=((host, tls_secret),))
    address = serve(spec)
    verify(f"TLS: plain HTTP to a TLS host redirects with {code}", address, dict([
        column(Request(host, "/hostname"), Expect(frozenset({code}), location=f"https://{host}/hostname"),
               f"{code} to https"),
    ]))
