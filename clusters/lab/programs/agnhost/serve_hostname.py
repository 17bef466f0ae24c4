"""``agnhost serve-hostname``: answer every TCP connection, UDP datagram or HTTP request with the hostname.

Lab difference (written down, DESIGN §4): upstream logs ``Awaiting pod deletion.`` after SIGTERM and
then sleeps 60 s; the lab exits at once so pod deletion does not cost a grace period.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading

from clusters.lab.programs.agnhost import sockets
from clusters.lab.programs.agnhost.flags import Flag, FlagKind, Parsed
from clusters.lab.programs.agnhost.golang import addr_str, hostname
from clusters.lab.programs.agnhost.httpserve import Request, Response, serve
from clusters.lab.programs.agnhost.waiting import SignalWait

log = logging.getLogger(__name__)

USE = ""
SHORT = "Serves the hostname"
MAX_ARGS = 0
FLAGS = (
    Flag("tcp", FlagKind.BOOL, False, "Serve raw over TCP."),
    Flag("udp", FlagKind.BOOL, False, "Serve raw over UDP."),
    Flag("http", FlagKind.BOOL, True, "Serve HTTP."),
    Flag("close", FlagKind.BOOL, False, "Close connection per each HTTP request"),
    Flag("port", FlagKind.INT, 9376, "Port number."),
)


def _serve_tcp(listener: socket.socket, name: bytes) -> None:
    while True:
        conn, peer = listener.accept()
        log.info("TCP request from %s", addr_str(peer))
        with conn, contextlib.suppress(OSError):
            conn.sendall(name)


def _serve_udp(sock: socket.socket, name: bytes) -> None:
    while True:
        _, peer = sock.recvfrom(16)
        log.info("UDP request from %s", addr_str(peer))
        sock.sendto(name, peer)


def main(parsed: Parsed) -> int:
    do_tcp, do_udp, do_http = parsed.get_bool("tcp"), parsed.get_bool("udp"), parsed.get_bool("http")
    close, port = parsed.get_bool("close"), parsed.get_int("port")
    if do_http and (do_tcp or do_udp):
        log.error("Can't server TCP/UDP mode and HTTP mode at the same time")
        return 1
    signals = SignalWait(signal.SIGTERM)
    name = hostname()
    try:
        if do_tcp:
            listener = sockets.listen_tcp(port)
            threading.Thread(target=_serve_tcp, args=(listener, name.encode()), daemon=True).start()
        if do_udp:
            udp = sockets.bind_udp(port)
            threading.Thread(target=_serve_udp, args=(udp, name.encode()), daemon=True).start()
        if do_http:

            def answer(req: Request) -> Response:
                log.info("HTTP request from %s", req.remote_addr)
                return Response(body=name.encode(), close=close)

            serve(port, answer, on_exit=lambda code: None)
    except OSError as exc:
        log.error("Error from net.Listen(): listen tcp :%d: %s", port, exc.strerror or exc)
        return 1
    log.info("Serving on port %d.", port)
    signum = signals.wait()
    log.info("Shutting down after receiving signal: %s.", "terminated" if signum == signal.SIGTERM else "?")
    log.info("Awaiting pod deletion.")
    return 0
