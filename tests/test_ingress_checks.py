"""Ingress checks without a cluster: the curl a client runs, reading what it printed (outputs
captured from a real curl 7.88 / OpenSSL), verdicts, judging, the failure text, choosing the
IngressClass, manifests the real schemas accept, and the published address."""

from __future__ import annotations

import base64
import json
import shlex
from urllib.parse import parse_qs, urlsplit

import pytest

from clusters.labels import RUN_ID_LABEL
from clusters.validate import validate_manifest
from suites import curlprobe as cp
from suites import ingress as ing
from suites.connectivity import Check, Outcome
from suites.curlprobe import Expect, Reply, Request
from suites.probe import PodRef
from suites.truthtable import TruthTable
from suites.verdict import ProbeResult, Verdict

SRC = PodRef("kc-r1-ingress-ab12", "pod-worker-a", "netexec")
HOST = "tls.r1.example"

# what `curl -s -m 3 --connect-to … -w WRITE_OUT …` printed (curl 7.88.1, OpenSSL 3.0)
HTTP_200 = "foo-5d8c7b9f4-x2k9q\n@@knetcheck code=200 exit=0 location= error=\n"
HTTP_308 = "\n@@knetcheck code=308 exit=0 location=https://tls.example/hostname error=\n"
REFUSED = ("\n@@knetcheck code=000 exit=7 location= error=Failed to connect to 127.0.0.1 port 18099 after "
           "0 ms: Couldn't connect to server\n")
NO_HOST = "\n@@knetcheck code=000 exit=6 location= error=Could not resolve host: nonexistent.invalid\n"
TIMEOUT = ("\n@@knetcheck code=000 exit=28 location= error=Connection timed out after 3001 milliseconds\n")
HTTPS_200 = """foo-5d8c7b9f4-x2k9q
@@knetcheck code=200 exit=0 location= error=
Subject:CN = tls.example
Issuer:CN = tls.example
Version:2
X509v3 Subject Alternative Name:DNS:tls.example
Start date:Nov 23 14:42:27 2026 GMT
-----BEGIN CERTIFICATE-----
MIIBmDCCAT+gAwIBAgIUIB5iR06bU2NuyWHZvNW/cog/8BEwCgYIKoZIzj0EAwIw
-----END CERTIFICATE-----
"""
NGINX_404 = """<html>
<head><title>404 Not Found</title></head>
<body>
<center><h1>404 Not Found</h1></center>
<hr><center>nginx</center>
</body>
</html>

@@knetcheck code=404 exit=0 location= error=
"""


def shell(output: str, error: str = "") -> bytes:
    """netexec /shell's answer: combined output, and "error" only when the command failed."""
    doc = {"output": output, **({"error": error} if error else {})}
    return json.dumps(doc).encode()


def result_of(output: str, error: str = "") -> ProbeResult:
    verdict, detail, out = cp.parse_shell_curl(200, shell(output, error))
    return ProbeResult(verdict, detail, "kubectl get --raw …", 0.01, out)


# ---- the command ------------------------------------------------------------------------------


def test_curl_sends_the_host_to_the_published_address_and_only_https_skips_verification() -> None:
    argv = cp.curl_argv(Request("foo.r1.example", "/hostname"), "172.18.255.1")
    assert argv[:4] == ["curl", "-s", "-m", "3"]
    assert argv[argv.index("--connect-to") + 1] == "foo.r1.example:80:172.18.255.1:80"
    assert "-k" not in argv and argv[-1] == "http://foo.r1.example/hostname"
    tls = cp.curl_argv(Request(HOST, "/", "https"), "fd00::1", timeout=2)
    assert tls[3] == "2" and "-k" in tls
    assert tls[tls.index("--connect-to") + 1] == f"{HOST}:443:[fd00::1]:443"
    assert tls[-1] == f"https://{HOST}/"


def test_the_shell_path_carries_the_curl_as_one_shell_command_that_splits_back() -> None:
    job = cp.job_for(SRC, Request(HOST, "/a b", "https"), "lb.example.net")
    assert (job.host, job.port, job.request) == ("lb.example.net", 443, f"https://{HOST}/a b")
    assert cp.request_of(job) == Request(HOST, "/a b", "https")
    url = urlsplit(cp.shell_path(job))
    assert url.path == "/api/v1/namespaces/kc-r1-ingress-ab12/pods/pod-worker-a:8080/proxy/shell"
    (cmd,) = parse_qs(url.query)["cmd"]
    assert "\n" not in cmd, "one line: curl itself expands \\n in -w"
    assert shlex.split(cmd) == cp.curl_argv(Request(HOST, "/a b", "https"), "lb.example.net")


