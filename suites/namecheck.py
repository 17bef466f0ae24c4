"""Names as probes can see them: where a name resolves, whether it resolves, who answers behind it.

Probe pods have no DNS client (agnhost's ``nslookup``-like subcommands are not in every image we
run, and the lab runs none), so a name is checked through the resolver the pod's programs use
(its resolv.conf: search path, ndots, the cluster DNS Service):

* **where it points**: ``agnhost connect <name>:9 --protocol=udp``. Nothing answers UDP :9
  (discard) on a backend, so the connect always fails, and agnhost's failure line names the
  address the name resolved to (Go's ``read udp <src>-><dst>:9: …``, REFUSED at once when the
  target is a pod or a Service port with a backend, TIMEOUT otherwise). A ``DNS:`` line means the
  name did not resolve. Services made for these checks carry a ``discard`` port 9/UDP, so the
  probe stays inside the cluster and fails fast.
* **who answers**: netexec ``/dial?host=<name>`` with ``request=hostname``; a ``no such host``
  is a DNS error (HTTP 400 from /dial).

Judges here return the cell of a truth table (see :mod:`suites.connectivity`): True when the name
did what the column promises (resolved there, answered by one of these pods, resolved at all),
False when the network or DNS said otherwise (a DNS error is a wrong answer here, not "could not
ask"), None only when the probe itself failed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from clusters.errors import UsageProblem
from suites.backends import DISCARD_PORT
from suites.connectivity import Judge, Pair
from suites.probe import PodRef, ProbeJob, ProbeKind
from suites.truthtable import Cell
from suites.verdict import ProbeResult, Verdict

RESOLVE_TIMEOUT = 2.0
"""Seconds for the UDP discard probe: long enough for the name lookup, short when nothing answers."""
UPSTREAM_NAME_ENV = "KNETCHECK_UPSTREAM_NAME"
DEFAULT_UPSTREAM_NAME = "kubernetes.io"
CLUSTER_DOMAIN_ENV = "KNETCHECK_CLUSTER_DOMAIN"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
_HOSTNAME = re.compile(
    r"^(?=.{1,253}\.?$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$"
)
_REMOTE = re.compile(r"(?:->|dial udp )(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):\d+")


def _dns_name(env: str, default: str, example: str) -> str:
    value = os.environ.get(env, "").strip().lower() or default
    if not _HOSTNAME.match(value):
        raise UsageProblem(f"{env}={value!r} is not a DNS name; give one such as {example}")
    return value


def upstream_name() -> str:
    """A name only the cluster's upstream resolvers know (``KNETCHECK_UPSTREAM_NAME``).

    Default ``kubernetes.io``: public and stable. Clusters without internet name a host their
    nodes' resolvers answer; when no node resolves it, the upstream checks skip and say so.
    """
    return _dns_name(UPSTREAM_NAME_ENV, DEFAULT_UPSTREAM_NAME, "kubernetes.io or git.corp.example")


def cluster_domain() -> str:
    """The cluster DNS domain (``KNETCHECK_CLUSTER_DOMAIN``, default ``cluster.local``)."""
    return _dns_name(CLUSTER_DOMAIN_ENV, DEFAULT_CLUSTER_DOMAIN, "cluster.local").rstrip(".")


def service_fqdn(service: str, namespace: str) -> str:
    return f"{service}.{namespace}.svc.{cluster_domain()}"


def resolve_job(source: PodRef, name: str, timeout: float = RESOLVE_TIMEOUT) -> ProbeJob:
    """The probe that reveals where ``name`` resolves (see the module docstring)."""
    return ProbeJob(source, name, DISCARD_PORT, "UDP", ProbeKind.CONNECT, timeout)


def dial_job(
    source: PodRef, host: str, port: int, protocol: str = "TCP", request: str = "hostname"
) -> ProbeJob:
    return ProbeJob(source, host, port, protocol, ProbeKind.DIAL, request=request)


def resolved_address(result: ProbeResult) -> str | None:
    """The address a resolve probe sent to, read from agnhost's failure line; None when the line
    names none (a DNS error, a probe error, or something answered on UDP :9)."""
    if result.verdict in (Verdict.DNS_ERROR, Verdict.PROBE_ERROR, Verdict.CONNECTED):
        return None
    found = _REMOTE.search(result.detail)
    return (found.group(1) or found.group(2)) if found else None


def _dns_failure(result: ProbeResult) -> Cell:
    """False for a DNS error, None for a probe error: the cell for a name that gave no address."""
    return False if result.verdict is Verdict.DNS_ERROR else None


def resolves_to(expected: Mapping[Pair, frozenset[str]]) -> Judge:
    """True when the name resolved to one of the cell's addresses; False when it resolved
    elsewhere or not at all."""

    def judge(pair: Pair, _job: ProbeJob, result: ProbeResult) -> Cell:
        address = resolved_address(result)
        if address is None:
            return _dns_failure(result)
        return address in expected[pair]

    return judge


def resolves(_pair: Pair, _job: ProbeJob, result: ProbeResult) -> Cell:
    """True when the name resolved to any address (an answer on UDP :9 proves it resolved too)."""
    if result.verdict is Verdict.CONNECTED or resolved_address(result) is not None:
        return True
    return _dns_failure(result)


def nxdomain(require_no_such_host: bool) -> Judge:
    """For names that must NOT resolve (expected False): False on a DNS error (with ``no such
    host``, the NXDOMAIN wording, when required), True when the name led somewhere."""

    def judge(_pair: Pair, _job: ProbeJob, result: ProbeResult) -> Cell:
        if result.verdict is Verdict.DNS_ERROR:
            return False if not require_no_such_host or "no such host" in result.detail else None
        if result.verdict is Verdict.PROBE_ERROR:
            return None
        return True

    return judge


def answered_by(expected: Mapping[Pair, frozenset[str]]) -> Judge:
    """True when a /dial got an answer from one of the cell's pods (netexec hostnames)."""

    def judge(pair: Pair, _job: ProbeJob, result: ProbeResult) -> Cell:
        if result.verdict is Verdict.DNS_ERROR:
            return False
        cell = result.reachable
        if cell is not True:
            return cell
        return result.output in expected[pair]

    return judge


def by_column(judges: Mapping[str, Judge], default: Judge) -> Judge:
    """One judge per destination column, for checks that mix kinds of cells."""

    def judge(pair: Pair, job: ProbeJob, result: ProbeResult) -> Cell:
        return judges.get(pair[1], default)(pair, job, result)

    return judge
