"""netexec's UDP and SCTP command servers: ``hostname``, ``echo <msg>``, ``clientip``.

Commands are trimmed and lower-cased before matching, so ``echo Hello`` answers ``hello`` (upstream).
Binding one of them is what makes ``/healthz`` ready.
"""

from __future__ import annotations

import logging
import socket
import threading

from clusters.lab.programs.agnhost import sctp, sockets
from clusters.lab.programs.agnhost.golang import addr_str, hostname

log = logging.getLogger(__name__)


def reply(data: bytes, client: str, kind: str) -> bytes | None:
    """The answer to one command, or None (unknown or empty commands get no answer)."""
    command = data.decode(errors="replace").strip().lower()
    if command == "hostname":
        log.info("Sending %s hostName response", kind)
        return hostname().encode()
    if command.startswith("echo "):
        message = command.split(" ", 1)[1]
        log.info("Echoing %s to %s client %s", message, kind.upper(), client)
        return message.encode()
    if command == "clientip":
        log.info("Sending clientip back to %s client %s", kind.upper(), client)
        return client.encode()
    if command:
        log.info("Unknown %s command received from %s: %s", kind.upper(), client, command)
    return None


def start_udp(address: str, port: int, ready: threading.Event) -> socket.socket:
    """Bind now (so errors surface in main), then answer datagrams on a daemon thread."""
    sock = sockets.bind_udp(port, address)
    log.info("Started UDP server on port %s%d", f"{address} " if address else "", port)
    ready.set()

    def loop() -> None:
        while True:
            try:
                data, peer = sock.recvfrom(2048)
            except OSError:
                log.info("UDP server exited")
                ready.clear()
                return
            client = addr_str(peer)
            answer = reply(data, client, "udp")
            if answer is not None:
                sock.sendto(answer, peer)

    threading.Thread(target=loop, name=f"udp-{port}", daemon=True).start()
    return sock


def start_sctp(port: int, ready: threading.Event) -> socket.socket | None:
    """Serve SCTP if the kernel has it; otherwise log and skip (the lab never loads kernel modules)."""
    if not sctp.available():
        log.info("SCTP is not available in this kernel; not starting the SCTP server on port %d", port)
        return None
    listener = sctp.stream_socket(socket.AF_INET)
    listener.bind(("0.0.0.0", port))
    listener.listen(socket.SOMAXCONN)
    log.info("Started SCTP server on port %d", port)
    ready.set()

    def serve(conn: socket.socket, client: str) -> None:
        with conn:
            answer = reply(conn.recv(1024), client, "sctp")
            if answer is not None:
                conn.sendall(answer)

    def loop() -> None:
        while True:
            conn, peer = listener.accept()
            threading.Thread(target=serve, args=(conn, addr_str(peer)), daemon=True).start()

    threading.Thread(target=loop, name=f"sctp-{port}", daemon=True).start()
    return listener
