"""Probing an ingress: one curl from a client pod to the address the cluster published, read
into a :class:`Reply` (status, body, redirect target, served certificate) and judged against an
:class:`Expect`.

The probe. The client is an ordinary probe pod (agnhost netexec); through the API server's pod
proxy its ``/shell`` runs, in the pod's network namespace::

    curl -s -m 3 --connect-to HOST:PORT:ADDRESS:PORT -w '<write-out>' [-k] SCHEME://HOST/PATH

``--connect-to`` sends the request for HOST (Host header and TLS SNI) to the published ADDRESS,
for IP and hostname addresses alike (``--resolve`` takes IPs only). The write-out appends one
marker line after the body, ``@@knetcheck code=… exit=… location=… error=…``, then ``%{certs}``,
curl's dump of the server's chain whose first ``Subject:`` line is the leaf certificate's. One
run tells status, body, redirect target, curl's error and the served certificate, with nothing
but curl in the pod (``-s``: no progress or error text mixes into the output).

What the client image must have: the agnhost image (Alpine) ships curl (OpenSSL-based), bind-tools,
netcat and bash, but no openssl CLI. ``%{exitcode}``/``%{errormsg}`` need curl >= 7.75 and
``%{certs}`` curl >= 7.88 (agnhost 2.66.1 has curl 8.x). An older curl prints the variables
verbatim: the marker line does not parse and the cell is PROBE_ERROR ("could not ask"), never a
wrong answer. The subject is also read from ``curl -v``'s ``*  subject:`` line, should a
caller add ``-v``.

Jobs travel as ordinary :class:`~suites.probe.ProbeJob` values (host/port = where curl
connects, ``request`` = the URL), so :func:`suites.connectivity.run_checks` converges and
reports them like every other check; only :class:`CurlChannel` runs them.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, urlencode

from clusters.handle import Cluster
from suites.connectivity import Judge, Outcome, Pair
from suites.probe import (
    CHANNEL_SLACK,
    CONTROL_PORT,
    PodRef,
    ProbeJob,
    ProbeKind,
    api_error_detail,
    probe_api_client,
)
from suites.truthtable import Cell
from suites.verdict import ProbeResult, Verdict

CURL_TIMEOUT = 3.0
"""Seconds for one curl (``-m``): a configured ingress answers in milliseconds."""
MARKER = "@@knetcheck"
WRITE_OUT = (
    f"\\n{MARKER} code=%{{http_code}} exit=%{{exitcode}} location=%{{redirect_url}} "
    "error=%{errormsg}\\n%{certs}"
)
"""curl's ``-w``; curl itself turns ``\\n`` into newlines, so the shell command stays one line."""
BODY_LIMIT = 200

