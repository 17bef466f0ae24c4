"""A small Go-``net/http``-like HTTP/1.1 server: handlers are pure ``Request -> Response`` functions.

Hand-rolled on ``socketserver`` (a thread per connection, like Go's goroutines) rather than
``http.server``, which drags in http.client, email and ssl: ~25 ms more on every pod start, and the lab
starts dozens of these. It answers like Go: ``HTTP/1.1`` status line, no ``Server`` header, sniffed
``Content-Type``, ``http.Error`` bodies, 100-continue, and a handler crash closes the connection
without a response (Go recovers the panic the same way).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

from clusters.lab.programs.agnhost.golang import addr_str

log = logging.getLogger(__name__)

Values = Mapping[str, tuple[str, ...]]
MAX_LINE = 1 << 20  # Go's DefaultMaxHeaderBytes
_HTML_TAGS = b"!doctype html|html|head|script|iframe|h1|div|font|table|a|style|title|b|body|br|p|!--"
_HTML_PREFIXES = tuple(b"<" + tag for tag in _HTML_TAGS.split(b"|"))


class Request(NamedTuple):
    method: str
    path: str
    request_uri: str
    query: Values
    form: Values  # Go's r.Form: urlencoded body values first, then the query's
    headers: tuple[tuple[str, str], ...]
    remote_addr: str
    body: bytes = b""

    def form_value(self, key: str) -> str:
        return (self.form.get(key) or ("",))[0]

    def query_value(self, key: str) -> str:
        return (self.query.get(key) or ("",))[0]

    def header(self, key: str) -> str:
        wanted = key.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), "")


class Response(NamedTuple):
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False
    abort: bool = False  # a Go handler panic: drop the connection, send nothing
    then_exit: int | None = None  # exit the process with this code once the response is sent


Handler = Callable[[Request], Response]
_BAD_REQUEST = Response(400, b"400 Bad Request", (("Content-Type", "text/plain; charset=utf-8"),), close=True)


def text(body: str, status: int = 200) -> Response:
    return Response(status=status, body=body.encode())


def http_error(message: str, status: int) -> Response:
    """Go's http.Error."""
    return Response(
        status=status,
        body=(message + "\n").encode(),
        headers=(("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")),
    )


def sniff(body: bytes) -> str:
    """The gist of Go's http.DetectContentType for what agnhost writes."""
    head = body.lstrip(b"\t\n\x0c\r ")[:16].lower()
    if any(head.startswith(p) and head[len(p) : len(p) + 1] in (b" ", b">") for p in _HTML_PREFIXES):
        return "text/html; charset=utf-8"
    if any(b < 0x20 and b not in (9, 10, 12, 13, 27) for b in body[:512]):
        return "application/octet-stream"
    return "text/plain; charset=utf-8"


