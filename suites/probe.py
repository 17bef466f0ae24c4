"""Probing: ask a SOURCE pod's agnhost to reach a target, and turn what it says into a verdict.

The channel. A probe is an HTTP GET through the API server's pod proxy to the source pod's
``agnhost netexec`` (control port 8080): ``/shell?cmd=/agnhost connect IP:PORT --timeout=… --protocol=…``
for a bare connection, ``/dial?…&request=hostname`` for an HTTP/UDP/SCTP request that returns the
responder's hostname. The connection is made from the source pod's own network namespace, so it is
exactly the traffic the test is about. One HTTP request per probe, the same on every cluster (the
lab's API server has no pods/exec), cheap enough to run a whole step concurrently, so a step costs
about one probe timeout.

The catch, and how it is handled. The proxy's own leg (API server -> source pod :8080) is pod
ingress too. Traffic from the node a pod runs on is always allowed (Kubernetes docs, NetworkPolicy
ipBlock notes), but the API server usually runs on another node, so an ingress policy isolating the
source pod can cut the control channel. Upstream's framework avoids the question with
``kubectl exec``. We keep the proxy channel and make its failure impossible to misread:

* a failed control channel is PROBE_ERROR (the API server's 5xx, a request timeout, a connection
  error), never REFUSED/TIMEOUT, so it can never pass for an enforced policy;
* the policy suites add a companion policy that opens TCP 8080 only on pods that are already
  ingress-isolated (``suites.netpol.model.probe_channel_policies``); NetworkPolicy rules are a
  union, so an extra rule for a port outside the matrix on an already isolated pod cannot change
  any matrix cell (the oracle tests prove it). CNIs whose ipBlock never matches node addresses
  (Cilium before policy-cidr-match-mode=nodes) still leave those cells as PROBE_ERROR, reported
  as "could not ask";
* :class:`ExecChannel` runs the same ``agnhost connect`` through ``kubectl exec`` (upstream's
  way, no pod traffic for the control leg) for clusters that serve pods/exec, when a run must not
  depend on the companion policy.
"""

from __future__ import annotations

import copy
import enum
import json
import logging
import shlex
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote, urlencode

from clusters.errors import CommandFailed
from clusters.handle import Cluster
from clusters.proc import run
from suites.verdict import ProbeResult, Verdict

log = logging.getLogger(__name__)

CONTROL_PORT = 8080
"""agnhost netexec's HTTP port in every probe pod: the probe control channel."""
MAX_WORKERS = 64
DIAL_CLIENT_TIMEOUT = 5.0
"""netexec's /dial uses a fixed 5 s client timeout per try, whatever the caller wants."""
CHANNEL_SLACK = 10.0
"""Seconds beyond the probe's own timeout we wait for the API server before calling it PROBE_ERROR."""
PROTOCOLS = ("TCP", "UDP", "SCTP")

K = TypeVar("K", bound=Hashable)


class ProbeKind(enum.StrEnum):
    CONNECT = "connect"
    """``agnhost connect``: L4 only (TCP handshake; UDP needs an agnhost UDP server's reply)."""
    DIAL = "dial"
    """netexec ``/dial``: a request (``hostname``) over http/udp/sctp; the answer names the responder."""


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str
    container: str
    """The container a person would exec into to repeat the probe (any container of the pod
    shares its network namespace)."""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ProbeJob:
    source: PodRef
    host: str
    port: int
    protocol: str = "TCP"
    kind: ProbeKind = ProbeKind.CONNECT
    timeout: float = 1.0
    """Seconds for ``agnhost connect --timeout`` (ignored by /dial, which always waits 5 s)."""
    request: str = "hostname"
    """What /dial asks for."""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"probe protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if self.timeout <= 0:
            raise ValueError("probe timeout must be > 0: agnhost connect without one can hang for minutes")

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def describe(self) -> str:
        return f"{self.source} -> {self.target}/{self.protocol} ({self.kind.value})"


# ---- commands and URLs -----------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value:g}s"


def connect_argv(job: ProbeJob) -> list[str]:
    """The ``agnhost connect`` command line; ``--timeout`` is never omitted (0 would mean none)."""
    return [
        "/agnhost",
        "connect",
        job.target,
        f"--timeout={_seconds(job.timeout)}",
        f"--protocol={job.protocol.lower()}",
    ]


def dial_query(job: ProbeJob) -> dict[str, str]:
    protocol = "http" if job.protocol == "TCP" else job.protocol.lower()
    return {
        "host": job.host,
        "port": str(job.port),
        "request": job.request,
        "protocol": protocol,
        "tries": "1",
    }


