"""``agnhost connect <host:port>``: exit 0 when a connection (UDP: a reply) succeeds, else exit 1.

stderr starts with the class of failure, exactly as upstream (``connect/connect.go``): ``UNKNOWN:``,
``DNS:``, ``TIMEOUT`` (bare for TCP, ``TIMEOUT: <err>`` for UDP), ``REFUSED`` (bare for TCP,
``REFUSED: <err>`` for UDP), ``OTHER: <err>``. ``--timeout`` 0 means no timeout, as upstream.
"""

from __future__ import annotations

import errno
import socket
import sys
import time

from clusters.lab.programs.agnhost import sctp
from clusters.lab.programs.agnhost.flags import Flag, FlagKind, Parsed
from clusters.lab.programs.agnhost.golang import addr_str, join_host_port, resolve, split_host_port, strerror

USE = "[host:port] "
SHORT = "Attempts a TCP, UDP or SCTP connection and returns useful errors"
EXACT_ARGS = 1
_NO_DATA = "No data received from the server. Cannot guarantee the server received the request."
FLAGS = (
    Flag("timeout", FlagKind.DURATION, 0.0, "Maximum time before returning an error"),
    Flag(
        "protocol",
        FlagKind.STRING,
        "tcp",
        "The protocol to use to perform the connection, can be tcp, udp or sctp",
    ),
    Flag("udp-data", FlagKind.STRING, "hostname", "The UDP payload send to the server"),
    Flag("sctp-data", FlagKind.STRING, "hostname", "The SCTP payload send to the server"),
)


def _fail(message: str) -> int:
    # the program's contract is its stderr text, so it is written directly, like Go's fmt.Fprintf(os.Stderr)
    sys.stderr.write(message + "\n")
    return 1


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def connect_tcp(dest: str, timeout: float) -> int:
    try:
        host, port = split_host_port(dest)
    except ValueError as exc:
        return _fail(f"UNKNOWN: {exc}")
    try:
        ip, number = resolve(host, port, "tcp")
    except ValueError as exc:
        return _fail(f"DNS: {exc}")
    target = join_host_port(ip, number)
    if timeout < 0:  # Go: a deadline already in the past
        return _fail("TIMEOUT")
    with socket.socket(_family(ip), socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout if timeout > 0 else None)
        try:
            sock.connect((ip or "127.0.0.1", number))
        except TimeoutError:  # our deadline, or the kernel's ETIMEDOUT: both are Go "Timeout()" errors
            return _fail("TIMEOUT")
        except ConnectionRefusedError:
            return _fail("REFUSED")
        except OSError as exc:
            return _fail(f"OTHER: dial tcp {target}: connect: {strerror(exc.errno)}")
    return 0


def _udp_failure(error: str, timed_out: bool) -> int:
    if timed_out:
        return _fail(f"TIMEOUT: {error}")
    if "connection refused" in error:
        return _fail(f"REFUSED: {error}")
    return _fail(f"UNKNOWN: {error}")


def connect_udp(dest: str, timeout: float, data: str) -> int:
    try:
        host, port = split_host_port(dest)
        ip, number = resolve(host, port, "udp")
    except ValueError as exc:  # upstream only resolves for UDP, so a bad address is a DNS: error
        return _fail(f"DNS: {exc}")
    with socket.socket(_family(ip), socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((ip or "127.0.0.1", number))
        except OSError as exc:
            return _fail(f"OTHER: dial udp {join_host_port(ip, number)}: connect: {strerror(exc.errno)}")
        local, remote = addr_str(sock.getsockname()), addr_str(sock.getpeername())
        deadline = time.monotonic() + timeout if timeout > 0 else None
        try:
            sock.send(f"{data}\n".encode())
        except OSError as exc:
            return _udp_failure(f"write udp {local}->{remote}: write: {strerror(exc.errno)}", False)
        if deadline is not None:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            received = sock.recv(1024)
        except TimeoutError:
            return _udp_failure(f"read udp {local}->{remote}: i/o timeout", True)
        except OSError as exc:
            return _udp_failure(f"read udp {local}->{remote}: read: {strerror(exc.errno)}", False)
    if not received:
        return _fail(f"OTHER: {_NO_DATA}")
    return 0


def connect_sctp(dest: str, timeout: float) -> int:
    try:
        host, port = split_host_port(dest)
        ip, number = resolve(host, port, "sctp")
    except ValueError as exc:
        return _fail(f"DNS: {exc}")
    try:
        sock = sctp.stream_socket(_family(ip))
    except OSError as exc:
        return _fail(f"OTHER: {strerror(exc.errno)}")
    with sock:
        # upstream races the dial against time.After(timeout), so 0 times out at once
        sock.settimeout(max(timeout, 0.0))
        try:
            sock.connect((ip or "127.0.0.1", number))
        except TimeoutError:
            return _fail("TIMEOUT")
        except OSError as exc:
            return _fail(f"OTHER: {strerror(exc.errno or errno.EIO)}")
    return 0


def main(parsed: Parsed) -> int:
    dest = parsed.args[0]
    protocol = parsed.get_str("protocol")
    timeout = parsed.get_duration("timeout")
    if protocol in ("", "tcp"):
        return connect_tcp(dest, timeout)
    if protocol == "udp":
        return connect_udp(dest, timeout, parsed.get_str("udp-data"))
    if protocol == "sctp":
        return connect_sctp(dest, timeout)
    sys.stderr.write(f"Unsupported protocol\n{protocol}")
    return 1
