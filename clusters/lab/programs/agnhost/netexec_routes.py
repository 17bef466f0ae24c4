"""netexec's HTTP endpoints (kubernetes ``test/images/agnhost/netexec/netexec.go``), quirks included.

Every handler is ``Request -> Response``; the process-level effects (``/exit``, ``/shutdown``) go through
the :class:`State` the server owns.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import NamedTuple
from urllib.parse import urljoin

from clusters.lab.programs.agnhost import dial, shell
from clusters.lab.programs.agnhost.flags import format_duration, parse_duration
from clusters.lab.programs.agnhost.golang import go_json, hostname, now_string
from clusters.lab.programs.agnhost.httpserve import Request, Response, http_error, text

log = logging.getLogger(__name__)


class State(NamedTuple):
    """What the endpoints share with the server: readiness, SIGTERM, and how to exit."""

    ready: threading.Event
    sigterm: threading.Event
    exit_now: Callable[[int], None]  # os.Exit: no response is sent


def root(state: State, req: Request) -> Response:
    log.info("GET /")
    return text(f"NOW: {now_string()}")


def clientip(state: State, req: Request) -> Response:
    log.info("GET /clientip")
    return text(req.remote_addr)


def _canonical(key: str) -> str:
    """textproto.CanonicalMIMEHeaderKey."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in key.split("-"))


def header(state: State, req: Request) -> Response:
    key = req.form_value("key")
    if key:
        log.info("GET /header?key=%s", key)
        return text(req.header(key))
    log.info("GET /header")
    headers: dict[str, list[str]] = {}
    for name, value in req.headers:
        if name.lower() != "host":  # Go moves Host out of r.Header
            headers.setdefault(_canonical(name), []).append(value)
    return text(go_json(headers))


def echo(state: State, req: Request) -> Response:
    msg, code_text = req.form_value("msg"), req.form_value("code")
    log.info("GET /echo?msg=%s&code=%s", msg, code_text)
    if not code_text:
        return text(msg)
    try:
        code = int(code_text)
    except ValueError:
        return text(f"argument 'code' must be an integer or empty, got {_quote(code_text)}\n")
    if not 100 <= code <= 999:
        return Response(abort=True)  # Go's WriteHeader panics on an invalid code
    return text(msg, code)


def _quote(value: str) -> str:
    """Go's %q for plain strings."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exit_(state: State, req: Request) -> Response:
    wait_text, timeout_text = req.form_value("wait"), req.form_value("timeout")
    code_text = req.form_value("code")
    log.info("GET /exit?code=%s&timeout=%s&wait=%s", code_text, timeout_text, wait_text)
    try:
        timeout = parse_duration(timeout_text) if timeout_text else 0.0
    except ValueError:
        got = _quote(timeout_text)
        return text(f"argument 'timeout' must be a valid golang duration or empty, got {got}\n")
    try:
        wait = parse_duration(wait_text) if wait_text else 0.0
    except ValueError:
        return text(f"argument 'wait' must be a valid golang duration or empty, got {_quote(wait_text)}\n")
    try:
        code = int(code_text) if code_text else 0
    except ValueError:
        return text(f"argument 'code' must be an integer [0-127] or empty, got {_quote(code_text)}\n")
    log.info(
        "Will begin shutdown in %s, allowing %s for connections to close, then will exit with %d",
        format_duration(wait),
        format_duration(timeout),
        code,
    )
    time.sleep(max(wait, 0.0))
    if timeout == 0:
        state.exit_now(code)  # os.Exit: the client gets no response
    return Response(then_exit=code)


def healthz(state: State, req: Request) -> Response:
    log.info("GET /healthz")
    return Response(status=200 if state.ready.is_set() else HTTPStatus.PRECONDITION_FAILED)


def readyz(state: State, req: Request) -> Response:
    if state.sigterm.is_set():
        return http_error("SIGTERM received", HTTPStatus.SERVICE_UNAVAILABLE)
    return healthz(state, req)


def hostname_(state: State, req: Request) -> Response:
    log.info("GET /hostname")
    return text(hostname())


def shell_(state: State, req: Request) -> Response:
    command = req.form_value("shellCommand") or req.form_value("cmd")
    log.info("GET /shell?cmd=%s", command)
    output, error = shell.run(command)
    result = {}
    if output:
        result["output"] = output
    if error:
        result["error"] = error
    log.info("Output: map[%s]", " ".join(f"{k}:{v}" for k, v in result.items()))
    return text(go_json(result))


def dial_(state: State, req: Request) -> Response:
    return dial.handle(req)


def redirect(state: State, req: Request) -> Response:
    location, code_text = req.form_value("location"), req.form_value("code")
    log.info("%s /redirect?msg=%s&code=%s", req.method, location, code_text)
    code = HTTPStatus.FOUND.value
    if code_text:
        try:
            code = int(code_text)
        except ValueError:
            return text(f"argument 'code' must be an integer or empty, got {_quote(code_text)}\n")
    if "://" not in location and not location.startswith("/"):
        location = urljoin(req.path, location)  # http.Redirect makes relative paths absolute
    headers: tuple[tuple[str, str], ...] = (("Location", location),)
    body = b""
    if req.method in ("GET", "HEAD"):
        headers += (("Content-Type", "text/html; charset=utf-8"),)
        phrase = HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else ""
        body = f'<a href="{location}">{phrase}</a>.\n\n'.encode()
    return Response(status=code, body=body, headers=headers)


def shutdown(state: State, req: Request) -> Response:
    log.info("GET /shutdown")
    state.exit_now(0)
    return Response(abort=True)


def upload(state: State, req: Request) -> Response:
    from clusters.lab.programs.agnhost.upload import save  # rare: keep email parsing off the start path

    log.info("GET /upload")
    path, error = save(req, "/uploads" if os.path.isdir("/uploads") else None)
    if error:
        return Response(status=HTTPStatus.EXPECTATION_FAILED, body=go_json({"error": error}).encode())
    log.info("Wrote upload to %s", path)
    return Response(status=HTTPStatus.CREATED, body=go_json({"output": path}).encode())


Route = Callable[[State, Request], Response]
ROUTES: dict[str, Route] = {
    "/": root,
    "/clientip": clientip,
    "/header": header,
    "/dial": dial_,
    "/echo": echo,
    "/exit": exit_,
    "/healthz": healthz,
    "/readyz": readyz,
    "/hostname": hostname_,
    "/hostName": hostname_,
    "/shell": shell_,
    "/upload": upload,
    "/redirect": redirect,
    "/shutdown": shutdown,
}


def app(state: State, http_override: str) -> Callable[[Request], Response]:
    """The mux; with ``--http-override`` every request is answered as a bare GET of that path."""

    def route(req: Request) -> Response:
        return ROUTES.get(req.path, root)(state, req)

    if not http_override:
        return route
    from clusters.lab.programs.agnhost.httpserve import parse_values

    path, _, query = http_override.partition("?")
    values = parse_values(query)

    def override(req: Request) -> Response:
        return route(
            Request(
                method="GET",
                path=path or "/",
                request_uri=http_override,
                query=values,
                form=values,
                headers=(),
                remote_addr="",
            )
        )

    return override