def proxy_path(job: ProbeJob, control_port: int = CONTROL_PORT) -> str:
    """The API path (with query) the proxy channel GETs for ``job``."""
    base = (
        f"/api/v1/namespaces/{quote(job.source.namespace, safe='')}/pods/"
        f"{quote(job.source.name, safe='')}:{control_port}/proxy"
    )
    if job.kind is ProbeKind.CONNECT:
        return f"{base}/shell?{urlencode({'cmd': shlex.join(connect_argv(job))}, quote_via=quote)}"
    return f"{base}/dial?{urlencode(dial_query(job), quote_via=quote)}"


def repro_command(cluster: Cluster, job: ProbeJob, control_port: int = CONTROL_PORT) -> str:
    """What a person pastes: ``kubectl get --raw`` of exactly the proxy URL the probe asked, so it
    reproduces the probe itself on every cluster (the lab has no pods/exec; on kind or an existing
    cluster ``kubectl exec … -- /agnhost connect …`` is the equivalent)."""
    return shlex.join(cluster.kubectl_argv("get", "--raw", proxy_path(job, control_port)))


# ---- parsing what agnhost and the API server said ---------------------------------------------

_UNREACHABLE_WORDS = (
    "no route to host",
    "network is unreachable",
    "host is unreachable",
    "operation not permitted",
    "permission denied",
)


def classify_connect(text: str) -> tuple[Verdict, str]:
    """Verdict from ``agnhost connect``'s stderr, by its prefix (connect/connect.go).

    TCP prints bare ``TIMEOUT``/``REFUSED``; UDP adds ``: <err>``. ``OTHER:`` is a network error
    other than refusal; ``UNKNOWN:`` is bad arguments for TCP but, for UDP, any read/write error,
    so its text decides. Anything else means the command did not run as agnhost connect.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    lower = line.lower()
    if line.startswith("TIMEOUT"):
        return Verdict.TIMEOUT, line
    if line.startswith("REFUSED"):
        return Verdict.REFUSED, line
    if line.startswith("DNS:"):
        return Verdict.DNS_ERROR, line
    if line.startswith("OTHER:"):
        return Verdict.UNREACHABLE, line
    if line.startswith("UNKNOWN:") and any(word in lower for word in _UNREACHABLE_WORDS):
        return Verdict.UNREACHABLE, line
    if "connection refused" in lower and line.startswith("UNKNOWN:"):
        return Verdict.REFUSED, line
    detail = " | ".join(lines[-3:]) if lines else "no output"
    return Verdict.PROBE_ERROR, f"agnhost connect did not run as expected: {detail}"


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(body.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def api_error_detail(status: int, body: bytes) -> str:
    """The API server's own words: a Status object's message, else the body's first line."""
    doc = _json_object(body)
    if doc is not None and doc.get("kind") == "Status":
        message = str(doc.get("message") or doc.get("reason") or "")
    else:
        message = body.decode("utf-8", errors="replace").strip().splitlines()[0] if body.strip() else ""
    return f"API server answered {status}" + (f": {message}" if message else "")


def parse_shell(status: int, body: bytes) -> tuple[Verdict, str, str]:
    """(verdict, detail, output) from netexec ``/shell`` running ``agnhost connect``.

    netexec answers 200 even when the command failed: ``{"output": <stdout+stderr>,
    "error": "exit status 1"}``, with "error" absent on success. The stderr prefix is in "output".
    """
    if status != 200:
        return Verdict.PROBE_ERROR, api_error_detail(status, body), ""
    doc = _json_object(body)
    if doc is None:
        return Verdict.PROBE_ERROR, f"/shell answered something that is not JSON: {body[:200]!r}", ""
    output = str(doc.get("output") or "")
    error = str(doc.get("error") or "")
    if not error:
        return Verdict.CONNECTED, "", output.strip()
    verdict, detail = classify_connect(output)
    if verdict is Verdict.PROBE_ERROR:
        detail = f"{detail} ({error})"
    return verdict, detail, ""


def classify_dial_error(error: str) -> Verdict:
    """A /dial error string (Go's net/http or net wording) -> verdict.

    Every /dial error comes from the attempt itself, so an unrecognised one is still the network's
    answer (UNREACHABLE), not ours; an HTTP ``EOF`` means the handshake worked but no answer came.
    """
    lower = error.lower()
    if "connection refused" in lower or "connection reset" in lower:
        return Verdict.REFUSED
    if "no such host" in lower or "lookup " in lower:
        return Verdict.DNS_ERROR
    if any(w in lower for w in ("i/o timeout", "deadline exceeded", "client.timeout", "timeout")):
        return Verdict.TIMEOUT
    if lower.startswith("get ") and lower.endswith(": eof"):
        return Verdict.HTTP_ERROR
    return Verdict.UNREACHABLE