def test_requests_reject_what_would_build_a_wrong_url() -> None:
    with pytest.raises(ValueError, match="scheme"):
        Request(HOST, "/", "ftp")
    with pytest.raises(ValueError, match="start with /"):
        Request(HOST, "hostname")


# ---- reading curl ------------------------------------------------------------------------------


def test_a_plain_answer_gives_status_and_body() -> None:
    assert cp.parse_curl(HTTP_200) == Reply(200, "foo-5d8c7b9f4-x2k9q")


def test_an_https_answer_gives_the_leaf_certificate_subject_and_its_cn() -> None:
    reply = cp.parse_curl(HTTPS_200)
    assert reply is not None
    assert (reply.status, reply.body, reply.subject, reply.common_name) == (
        200, "foo-5d8c7b9f4-x2k9q", "CN = tls.example", "tls.example")


def test_a_redirect_gives_its_location() -> None:
    assert cp.parse_curl(HTTP_308) == Reply(308, "", "https://tls.example/hostname")


def test_a_multiline_body_is_kept_whole_up_to_the_marker() -> None:
    reply = cp.parse_curl(NGINX_404)
    assert reply is not None and reply.status == 404
    assert reply.body.startswith("<html>") and reply.body.endswith("</html>")


@pytest.mark.parametrize(("subject", "cn"), [
    ("CN = tls.example", "tls.example"),
    ("CN=tls.example", "tls.example"),
    ("O = Acme Co, CN = Kubernetes Ingress Controller Fake Certificate", ing.FAKE_CERT_CN),
    ("/O=Acme Co/CN=foo.example", "foo.example"),
    ("O = no common name", ""),
])
def test_the_common_name_is_read_from_every_subject_spelling(subject: str, cn: str) -> None:
    assert Reply(200, subject=subject).common_name == cn


def test_a_verbose_subject_line_is_read_too() -> None:
    output = HTTP_200 + "* Server certificate:\n*  subject: CN=tls.example\n*  start date: Nov 23\n"
    reply = cp.parse_curl(output)
    assert reply is not None and reply.common_name == "tls.example"


@pytest.mark.parametrize(("output", "verdict"), [
    (HTTP_200, Verdict.CONNECTED),
    (HTTP_308, Verdict.CONNECTED),
    (NGINX_404, Verdict.HTTP_ERROR),
    (REFUSED, Verdict.UNREACHABLE),
    (REFUSED.replace("Couldn't connect to server", "Connection refused"), Verdict.REFUSED),
    (NO_HOST, Verdict.DNS_ERROR),
    (TIMEOUT, Verdict.TIMEOUT),
])
def test_verdicts_follow_the_status_or_curls_exit_code(output: str, verdict: Verdict) -> None:
    failed = "exit status 7" if "code=000" in output else ""
    assert result_of(output, failed).verdict is verdict


def test_a_failed_connection_says_curls_own_words() -> None:
    result = result_of(NO_HOST, "exit status 6")
    assert result.detail == "no HTTP response: curl exit 6: Could not resolve host: nonexistent.invalid"
    assert Reply.from_output(result.output) == Reply(0, exit_code=6,
                                                     error="Could not resolve host: nonexistent.invalid")


@pytest.mark.parametrize(("status", "body", "why"), [
    (503, json.dumps({"kind": "Status", "message": "pod not ready"}).encode(), "API server answered 503"),
    (200, b"<html>not json", "not JSON"),
    (200, shell("/bin/sh: 1: curl: not found\n", "exit status 127"), "curl did not run as expected: "
     "/bin/sh: 1: curl: not found (exit status 127)"),
    # a curl older than 7.75 prints unknown write-out variables verbatim
    (200, shell("foo\n@@knetcheck code=200 exit=%{exitcode} location= error=%{errormsg}\n"), "did not run"),
])
def test_anything_but_a_curl_answer_is_a_probe_error_never_a_wrong_answer(
    status: int, body: bytes, why: str
) -> None:
    verdict, detail, output = cp.parse_shell_curl(status, body)
    assert verdict is Verdict.PROBE_ERROR and why in detail and output == ""