_MARKER_LINE = re.compile(
    rf"^{MARKER} code=(?P<code>\d{{3}}) exit=(?P<exit>\d+) location=(?P<location>\S*) error=(?P<error>.*)$",
    re.MULTILINE,
)
_SUBJECT = re.compile(r"^(?:\*\s+)?subject:\s*(?P<subject>.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_CN = re.compile(r"(?:^|[,/]\s*)CN\s*=\s*(?P<cn>[^,/]+)")

# ---- requests and what curl says -----------------------------------------------------------


@dataclass(frozen=True)
class Request:
    host: str
    path: str = "/"
    scheme: str = "http"

    def __post_init__(self) -> None:
        if self.scheme not in ("http", "https"):
            raise ValueError(f"scheme {self.scheme!r} is not http or https")
        if not self.path.startswith("/"):
            raise ValueError(f"path {self.path!r} must start with /")

    @property
    def port(self) -> int:
        return 443 if self.scheme == "https" else 80

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def curl_argv(request: Request, address: str, timeout: float = CURL_TIMEOUT) -> list[str]:
    """The curl the client pod runs (see the module docstring); ``-k`` for self-signed TLS."""
    argv = ["curl", "-s", "-m", f"{timeout:g}",
            "--connect-to", f"{request.host}:{request.port}:{_bracket(address)}:{request.port}",
            "-w", WRITE_OUT]
    if request.scheme == "https":
        argv.append("-k")
    return [*argv, request.url]


def job_for(source: PodRef, request: Request, address: str, timeout: float = CURL_TIMEOUT) -> ProbeJob:
    """A ProbeJob carrying an ingress request (run only by :class:`CurlChannel`): host/port are
    where curl connects, ``request`` is the URL."""
    return ProbeJob(source, address, request.port, "TCP", ProbeKind.DIAL, timeout, request=request.url)


def request_of(job: ProbeJob) -> Request:
    scheme, _, rest = job.request.partition("://")
    host, slash, path = rest.partition("/")
    return Request(host, slash + path, scheme)


def shell_path(job: ProbeJob, control_port: int = CONTROL_PORT) -> str:
    """The pod-proxy path of netexec ``/shell`` running the job's curl."""
    cmd = shlex.join(curl_argv(request_of(job), job.host, job.timeout))
    return (
        f"/api/v1/namespaces/{quote(job.source.namespace, safe='')}/pods/"
        f"{quote(job.source.name, safe='')}:{control_port}/proxy/shell?"
        f"{urlencode({'cmd': cmd}, quote_via=quote)}"
    )


@dataclass(frozen=True)
class Reply:
    """What one curl saw. ``status`` 0 = no HTTP response (curl's ``000``)."""

    status: int
    body: str = ""
    location: str = ""
    subject: str = ""
    """The served leaf certificate's subject as curl prints it (``CN = tls.example``)."""
    exit_code: int = 0
    error: str = ""

    @property
    def common_name(self) -> str:
        found = _CN.search(self.subject)
        return found.group("cn").strip() if found else ""

    def to_output(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_output(cls, text: str) -> Reply | None:
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("status"), int):
            return None
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})

    def summary(self) -> str:
        if not self.status:
            return f"no HTTP response: curl exit {self.exit_code}" + (f": {self.error}" if self.error else "")
        parts = [f"HTTP {self.status}"]
        if self.location:
            parts.append(f"Location {self.location}")
        if self.subject:
            parts.append(f"certificate subject {self.subject!r}")
        parts.append(f"body {self.body[:80]!r}")
        return ", ".join(parts)


def parse_curl(output: str) -> Reply | None:
    """The reply from curl's combined output, or None when the marker line is missing (curl did
    not run, or is too old for the write-out variables)."""
    found = _MARKER_LINE.search(output)
    if found is None:
        return None
    body = output[: found.start()]
    body = body[:-1] if body.endswith("\n") else body
    subject = _SUBJECT.search(output[found.end():])
    return Reply(
        status=int(found.group("code")),
        body=body.strip()[:BODY_LIMIT],
        location=found.group("location"),
        subject=subject.group("subject") if subject else "",
        exit_code=int(found.group("exit")),
        error=found.group("error").strip(),
    )


def classify_reply(reply: Reply) -> Verdict:
    """Verdict of a curl run: an HTTP answer is CONNECTED (HTTP_ERROR for >= 400); otherwise the
    exit code and message say how the network failed (curl's libcurl-errors numbering)."""
    if reply.status:
        return Verdict.HTTP_ERROR if reply.status >= 400 else Verdict.CONNECTED
    lower = reply.error.lower()
    if reply.exit_code == 6 or "could not resolve" in lower:
        return Verdict.DNS_ERROR
    if reply.exit_code == 28 or "timed out" in lower or "timeout" in lower:
        return Verdict.TIMEOUT
    if "refused" in lower or "reset" in lower:
        return Verdict.REFUSED
    return Verdict.UNREACHABLE


def parse_shell_curl(status: int, body: bytes) -> tuple[Verdict, str, str]:
    """(verdict, detail, output) from netexec ``/shell`` running the curl; output is the
    :class:`Reply` as JSON (what the judges read), detail its summary for people."""
    if status != 200:
        return Verdict.PROBE_ERROR, api_error_detail(status, body), ""
    try:
        doc = json.loads(body.decode("utf-8", errors="replace"))
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return Verdict.PROBE_ERROR, f"/shell answered something that is not JSON: {body[:200]!r}", ""
    output = str(doc.get("output") or "")
    reply = parse_curl(output)
    if reply is None:
        tail = " | ".join(line.strip() for line in output.strip().splitlines()[-3:]) or "no output"
        error = f" ({doc['error']})" if doc.get("error") else ""
        return Verdict.PROBE_ERROR, f"curl did not run as expected: {tail}{error}", ""
    return classify_reply(reply), reply.summary(), reply.to_output()