def parse_dial(status: int, body: bytes) -> tuple[Verdict, str, str]:
    """(verdict, detail, responder) from netexec ``/dial``.

    Quirks (reference §4): 200 even when every try failed; "responses" exists only if the LAST
    try answered, so earlier successes vanish when it failed; 400 when the host does not resolve.
    A 4xx/5xx from the target is still a response (its body), i.e. CONNECTED.
    """
    if status == 400:
        text = body.decode("utf-8", errors="replace").strip()
        if "no such host" in text or "lookup " in text:
            return Verdict.DNS_ERROR, text, ""
        return Verdict.PROBE_ERROR, f"/dial rejected the request: {text}", ""
    if status != 200:
        return Verdict.PROBE_ERROR, api_error_detail(status, body), ""
    doc = _json_object(body)
    if doc is None:
        return Verdict.PROBE_ERROR, f"/dial answered something that is not JSON: {body[:200]!r}", ""
    responses = [str(r) for r in doc.get("responses") or []]
    errors = [str(e) for e in doc.get("errors") or []]
    if responses:
        return Verdict.CONNECTED, "", responses[-1].strip()
    if errors:
        return classify_dial_error(errors[-1]), errors[-1], ""
    return Verdict.PROBE_ERROR, "/dial answered neither responses nor errors", ""


# ---- channels --------------------------------------------------------------------------------


class ProbeChannel(Protocol):
    """Runs one probe from its source pod. Never raises: every failure is a PROBE_ERROR result."""

    def run(self, job: ProbeJob) -> ProbeResult: ...

    def close(self) -> None: ...


def probe_api_client(cluster: Cluster, pool_size: int) -> Any:
    """An ApiClient of the channel's own, its connection pool as large as a step's concurrency (the
    cluster's shared client is sized for CRUD). It retries connection setup only: a re-sent probe
    would double its time and hide the first answer."""
    import urllib3
    from kubernetes.client import ApiClient

    config: Any = copy.deepcopy(cluster.api_client.configuration)
    config.connection_pool_maxsize = pool_size
    config.retries = urllib3.Retry(total=2, connect=2, read=0, status=0, other=0, redirect=0)
    return ApiClient(configuration=config)


class ProxyChannel:
    """Probes through ``pods/proxy`` to netexec, with an ApiClient of its own (:func:`probe_api_client`)."""

    def __init__(self, cluster: Cluster, *, control_port: int = CONTROL_PORT, pool_size: int = MAX_WORKERS):
        self.cluster = cluster
        self.control_port = control_port
        self._api: Any = probe_api_client(cluster, pool_size)

    def run(self, job: ProbeJob) -> ProbeResult:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        path = proxy_path(job, self.control_port)
        command = repro_command(self.cluster, job, self.control_port)
        wait = (job.timeout if job.kind is ProbeKind.CONNECT else DIAL_CLIENT_TIMEOUT) + CHANNEL_SLACK
        started = time.monotonic()
        try:
            method, url, headers, _body, _post = self._api.param_serialize(
                "GET", path, header_params={"Accept": "application/json, */*"}, auth_settings=["BearerToken"]
            )
            response = self._api.call_api(method, url, header_params=headers, _request_timeout=wait)
            body = response.read() or b""
            status = int(response.status)
        except (urllib3.exceptions.HTTPError, ApiException, OSError) as exc:
            detail = f"no answer from the API server for GET {path}: {_one_line(exc)}"
            if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
                detail += (
                    f" (after {wait:g}s; an ingress policy on {job.source} may block the API "
                    f"server's leg to :{self.control_port})"
                )
            return ProbeResult(Verdict.PROBE_ERROR, detail, command, time.monotonic() - started)
        parse = parse_shell if job.kind is ProbeKind.CONNECT else parse_dial
        verdict, detail, output = parse(status, body)
        if verdict is Verdict.PROBE_ERROR:
            detail = f"{detail} [GET {path}]"
        return ProbeResult(verdict, detail, command, time.monotonic() - started, output)

    def close(self) -> None:
        self._api.close()