def test_replies_survive_the_report_round_trip() -> None:
    reply = cp.parse_curl(HTTPS_200)
    assert reply is not None
    assert Reply.from_output(reply.to_output()) == reply
    assert Reply.from_output("") is None and Reply.from_output('{"status": "x"}') is None


# ---- judging and the failure text ------------------------------------------------------------------


FOO_PODS = frozenset({"foo-5d8c7b9f4-x2k9q"})


def test_expectations_check_status_responder_certificate_and_location() -> None:
    https = cp.parse_curl(HTTPS_200)
    assert https is not None
    assert Expect(frozenset({200}), responders=FOO_PODS, common_name="tls.example").met_by(https)
    assert not Expect(frozenset({200}), responders=FOO_PODS, common_name="other.example").met_by(https)
    assert not Expect(frozenset({200}), responders=frozenset({"bar-1"})).met_by(https)
    assert not Expect(frozenset({200}), not_responders=FOO_PODS).met_by(https)
    assert not Expect(frozenset({503})).met_by(https)
    redirect = Reply(308, location="https://tls.example/hostname")
    assert Expect(frozenset({308}), location="https://tls.example/hostname").met_by(redirect)
    assert not Expect(frozenset({308}), location="https://tls.example/").met_by(redirect)


def test_the_judge_says_unknown_only_when_it_could_not_ask() -> None:
    judge = cp.meets({"col": Expect(frozenset({200}), responders=FOO_PODS)})
    job = cp.job_for(SRC, Request("foo.r1.example"), "172.18.255.1")
    assert judge(("worker/a", "col"), job, result_of(HTTP_200)) is True
    assert judge(("worker/a", "col"), job, result_of(NGINX_404)) is False
    assert judge(("worker/a", "col"), job, result_of(REFUSED, "exit status 7")) is False
    probe_error = ProbeResult(Verdict.PROBE_ERROR, "API server answered 503", "cmd", 0.1)
    assert judge(("worker/a", "col"), job, probe_error) is None


def test_the_failure_names_the_cell_the_expectation_the_answer_and_the_command() -> None:
    col = "http://foo.r1.example/hostname -> HTTP 200, answered by foo-5d8c7b9f4-x2k9q"
    expect = Expect(frozenset({200}), responders=FOO_PODS)
    job = cp.job_for(SRC, Request("foo.r1.example", "/hostname"), "172.18.255.1")
    check = Check("host routing", TruthTable.filled(["worker/a"], [col]), {("worker/a", col): job},
                  cp.meets({col: expect}))
    result = result_of(NGINX_404)
    observed = TruthTable.filled(["worker/a"], [col], False)
    outcome = Outcome(check, check.expected.compare(observed), {("worker/a", col): result}, 3, 4.2)
    text = cp.failure_message(outcome, {col: expect})
    assert "host routing: 0/1 right, 1 wrong" in text
    assert f"  worker/a -> {col}\n    expected: HTTP 200, answered by foo-5d8c7b9f4-x2k9q\n" in text
    assert "    observed: HTTP 404, body '<html>" in text and "[http-error]" in text
    assert "    reproduce: kubectl get --raw …" in text
    assert "allowed" not in text.split("wrong cells", 1)[1]


def test_expectations_describe_themselves_for_column_names() -> None:
    assert Expect(frozenset({503, 500})).describe() == "HTTP 500|503"
    assert Expect(frozenset({308}), location="https://h/").describe() == "HTTP 308, Location https://h/"
    assert Expect(frozenset({200}), not_responders=FOO_PODS, common_name="h").describe() == (
        "HTTP 200, not by foo-5d8c7b9f4-x2k9q, certificate CN=h")


# ---- the controller and its class ---------------------------------------------------------------


def klass(name: str, controller: str, default: bool = False) -> dict[str, object]:
    annotations = {ing.DEFAULT_CLASS_ANNOTATION: "true"} if default else {}
    return {"metadata": {"name": name, "annotations": annotations}, "spec": {"controller": controller}}


NGINX = klass("nginx", "k8s.io/ingress-nginx", default=True)
CPK = klass("cloud-provider-kind", "kind.sigs.k8s.io/ingress-controller")


def test_the_default_class_is_chosen_unless_one_is_named() -> None:
    assert ing.pick_class([CPK, NGINX]) == ing.IngressClassInfo("nginx", "k8s.io/ingress-nginx", True)
    assert ing.pick_class([CPK, NGINX], "cloud-provider-kind") == ing.IngressClassInfo(
        "cloud-provider-kind", "kind.sigs.k8s.io/ingress-controller")
    assert ing.pick_class([CPK]) == ing.IngressClassInfo(
        "cloud-provider-kind", "kind.sigs.k8s.io/ingress-controller")


