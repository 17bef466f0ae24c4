"""netexec's ``/dial``: ask another server for ``request`` over http, udp or sctp, ``tries`` times.

Quirks kept on purpose (probes on real clusters must cope with them): the status is 200 even when
every try failed; ``responses`` appears only if the LAST try returned a non-empty answer; a 4xx/5xx
answer is a response; 400 for a bad ``tries``, a missing ``request``, an unknown protocol or an
unresolvable host/port (resolved once, before the tries).
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

from clusters.lab.programs.agnhost import sctp
from clusters.lab.programs.agnhost.golang import addr_str, go_json, join_host_port, resolve, strerror
from clusters.lab.programs.agnhost.httpserve import Request, Response, http_error, text

log = logging.getLogger(__name__)

CLIENT_TIMEOUT_S = 5.0
_ATOI = re.compile(r"[+-]?[0-9]+")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_AWAITING = "Client.Timeout exceeded while awaiting headers"
Outcome = tuple[str, str | None]  # (response, error)
Dialer = Callable[[str, str, int], Outcome]


def handle(req: Request) -> Response:
    host, port = req.query_value("host"), req.query_value("port")
    request, protocol = req.query_value("request"), req.query_value("protocol")
    tries_text = req.query_value("tries")
    log.info(
        "GET /dial?host=%s&protocol=%s&port=%s&request=%s&tries=%s", host, protocol, port, request, tries_text
    )
    tries = 1
    if tries_text:
        if not _ATOI.fullmatch(tries_text):
            why = f'strconv.Atoi: parsing "{tries_text}": invalid syntax'
            return http_error(f"tries parameter is invalid. {why}", 400)
        tries = int(tries_text)
    if not request:
        return http_error("request parameter not specified. <nil>", 400)
    dialers: dict[str, tuple[str, Dialer]] = {
        "": ("tcp", dial_http),
        "http": ("tcp", dial_http),
        "udp": ("udp", dial_udp),
        "sctp": ("sctp", dial_sctp),
    }
    choice = dialers.get(protocol.lower())
    if choice is None:
        return http_error(f"unsupported protocol. {protocol}", 400)
    network, dialer = choice
    try:
        ip, number = resolve(host, port, network)
    except ValueError as exc:
        return http_error(f"host and/or port param are invalid. {exc}", 400)
    responses: list[str] = []
    errors: list[str] = []
    response = ""
    for _ in range(tries):
        response, error = dialer(request, ip, number)
        if error is None:
            responses.append(response)
        else:
            errors.append(error)
    output: dict[str, list[str]] = {}
    if response:  # upstream checks the last try's response, not the list
        output["responses"] = responses
    if errors:
        output["errors"] = errors
    return text(go_json(output))


def dial_http(request: str, ip: str, port: int) -> Outcome:
    """``GET http://ip:port/<request>`` like Go's client: 5 s in all, redirects followed, gzip asked for."""
    import http.client  # only probes that dial pay for it

    url = f"http://{join_host_port(ip, port)}/{request}"
    deadline = time.monotonic() + CLIENT_TIMEOUT_S
    for _ in range(11):
        parts = urlsplit(url)
        if not parts.hostname:
            return "", f'Get "{url}": http: no Host in request URL'
        hostport = parts.netloc
        try:
            conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=_left(deadline))
            conn.connect()
        except TimeoutError:
            return "", f'Get "{url}": context deadline exceeded ({_AWAITING})'
        except OSError as exc:
            return "", f'Get "{url}": dial tcp {hostport}: connect: {strerror(exc.errno)}'
        try:
            phase = "headers"
            conn.putrequest(
                "GET",
                (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                skip_accept_encoding=True,
            )
            conn.putheader("User-Agent", "Go-http-client/1.1")
            conn.putheader("Accept-Encoding", "gzip")
            conn.endheaders()
            resp = conn.getresponse()
            phase = "body"
            if conn.sock is not None:
                conn.sock.settimeout(_left(deadline))
            body = resp.read()
        except TimeoutError:
            why = (
                _AWAITING
                if phase == "headers"
                else "Client.Timeout or context cancellation while reading body"
            )
            return "", f'Get "{url}": context deadline exceeded ({why})'
        except http.client.RemoteDisconnected:
            return "", f'Get "{url}": EOF'
        except (OSError, http.client.HTTPException) as exc:
            local = addr_str(conn.sock.getsockname()) if conn.sock is not None else ""
            detail = strerror(exc.errno) if isinstance(exc, OSError) else str(exc)
            return "", f'Get "{url}": read tcp {local}->{hostport}: read: {detail}'
        finally:
            conn.close()
        location = resp.getheader("Location")
        if resp.status in _REDIRECTS and location:
            url = urljoin(url, location)
            continue
        if (resp.getheader("Content-Encoding") or "").lower() == "gzip":
            import gzip

            body = gzip.decompress(body)
        return body.decode(errors="replace"), None
    return "", f'Get "{url}": stopped after 10 redirects'


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.001)


def _exchange(sock: socket.socket, ip: str, port: int, request: str, bufsize: int, net: str) -> Outcome:
    """Connect, write ``request``, read one answer within 5 s; errors worded like Go's net package."""
    try:
        sock.connect((ip or "127.0.0.1", port))
    except OSError as exc:
        target = join_host_port(ip, port)
        return "", f"{net} dial failed. err:dial {net} {target}: connect: {strerror(exc.errno)}"
    local, remote = addr_str(sock.getsockname()), addr_str(sock.getpeername())
    try:
        sock.send(request.encode())
    except OSError as exc:
        why = strerror(exc.errno)
        return "", f"{net} connection write failed. err:write {net} {local}->{remote}: write: {why}"
    sock.settimeout(CLIENT_TIMEOUT_S)
    try:
        data = sock.recv(bufsize)
    except TimeoutError:
        error = f"read {net} {local}->{remote}: i/o timeout"
    except OSError as exc:
        error = f"read {net} {local}->{remote}: read: {strerror(exc.errno)}"
    else:
        if data:
            return data.decode(errors="replace"), None
        error = "EOF" if net == "sctp" else "<nil>"
    return "", f"reading from {net} connection failed. err:'{error}'"


def dial_udp(request: str, ip: str, port: int) -> Outcome:
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return _exchange(sock, ip, port, request, 2048, "udp")


def dial_sctp(request: str, ip: str, port: int) -> Outcome:
    try:
        sock = sctp.stream_socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
    except OSError as exc:
        return "", f"sctp dial failed. err:{strerror(exc.errno)}"
    with sock:
        return _exchange(sock, ip, port, request, 1024, "sctp")