class ExecChannel:
    """``kubectl exec … -- /agnhost connect …``: upstream's channel, for clusters serving pods/exec.

    Its control leg is not pod traffic, so no policy can cut it; it costs a kubectl process per
    probe. Only CONNECT probes: /dial needs netexec's HTTP server, i.e. the proxy channel.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def run(self, job: ProbeJob) -> ProbeResult:
        command = repro_command(self.cluster, job)
        started = time.monotonic()
        if job.kind is not ProbeKind.CONNECT:
            return ProbeResult(Verdict.PROBE_ERROR, "the exec channel runs connect probes only", command, 0.0)
        argv = self.cluster.kubectl_argv(
            "exec",
            "-n",
            job.source.namespace,
            job.source.name,
            "-c",
            job.source.container,
            "--",
            *connect_argv(job),
        )
        try:
            result = run(argv, timeout=job.timeout + CHANNEL_SLACK, check=False)
        except CommandFailed as exc:
            return ProbeResult(Verdict.PROBE_ERROR, str(exc), command, time.monotonic() - started)
        elapsed = time.monotonic() - started
        if result.ok:
            return ProbeResult(Verdict.CONNECTED, "", command, elapsed)
        verdict, detail = classify_connect(result.stderr)
        if verdict is Verdict.PROBE_ERROR:
            detail = f"kubectl exec exited {result.returncode}: {_one_line(result.stderr) or 'no stderr'}"
        return ProbeResult(verdict, detail, command, elapsed)

    def close(self) -> None:
        pass


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


# ---- running many ----------------------------------------------------------------------------


class Prober:
    """Runs a step's probes concurrently over one channel, so a step costs about one probe timeout.

    Workers never fail (as upstream's): an unexpected exception becomes a PROBE_ERROR result.
    """

    def __init__(self, channel: ProbeChannel, *, max_workers: int = MAX_WORKERS) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self.channel = channel
        self.max_workers = max_workers

    @classmethod
    def through_proxy(
        cls, cluster: Cluster, *, control_port: int = CONTROL_PORT, max_workers: int = MAX_WORKERS
    ) -> Prober:
        return cls(
            ProxyChannel(cluster, control_port=control_port, pool_size=max_workers), max_workers=max_workers
        )

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def probe(self, job: ProbeJob) -> ProbeResult:
        started = time.monotonic()
        try:
            return self.channel.run(job)
        except Exception as exc:  # a worker must report, not die: the cell becomes "could not ask"
            log.exception("probe %s crashed", job.describe())
            return ProbeResult(
                Verdict.PROBE_ERROR,
                f"probe crashed: {_one_line(exc)}",
                job.describe(),
                time.monotonic() - started,
            )

    def probe_all(self, jobs: Mapping[K, ProbeJob]) -> dict[K, ProbeResult]:
        """Every job at once (bounded by ``max_workers``); results keyed like ``jobs``."""
        if not jobs:
            return {}
        keys = list(jobs)
        workers = min(len(keys), self.max_workers)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe") as pool:
            results = list(pool.map(lambda k: self.probe(jobs[k]), keys))
        return dict(zip(keys, results, strict=True))


@dataclass(frozen=True)
class Convergence(Generic[K]):
    results: Mapping[K, ProbeResult]
    wrong: tuple[K, ...]
    """Keys still wrong (or unknown) at the deadline; empty when everything converged."""
    rounds: int
    history: tuple[tuple[K, ...], ...] = field(default=())
    """The keys re-probed in each retry round, for the report."""

    @property
    def ok(self) -> bool:
        return not self.wrong


def converge(
    prober: Prober,
    jobs: Mapping[K, ProbeJob],
    is_right: Callable[[K, ProbeResult], bool],
    *,
    timeout: float,
    interval: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Convergence[K]:
    """Probe everything once, then re-probe only the wrong cells until they are right or the deadline.

    Policy programming takes time on every CNI, so a cell may be wrong for a moment; a global
    rerun would waste a step per retry and hide which cells were slow. A PROBE_ERROR is never
    "right" unless ``is_right`` says so, so transient API errors are retried too.
    """
    deadline = clock() + timeout
    results = dict(prober.probe_all(jobs))
    wrong = [k for k in jobs if not is_right(k, results[k])]
    rounds = 1
    history: list[tuple[K, ...]] = []
    while wrong and clock() + interval < deadline:
        sleep(interval)
        rounds += 1
        log.info(
            "retry %d: re-probing %d wrong cell(s): %s",
            rounds - 1,
            len(wrong),
            ", ".join(jobs[k].describe() for k in wrong[:5]) + (" …" if len(wrong) > 5 else ""),
        )
        history.append(tuple(wrong))
        again = prober.probe_all({k: jobs[k] for k in wrong})
        results.update(again)
        wrong = [k for k in wrong if not is_right(k, results[k])]
    if wrong:
        log.info("%d cell(s) still wrong after %d round(s)", len(wrong), rounds)
    return Convergence(results, tuple(wrong), rounds, tuple(history))


def step_summary(results: Sequence[ProbeResult]) -> str:
    """``12 connected, 3 timeout`` — for progress lines."""
    counts: dict[Verdict, int] = {}
    for r in results:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    return ", ".join(f"{n} {v.value}" for v, n in sorted(counts.items(), key=lambda kv: kv[0].value))