@pytest.mark.parametrize(("classes", "wanted", "why"), [
    ([], "", "no IngressClass"),
    ([NGINX], "traefik", "IngressClass 'traefik' does not exist (classes: nginx)"),
    ([CPK, klass("nginx", "k8s.io/ingress-nginx")], "", "no IngressClass is marked default"),
    ([NGINX, klass("other", "x", default=True)], "", "2 IngressClasses are marked default"),
])
def test_no_usable_class_is_said_in_one_line(classes: list[dict[str, object]], wanted: str, why: str) -> None:
    picked = ing.pick_class(classes, wanted)
    assert isinstance(picked, str) and why in picked and "\n" not in picked


def test_controller_expectations_are_data_with_a_safe_default() -> None:
    assert ing.expectations_for("k8s.io/ingress-nginx") == ing.ControllerExpectations(frozenset({503}), 308)
    assert ing.expectations_for("kind.sigs.k8s.io/ingress-controller").tls_redirect is None
    unknown = ing.expectations_for("example.com/some-controller")
    assert unknown.tls_redirect is None and unknown.missing_backend <= frozenset(range(500, 600))


# ---- manifests and the address -----------------------------------------------------------------------


def test_manifests_are_valid_and_labelled_with_the_run() -> None:
    spec = ing.IngressSpec(
        "tls",
        (ing.Rule(HOST, (ing.Route("/foo", "Prefix", "foo"), ing.Route("/exact", "Exact", "bar"))),),
        tls=((HOST, "tls-cert"),),
        annotations={"nginx.ingress.kubernetes.io/ssl-redirect": "false"},
    )
    ingress = ing.ingress_manifest("ns", "r1", spec, "nginx")
    deployment = ing.backend_deployment("ns", "r1", "foo", "knetcheck.io/backend")
    secret = ing.tls_secret_manifest("ns", "r1", "tls-cert", "-----BEGIN CERTIFICATE-----", "key")
    for manifest in (ingress, deployment, secret):
        validate_manifest(manifest)
        assert manifest["metadata"]["labels"][RUN_ID_LABEL] == "r1"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert base64.b64decode(secret["data"]["tls.crt"]) == b"-----BEGIN CERTIFICATE-----"
    assert ingress["spec"]["tls"] == [{"hosts": [HOST], "secretName": "tls-cert"}]
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    assert [(p["path"], p["pathType"], p["backend"]["service"]["name"]) for p in paths] == [
        ("/foo", "Prefix", "foo"), ("/exact", "Exact", "bar")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--http-override=/hostname" in container["args"], "every path must answer the pod's hostname"
    assert deployment["spec"]["template"]["metadata"]["labels"]["knetcheck.io/backend"] == "foo"


def test_the_published_address_is_ip_or_hostname_and_loopback_is_unusable() -> None:
    def ingress(*entries: dict[str, str]) -> dict[str, object]:
        return {"status": {"loadBalancer": {"ingress": list(entries)}}}

    assert ing.published_address({}) == "" and ing.published_address(ingress()) == ""
    assert ing.published_address(ingress({"ip": "172.18.255.1"})) == "172.18.255.1"
    assert ing.published_address(ingress({"hostname": "lb.example.net"})) == "lb.example.net"
    assert ing.unusable_from_pods("172.18.255.1") is None
    assert ing.unusable_from_pods("lb.example.net") is None
    assert ing.unusable_from_pods("localhost") is not None
    assert ing.unusable_from_pods("127.0.0.1") is not None and ing.unusable_from_pods("::1") is not None


def test_an_ingress_without_address_is_reported_with_its_evidence() -> None:
    text = ing.no_address_message(
        "ns", "hosts", ing.IngressClassInfo("nginx", "k8s.io/ingress-nginx", True), {"loadBalancer": {}},
        ["Normal Sync: Scheduled for sync"], 120.0, ["kubectl", "--kubeconfig=/k"])
    assert text.splitlines()[0].startswith(
        "Ingress ns/hosts (class nginx, controller k8s.io/ingress-nginx) has no status.loadBalancer.ingress "
        "after 120s")
    assert '  status: {"loadBalancer": {}}' in text
    assert "  events: Normal Sync: Scheduled for sync" in text
    assert "kubectl --kubeconfig=/k -n ns describe ingress hosts" in text