def parse_values(raw: str) -> dict[str, tuple[str, ...]]:
    return {k: tuple(v) for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = f"status code {status}"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


class _BadRequest(Exception):
    pass


class _Connection(socketserver.StreamRequestHandler):
    app: Handler
    on_exit: Callable[[int], None]

    def setup(self) -> None:
        handshake = getattr(self.request, "do_handshake", None)
        if handshake is not None:  # TLS: handshake here, in the connection's thread, not in accept()
            handshake()
        super().setup()

    def handle(self) -> None:
        try:
            while self._one():
                pass
        except _BadRequest:
            with contextlib.suppress(OSError):
                self._write(_BAD_REQUEST, "GET")
        except OSError:
            log.debug("connection from %s ended", self.client_address, exc_info=True)

    def _line(self) -> bytes:
        line = self.rfile.readline(MAX_LINE)
        if len(line) >= MAX_LINE:
            raise _BadRequest
        return line

    def _one(self) -> bool:
        """Serve one request; return whether the connection stays open."""
        line = self._line()
        while line in (b"\r\n", b"\n"):  # Go ignores blank lines before a request
            line = self._line()
        if not line:
            return False
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest
        method, target, version = parts
        headers: list[tuple[str, str]] = []
        while (raw := self._line()) not in (b"\r\n", b"\n"):
            name, sep, value = raw.decode("latin-1").partition(":")
            if not raw or not sep or not name.strip() or name != name.strip():
                raise _BadRequest
            headers.append((name, value.strip()))
        request = self._request(method, target, version, tuple(headers))
        connection = request.header("Connection").lower()
        keep = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        try:
            response = self.app(request)
        except Exception:
            log.exception("http: panic serving %s", request.remote_addr)
            response = Response(abort=True)
        self._write(response, method)
        return keep and not response.close and not response.abort

    def _read_body(self, version: str, request: Request) -> bytes:
        if request.header("Expect").lower() == "100-continue" and version == "HTTP/1.1":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            if "chunked" in request.header("Transfer-Encoding").lower():
                chunks: list[bytes] = []
                while (size := int(self._line().split(b";")[0].strip() or b"0", 16)) > 0:
                    chunks.append(self.rfile.read(size))
                    self._line()
                while self._line().strip():  # trailers
                    pass
                return b"".join(chunks)
            length = int(request.header("Content-Length") or 0)
        except ValueError:
            raise _BadRequest from None
        return self.rfile.read(length) if length > 0 else b""

    def _request(
        self, method: str, target: str, version: str, headers: tuple[tuple[str, str], ...]
    ) -> Request:
        url = urlsplit(target)
        query = parse_values(url.query)
        request = Request(
            method, url.path or "/", target, query, query, headers, addr_str(self.client_address)
        )
        body = self._read_body(version, request)
        form = query
        ctype = request.header("Content-Type")
        if method in ("POST", "PUT", "PATCH") and ctype.startswith("application/x-www-form-urlencoded"):
            posted = parse_values(body.decode(errors="replace"))
            form = {k: posted.get(k, ()) + query.get(k, ()) for k in {*posted, *query}}
        return request._replace(form=form, body=body)

    def _write(self, response: Response, method: str) -> None:
        if response.abort:
            return
        lines = [_status_line(response.status)]
        names = {name.lower() for name, _ in response.headers}
        fields = list(response.headers)
        if response.body and "content-type" not in names:
            fields.append(("Content-Type", sniff(response.body)))
        fields.append(("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())))
        fields.append(("Content-Length", str(len(response.body))))
        if response.close:
            fields.append(("Connection", "close"))
        lines.extend(f"{name}: {value}\r\n".encode("latin-1") for name, value in fields)
        lines.append(b"\r\n")
        if method != "HEAD":
            lines.append(response.body)
        self.wfile.write(b"".join(lines))
        self.wfile.flush()
        if response.then_exit is not None:
            self.on_exit(response.then_exit)


class _Server4(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = socket.SOMAXCONN  # socketserver's default of 5 drops SYNs under probe load

    def handle_error(self, request: object, client_address: object) -> None:
        # a client that vanished or failed a TLS handshake is not worth a traceback
        log.debug("connection from %s failed", client_address, exc_info=True)


class _Server6(_Server4):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class TLSFiles(NamedTuple):
    cert: str
    key: str


def serve(
    port: int,
    app: Handler,
    *,
    on_exit: Callable[[int], None],
    tls: TLSFiles | None = None,
    host: str = "",
) -> socketserver.ThreadingTCPServer:
    """Listen on ``host:port`` (all addresses, dual-stack when IPv6 exists) and serve ``app`` on a thread.

    Raises OSError when the port cannot be bound; the caller reports it the way Go would.
    """
    handler = type("Connection", (_Connection,), {"app": staticmethod(app), "on_exit": staticmethod(on_exit)})
    server: socketserver.ThreadingTCPServer
    if host:
        server = (_Server6 if ":" in host else _Server4)((host, port), handler)
    else:
        try:
            server = _Server6(("::", port), handler)
        except OSError as exc:
            if isinstance(exc, PermissionError) or exc.errno == 98:  # EADDRINUSE is real, not "no IPv6"
                raise
            server = _Server4(("0.0.0.0", port), handler)
    if tls is not None:
        import ssl  # only HTTPS servers pay for it

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert, tls.key)
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, name=f"http-{port}", daemon=True).start()
    return server