# ---- judging --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What a request must get. Empty fields are not checked."""

    status: frozenset[int]
    responders: frozenset[str] = frozenset()
    """The body must be one of these pod hostnames (netexec ``/hostname``)."""
    not_responders: frozenset[str] = frozenset()
    """The body must be none of these (``/foobar`` must not reach foo)."""
    common_name: str = ""
    location: str = ""

    def met_by(self, reply: Reply) -> bool:
        if reply.status not in self.status:
            return False
        if self.responders and reply.body not in self.responders:
            return False
        if reply.body in self.not_responders:
            return False
        if self.common_name and reply.common_name != self.common_name:
            return False
        return not self.location or reply.location == self.location

    def describe(self) -> str:
        parts = ["HTTP " + "|".join(str(s) for s in sorted(self.status))]
        if self.responders:
            parts.append("answered by " + " or ".join(sorted(self.responders)))
        if self.not_responders:
            parts.append("not by " + " or ".join(sorted(self.not_responders)))
        if self.common_name:
            parts.append(f"certificate CN={self.common_name}")
        if self.location:
            parts.append(f"Location {self.location}")
        return ", ".join(parts)


def meets(expected: Mapping[str, Expect]) -> Judge:
    """True when the reply meets its column's expectation; False when the network failed or the
    answer differs; None when we could not ask (probe error)."""

    def judge(pair: Pair, _job: ProbeJob, result: ProbeResult) -> Cell:
        if result.verdict is Verdict.PROBE_ERROR:
            return None
        reply = Reply.from_output(result.output)
        if reply is None:
            return False
        return expected[pair[1]].met_by(reply)

    return judge


def failure_message(outcome: Outcome, expected: Mapping[str, Expect]) -> str:
    """The matrices, then per wrong cell what was expected, what came back, and the command that
    repeats the probe (the generic message speaks of allowed/blocked, which misleads here)."""
    lines = [outcome.comparison.render(outcome.check.name)]
    bad = [*outcome.comparison.wrong, *outcome.comparison.unknown]
    if bad:
        lines.append(f"wrong cells ({len(bad)}), after {outcome.rounds} round(s) in {outcome.elapsed:.1f}s:")
    for m in bad:
        lines.append(f"  {m.src} -> {m.dst}")
        lines.append(f"    expected: {expected[m.dst].describe()}")
        result = outcome.results.get((m.src, m.dst))
        if result is not None:
            got = result.detail or "no detail"
            lines.append(f"    observed: {got} [{result.verdict.value}]")
            lines.append(f"    reproduce: {result.command}")
    return "\n".join(lines)


# ---- the channel ----------------------------------------------------------------------------


class CurlChannel:
    """Runs ingress jobs (:func:`job_for`) through the pod proxy to the client's netexec ``/shell``,
    with an ApiClient of its own sized for a step's concurrency (as ``ProxyChannel``)."""

    def __init__(self, cluster: Cluster, *, control_port: int = CONTROL_PORT, pool_size: int = 16) -> None:
        self.cluster = cluster
        self.control_port = control_port
        self._api: Any = probe_api_client(cluster, pool_size)

    def command(self, job: ProbeJob) -> str:
        return shlex.join(self.cluster.kubectl_argv("get", "--raw", shell_path(job, self.control_port)))

    def run(self, job: ProbeJob) -> ProbeResult:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        path = shell_path(job, self.control_port)
        command = self.command(job)
        started = time.monotonic()
        try:
            method, url, headers, _body, _post = self._api.param_serialize(
                "GET", path, header_params={"Accept": "application/json, */*"}, auth_settings=["BearerToken"]
            )
            response = self._api.call_api(method, url, header_params=headers,
                                          _request_timeout=job.timeout + CHANNEL_SLACK)
            body = response.read() or b""
            status = int(response.status)
        except (urllib3.exceptions.HTTPError, ApiException, OSError) as exc:
            detail = f"no answer from the API server for the client's /shell: {' '.join(str(exc).split())}"
            return ProbeResult(Verdict.PROBE_ERROR, detail, command, time.monotonic() - started)
        verdict, detail, output = parse_shell_curl(status, body)
        return ProbeResult(verdict, detail, command, time.monotonic() - started, output)

    def close(self) -> None:
        self._api.close()

