"""``agnhost porter``: serve the value of ``SERVE_PORT_<p>`` over HTTP on port p (and TLS/SCTP variants).

Like upstream, it installs no signal handler: SIGTERM ends it the default way.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading

from clusters.lab.programs.agnhost import sctp
from clusters.lab.programs.agnhost.flags import Flag, Parsed
from clusters.lab.programs.agnhost.httpserve import Request, Response, TLSFiles, serve

log = logging.getLogger(__name__)

USE = ""
SHORT = "Serves requested data on ports specified in ENV variables"
MAX_ARGS = 0
FLAGS: tuple[Flag, ...] = ()
PREFIX, TLS_PREFIX, SCTP_PREFIX = "SERVE_PORT_", "SERVE_TLS_PORT_", "SERVE_SCTP_PORT_"


def _http(port: str, value: str, tls: TLSFiles | None) -> None:
    def answer(req: Request) -> Response:
        return Response(body=value.encode())

    try:
        serve(int(port), answer, on_exit=lambda code: None, tls=tls, host="0.0.0.0")
    except (OSError, ValueError) as exc:
        log.info('server on port "%s" failed: %s', port, exc)


def _sctp(port: str, value: str) -> None:
    if not sctp.available():
        log.info("SCTP is not available in this kernel; not serving SCTP port %s", port)
        return
    listener = sctp.stream_socket(socket.AF_INET)
    listener.bind(("0.0.0.0", int(port)))
    listener.listen(socket.SOMAXCONN)

    def loop() -> None:
        while True:
            conn, _ = listener.accept()
            with conn:
                log.info("Writing SCTP response")
                conn.sendall(value.encode())

    threading.Thread(target=loop, daemon=True).start()


def main(parsed: Parsed) -> int:
    env = os.environ
    tls = TLSFiles(env.get("CERT_FILE", "/localhost.crt"), env.get("KEY_FILE", "/localhost.key"))
    for key, value in os.environ.items():
        if key.startswith(PREFIX):
            _http(key.removeprefix(PREFIX), value, None)
        elif key.startswith(TLS_PREFIX):
            _http(key.removeprefix(TLS_PREFIX), value, tls)
        elif key.startswith(SCTP_PREFIX):
            _sctp(key.removeprefix(SCTP_PREFIX), value)
    while True:
        signal.pause()
