"""``agnhost netexec``: the HTTP probe server plus its UDP/SCTP command servers.

Lab difference (written down, DESIGN §4): upstream catches SIGTERM and, without ``--delay-shutdown``,
only flips ``/readyz`` to 503 and keeps running until the kubelet's SIGKILL. The lab exits at once
(after ``--delay-shutdown`` seconds when given) so pod deletion does not cost a grace period.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading

from clusters.lab.programs.agnhost.flags import Flag, FlagKind, Parsed
from clusters.lab.programs.agnhost.golang import strerror
from clusters.lab.programs.agnhost.httpserve import TLSFiles, serve
from clusters.lab.programs.agnhost.netexec_routes import State, app
from clusters.lab.programs.agnhost.udpserver import start_sctp, start_udp
from clusters.lab.programs.agnhost.waiting import SignalWait

log = logging.getLogger(__name__)

USE = ""
SHORT = "Creates HTTP(S), UDP, and (optionally) SCTP servers with various endpoints"
MAX_ARGS = 0
FLAGS = (
    Flag("http-port", FlagKind.INT, 8080, "HTTP Listen Port"),
    Flag(
        "tls-cert-file",
        FlagKind.STRING,
        "",
        "File containing an x509 certificate for HTTPS. (CA cert, if any, concatenated after server cert)",
    ),
    Flag(
        "tls-private-key-file",
        FlagKind.STRING,
        "",
        "File containing an x509 private key matching --tls-cert-file",
    ),
    Flag("udp-port", FlagKind.INT, 8081, "UDP Listen Port"),
    Flag("sctp-port", FlagKind.INT, -1, "SCTP Listen Port"),
    Flag("http-override", FlagKind.STRING, "", "The HTTP request path to override the default response"),
    Flag(
        "udp-listen-addresses",
        FlagKind.STRING,
        "",
        "A comma separated list of ip addresses the udp servers listen from",
    ),
    Flag("delay-shutdown", FlagKind.INT, 0, "Number of seconds to delay shutdown when receiving SIGTERM."),
)


def parse_addresses(addresses: str) -> list[str]:
    """Upstream's parseAddresses: each must be an IP; duplicates dropped, sorted."""
    if not addresses:
        return [""]
    found: set[str] = set()
    for address in addresses.split(","):
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                socket.inet_pton(family, address)
                break
            except OSError:
                continue
        else:
            raise ValueError(f"parseAddress: invalid address {address}")
        found.add(address)
    return sorted(found)


def _exit_now(code: int) -> None:
    """Go's os.Exit: no deferred work, no response to the caller."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(parsed: Parsed) -> int:
    ready, sigterm, done = threading.Event(), threading.Event(), threading.Event()
    exit_code = [0]
    delay = parsed.get_int("delay-shutdown")

    def on_sigterm(signum: int) -> None:
        if sigterm.is_set():
            return
        sigterm.set()
        if delay > 0:
            log.info("Sleeping %d seconds before terminating...", delay)
            timer = threading.Timer(delay, request_exit, args=(0,))
            timer.daemon = True
            timer.start()
        else:
            request_exit(0)

    waiter = SignalWait(signal.SIGTERM, on_signal=on_sigterm)

    def request_exit(code: int) -> None:
        exit_code[0] = code
        done.set()
        waiter.wake()

    state = State(ready=ready, sigterm=sigterm, exit_now=_exit_now)
    port = parsed.get_int("http-port")
    cert, key = parsed.get_str("tls-cert-file"), parsed.get_str("tls-private-key-file")
    tls = TLSFiles(cert=cert, key=key) if cert and key else None
    try:
        served = serve(port, app(state, parsed.get_str("http-override")), on_exit=request_exit, tls=tls)
    except OSError as exc:
        log.error("listen tcp :%d: bind: %s", port, strerror(exc.errno) if exc.errno else exc)
        return 1
    log.info("Started %s server on port %d", "HTTPS" if tls else "HTTP", port)
    udp_port, sctp_port = parsed.get_int("udp-port"), parsed.get_int("sctp-port")
    try:
        if udp_port != -1:
            for address in parse_addresses(parsed.get_str("udp-listen-addresses")):
                start_udp(address, udp_port, ready)
        if sctp_port != -1:
            start_sctp(sctp_port, ready)
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    waiter.wait(until=done.is_set)
    served.socket.close()
    return exit_code[0]
