"""What one probe saw, as data: a verdict, the evidence, and a command a person can paste.

Verdicts keep "the network said no" (REFUSED, TIMEOUT, UNREACHABLE) apart from "we could not ask"
(PROBE_ERROR): a broken probe channel must never pass for an enforced policy, the failure the
upstream framework has when every error collapses into "not connected".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.StrEnum):
    CONNECTED = "connected"
    """The target answered (TCP handshake done; UDP/SCTP reply received; HTTP response read)."""
    REFUSED = "refused"
    """Actively refused: a TCP RST or ICMP port-unreachable (no listener, or a REJECT rule)."""
    TIMEOUT = "timeout"
    """No answer within the probe timeout: typically a DROP rule, or a black-holed route."""
    UNREACHABLE = "unreachable"
    """The network reported an error other than refusal: no route to host, EPERM from a local rule."""
    DNS_ERROR = "dns-error"
    """The target name did not resolve."""
    HTTP_ERROR = "http-error"
    """Reached over HTTP, but the server answered an error status."""
    PROBE_ERROR = "probe-error"
    """We could not ask: the API server, the proxy or the probe pod failed. Never counted as blocked."""

    @property
    def reachable(self) -> bool | None:
        """True if traffic got through, False if the network stopped it, None if we do not know.

        HTTP_ERROR is reachable (the network carried the request); DNS_ERROR and PROBE_ERROR are
        unknown, because no packet to the target was judged.
        """
        if self in (Verdict.CONNECTED, Verdict.HTTP_ERROR):
            return True
        if self in (Verdict.REFUSED, Verdict.TIMEOUT, Verdict.UNREACHABLE):
            return False
        return None


@dataclass(frozen=True)
class ProbeResult:
    verdict: Verdict
    detail: str
    """The evidence: the agnhost stderr line, the /dial errors, the API server's message."""
    command: str
    """A command a person can paste to repeat this probe by hand."""
    elapsed: float
    """Seconds the probe took, end to end through the API server."""
    output: str = ""
    """What the target said, when it said something (the responder's hostname for /dial)."""

    @property
    def reachable(self) -> bool | None:
        return self.verdict.reachable

    def summary(self) -> str:
        text = f"{self.verdict.value}"
        if self.detail:
            text += f" ({self.detail})"
        return f"{text} --- run '{self.command}'"
