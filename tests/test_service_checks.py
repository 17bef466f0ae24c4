"""Service backends, name checks and sampled checks without a cluster: manifests the real schema
accepts, API readings, where a failure line says a name pointed, and judging repeated answers."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from clusters.errors import UsageProblem
from clusters.labels import RUN_ID_LABEL
from clusters.validate import validate_manifest
from suites import backends as bk
from suites import namecheck as names
from suites.probe import PodRef, ProbeJob
from suites.progress import LogProgress
from suites.sampling import Sampled, one_responder, responders_within, run_sampled
from suites.topology import NodeInfo
from suites.truthtable import TruthTable
from suites.verdict import ProbeResult, Verdict

NODES = [NodeInfo("kind-worker", "worker", "172.18.0.3"), NodeInfo("kind-worker2", "worker2", "172.18.0.4")]
SRC = PodRef("ns", "pod-worker-a", "netexec")


def result(verdict: Verdict, detail: str = "", output: str = "") -> ProbeResult:
    return ProbeResult(verdict, detail, "kubectl get --raw …", 0.01, output)


# ---- manifests and API readings ----------------------------------------------------------------


def test_backends_spread_round_robin_and_their_manifests_are_valid_pods() -> None:
    plan = bk.spread("backend", "web", NODES, 3)
    assert [(b.name, b.node.name) for b in plan] == [
        ("backend-0", "kind-worker"),
        ("backend-1", "kind-worker2"),
        ("backend-2", "kind-worker"),
    ]
    unready = bk.Backend(
        "backend-unready", NODES[0], "web", ready=False, hostname="h", subdomain="web-headless"
    )
    for b in [*plan, unready]:
        manifest = bk.backend_manifest("ns", "r1", b)
        validate_manifest(manifest)
        assert manifest["metadata"]["labels"][RUN_ID_LABEL] == "r1"
        assert manifest["metadata"]["labels"][bk.APP_LABEL] == "web"
    spec = bk.backend_manifest("ns", "r1", unready)["spec"]
    assert spec["containers"][0]["readinessProbe"]["httpGet"]["port"] == bk.CLOSED_PORT
    assert (spec["hostname"], spec["subdomain"]) == ("h", "web-headless")
    ports = [p["containerPort"] for c in spec["containers"] for p in c["ports"]]
    assert bk.DISCARD_PORT not in ports and len(set(ports)) == 4
    assert unready.answers_as == "h" and plan[0].answers_as == "backend-0"


@pytest.mark.parametrize(
    "spec",
    [
        {
            "ports": [
                bk.port("http", 80, 8080),
                bk.port("udp", 80, 8081, "UDP"),
                bk.port("discard", 9, 9, "UDP"),
            ]
        },
        {"type": "NodePort", "ports": [bk.port("http", 80, 8080)]},
        {"clusterIP": "None", "ports": [bk.port("http", 8080, 8080)]},
        {"sessionAffinity": "ClientIP", "ports": [bk.port("http", 80, 8080)]},
    ],
)
def test_service_manifests_are_valid_and_select_the_backends(spec: dict[str, object]) -> None:
    manifest = bk.service_manifest("ns", "r1", "web", spec, "web")
    validate_manifest(manifest)
    assert manifest["spec"]["selector"] == {bk.APP_LABEL: "web"}


def test_an_external_name_service_selects_nothing() -> None:
    manifest = bk.service_manifest("ns", "r1", "ext", {"type": "ExternalName", "externalName": "example.org"})
    validate_manifest(manifest)
    assert "selector" not in manifest["spec"]


def test_endpoint_readiness_reads_every_slice_and_a_missing_ready_means_ready() -> None:
    slices: list[dict[str, Any]] = [
        {
            "endpoints": [
                {"addresses": ["10.244.1.2"], "conditions": {"ready": True}},
                {"addresses": ["10.244.1.3"], "conditions": {"ready": False, "serving": True}},
            ]
        },
        {"endpoints": [{"addresses": ["10.244.2.2"], "conditions": {}}]},
        {"endpoints": None},
    ]
    assert bk.endpoint_readiness(slices) == {"10.244.1.2": True, "10.244.1.3": False, "10.244.2.2": True}


def test_service_info_and_load_balancer_address() -> None:
    doc = {
        "metadata": {"name": "web-np"},
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.96.0.7",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 31000}],
        },
        "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.org"}]}},
    }
    info = bk.service_info(doc)
    assert (info.cluster_ip, info.port("http").node_port) == ("10.96.0.7", 31000)
    with pytest.raises(KeyError):
        info.port("nope")
    assert bk.load_balancer_address(doc) == "lb.example.org"
    assert (
        bk.load_balancer_address({"status": {"loadBalancer": {"ingress": [{"ip": "172.18.255.2"}]}}})
        == "172.18.255.2"
    )
    assert bk.load_balancer_address({"status": {"loadBalancer": {}}}) == ""


# ---- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdict", "detail", "address"),
    [
        (
            Verdict.REFUSED,
            "REFUSED: read udp 10.244.1.3:60027->10.244.1.2:9: read: connection refused",
            "10.244.1.2",
        ),
        (Verdict.TIMEOUT, "TIMEOUT: read udp 10.244.1.3:57428->10.96.2.236:9: i/o timeout", "10.96.2.236"),
        (Verdict.UNREACHABLE, "OTHER: dial udp 10.96.0.1:9: connect: network is unreachable", "10.96.0.1"),
        (
            Verdict.REFUSED,
            "REFUSED: read udp [fd00::3]:5->[fd00:10:96::a]:9: read: connection refused",
            "fd00:10:96::a",
        ),
        (Verdict.DNS_ERROR, "DNS: lookup web on 10.96.0.10:53: no such host", None),
        (Verdict.PROBE_ERROR, "no answer from the API server", None),
    ],
)
def test_the_failure_line_names_where_the_name_pointed(
    verdict: Verdict, detail: str, address: str | None
) -> None:
    assert names.resolved_address(result(verdict, detail)) == address


def test_resolve_jobs_send_to_the_discard_port_over_udp() -> None:
    job = names.resolve_job(SRC, "web")
    assert (job.host, job.port, job.protocol, job.kind.value) == ("web", bk.DISCARD_PORT, "UDP", "connect")


def test_name_judges_count_a_dns_error_as_a_wrong_answer_and_a_probe_error_as_unknown() -> None:
    pair = ("worker/a", "web")
    job = names.resolve_job(SRC, "web")
    to_ip = names.resolves_to({pair: frozenset({"10.96.2.236"})})
    assert to_ip(
        pair, job, result(Verdict.TIMEOUT, "TIMEOUT: read udp 1.2.3.4:5->10.96.2.236:9: i/o timeout")
    )
    assert to_ip(pair, job, result(Verdict.REFUSED, "REFUSED: read udp 1.2.3.4:5->10.244.1.2:9: x")) is False
    assert (
        to_ip(pair, job, result(Verdict.DNS_ERROR, "DNS: lookup web on 10.96.0.10:53: no such host")) is False
    )
    assert to_ip(pair, job, result(Verdict.PROBE_ERROR, "API server answered 503")) is None
    assert names.resolves(pair, job, result(Verdict.CONNECTED)) is True

    nx = names.nxdomain(require_no_such_host=True)
    assert nx(pair, job, result(Verdict.DNS_ERROR, "DNS: lookup x on 10.96.0.10:53: no such host")) is False
    assert nx(pair, job, result(Verdict.DNS_ERROR, "DNS: lookup x on 10.96.0.10:53: i/o timeout")) is None
    assert nx(pair, job, result(Verdict.REFUSED, "REFUSED")) is True
    assert (
        names.nxdomain(require_no_such_host=False)(pair, job, result(Verdict.DNS_ERROR, "i/o timeout"))
        is False
    )

    by = names.answered_by({pair: frozenset({"backend-0"})})
    assert by(pair, job, result(Verdict.CONNECTED, output="backend-0")) is True
    assert by(pair, job, result(Verdict.CONNECTED, output="backend-unready")) is False
    assert by(pair, job, result(Verdict.DNS_ERROR, "no such host")) is False


def test_settings_are_dns_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(names.UPSTREAM_NAME_ENV, raising=False)
    assert names.upstream_name() == "kubernetes.io"
    monkeypatch.setenv(names.UPSTREAM_NAME_ENV, "Upstream.Lab.Test")
    assert names.upstream_name() == "upstream.lab.test"
    monkeypatch.setenv(names.UPSTREAM_NAME_ENV, "not a name")
    with pytest.raises(UsageProblem, match=names.UPSTREAM_NAME_ENV):
        names.upstream_name()
    monkeypatch.setenv(names.CLUSTER_DOMAIN_ENV, "corp.local.")
    assert names.service_fqdn("web", "ns") == "web.ns.svc.corp.local"


# ---- sampling ----------------------------------------------------------------------------------


class Responders:
    """A channel whose answers for each source pod come from a list, in turn."""

    def __init__(self, answers: dict[str, list[ProbeResult]]) -> None:
        self.answers = answers
        self.asked: Counter[str] = Counter()

    def run(self, job: ProbeJob) -> ProbeResult:
        seq = self.answers[job.source.name]
        self.asked[job.source.name] += 1
        return seq[(self.asked[job.source.name] - 1) % len(seq)]

    def close(self) -> None:
        pass


def sampled(judge_ready: frozenset[str], affinity: bool) -> Sampled:
    keys = ["worker/a", "worker2/a"]
    col = "web x4"
    jobs = {
        (k, col): names.dial_job(PodRef("ns", k.replace("/", "-"), "netexec"), "10.96.0.7", 80) for k in keys
    }
    judge = one_responder(judge_ready) if affinity else responders_within(judge_ready)
    return Sampled("affinity", TruthTable.filled(keys, [col]), jobs, 4, judge)


def test_affinity_fails_the_client_whose_requests_were_spread_and_says_who_answered() -> None:
    ok = result(Verdict.CONNECTED, output="backend-0")
    channel = Responders(
        {
            "worker-a": [ok],
            "worker2-a": [ok, result(Verdict.CONNECTED, output="backend-1")],
        }
    )
    outcome = run_sampled(
        channel, sampled(frozenset({"backend-0", "backend-1"}), True), progress=LogProgress()
    )
    assert channel.asked == Counter({"worker-a": 4, "worker2-a": 4}), (
        "each cell asked exactly count times, once"
    )
    assert [(m.src, m.observed) for m in outcome.comparison.wrong] == [("worker2/a", False)]
    message = outcome.failure_message()
    assert "backend-0 x2, backend-1 x2" in message and "reproduce: kubectl get --raw" in message


def test_readiness_sample_fails_on_an_answer_from_outside_the_ready_set_and_a_probe_error_is_unknown() -> (
    None
):
    channel = Responders(
        {
            "worker-a": [
                result(Verdict.CONNECTED, output="backend-0"),
                result(Verdict.CONNECTED, output="unready"),
            ],
            "worker2-a": [result(Verdict.PROBE_ERROR, "API server answered 503")],
        }
    )
    outcome = run_sampled(channel, sampled(frozenset({"backend-0"}), False), progress=LogProgress())
    assert [m.src for m in outcome.comparison.wrong] == ["worker/a"]
    assert [m.src for m in outcome.comparison.unknown] == ["worker2/a"]
    assert channel.asked["worker2-a"] == 1, "a failed request decides the cell: no more timeouts paid"


def test_a_sample_needs_at_least_two_requests() -> None:
    with pytest.raises(ValueError, match="count"):
        Sampled("x", TruthTable.filled(["a"], ["b"]), {}, 1, one_responder(frozenset()))
