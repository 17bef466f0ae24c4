"""kube-proxy's healthz and metrics listeners: bound again every 5 s while the port is taken.

Upstream ``serveHealthz``/``serveMetrics`` (cmd/kube-proxy/app/server.go) run the listener under
``wait.Until(fn, 5*time.Second, …)``: with ``bindAddressHardFail`` off (the default, and kind's
config), a port already in use is logged (``"Healthz server failed"``; the metrics one through
``utilruntime.HandleError``) and retried, and the proxier keeps programming rules meanwhile. A
kube-proxy restarted while its predecessor still holds 10256 in the node's network namespace must
therefore come up and sync, not crash. Answers are served from a daemon thread per listener.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = Callable[[], tuple[int, str, str]]
"""An endpoint: () -> (status, content type, body)."""
RETRY_PERIOD = 5.0
"""``wait.Until``'s period in serveHealthz and serveMetrics."""
POLL = 0.2
"""How often the serving loop looks at its stop flag (``handle_request`` timeout)."""


def split_hostport(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def go_listen_error(addr: str, err: OSError) -> str:
    """Go's net.Listen error text: ``listen tcp 0.0.0.0:10256: bind: address already in use``."""
    return f"listen tcp {addr}: bind: {(err.strerror or str(err)).lower()}"


def _handler(routes: dict[str, Route]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                code, ctype, body = 404, "text/plain; charset=utf-8", "404 page not found\n"
            else:
                code, ctype, body = route()
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


class RetryingServer:
    """Serves ``routes`` on ``addr``; while binding fails, calls ``on_bind_error`` and retries every
    ``period`` seconds until :meth:`shutdown`."""

    def __init__(
        self,
        addr: str,
        routes: dict[str, Route],
        name: str,
        on_bind_error: Callable[[OSError], None],
        period: float = RETRY_PERIOD,
    ) -> None:
        self.addr = addr
        self._routes = routes
        self._on_bind_error = on_bind_error
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                server = ThreadingHTTPServer(split_hostport(self.addr), _handler(self._routes))
            except OSError as err:
                self._on_bind_error(err)
                self._stop.wait(self._period)
                continue
            server.daemon_threads = True
            server.timeout = POLL
            try:
                while not self._stop.is_set():
                    server.handle_request()
            finally:
                server.server_close()
            return

    def shutdown(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
