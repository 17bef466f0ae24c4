"""The pods/log and pods|services/proxy subresources, served through a :class:`PodIO`.

Errors keep the real wording: the kubelet's ``container "x" in pod "y" is waiting to start``
for logs, and the apiserver proxy's ``error trying to reach service: dial tcp IP:PORT: …``.
"""

from __future__ import annotations

import asyncio
import errno
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from clusters.lab.api import status
from clusters.lab.api.hooks import PodIO
from clusters.lab.api.selectors import from_label_selector

Obj = dict[str, Any]
# A CRI log line: "<RFC3339Nano> stdout|stderr F|P <text>"; served without the prefix.
_CRI_LINE = re.compile(rb"^(\S+) (?:stdout|stderr) ([FP]) (.*)$", re.DOTALL)
_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "authorization",
    "content-length",
}
CONNECT_TIMEOUT = 10.0
RESPONSE_TIMEOUT = 60.0


# -- logs --------------------------------------------------------------------------------------


def _pick_container(pod: Obj, wanted: str | None) -> str:
    name = pod["metadata"]["name"]
    spec = pod.get("spec") or {}
    main = [c["name"] for c in spec.get("containers") or []]
    init = [c["name"] for c in spec.get("initContainers") or []]
    eph = [c["name"] for c in spec.get("ephemeralContainers") or []]
    if wanted:
        if wanted not in main + init + eph:
            raise status.bad_request(f"container {wanted} is not valid for pod {name}")
        return wanted
    if len(main) == 1:
        return str(main[0])
    msg = f"a container name must be specified for pod {name}, choose one of: [{' '.join(main)}]"
    if init:
        msg += f" or one of the init containers: [{' '.join(init)}]"
    raise status.bad_request(msg)


def _waiting_reason(pod: Obj, container: str) -> str:
    st = pod.get("status") or {}
    for cs in (st.get("containerStatuses") or []) + (st.get("initContainerStatuses") or []):
        if cs.get("name") == container:
            waiting = (cs.get("state") or {}).get("waiting")
            if waiting:
                return str(waiting.get("reason") or "ContainerCreating")
    return "ContainerCreating"


def _render(data: bytes, timestamps: bool) -> bytes:
    out = []
    for line in data.splitlines(keepends=True):
        m = _CRI_LINE.match(line)
        if not m:
            out.append(line)
            continue
        ts, tag, text = m.groups()
        if tag == b"P":
            text = text.rstrip(b"\n")
        out.append((ts + b" " + text) if timestamps else text)
    return b"".join(out)


def _tail(data: bytes, lines: int) -> bytes:
    if lines < 0:
        return data
    if lines == 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


def _container_running(pod: Obj | None, container: str) -> bool:
    if pod is None:
        return False
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == container:
            return bool((cs.get("state") or {}).get("running"))
    return True  # no status yet: keep following


async def serve_logs(
    request: web.Request, pod: Obj, pod_io: PodIO, get_pod: Any, query: Mapping[str, str]
) -> web.StreamResponse:
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    container = _pick_container(pod, query.get("container"))
    previous = query.get("previous") in ("true", "1")
    timestamps = query.get("timestamps") in ("true", "1")
    if previous:
        finder = getattr(pod_io, "previous_log_path", None)
        path: Path | None = finder(ns, name, container) if finder else None
        if path is None or not path.is_file():
            raise status.bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
    else:
        path = pod_io.log_path(ns, name, container)
        if path is None or not path.is_file():
            raise status.bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: '
                f"{_waiting_reason(pod, container)}"
            )
    data = path.read_bytes()
    tail = int(query.get("tailLines", "-1") or -1)
    text = _tail(_render(data, timestamps), tail)
    limit = int(query.get("limitBytes", "0") or 0)
    if limit > 0:
        text = text[:limit]
    if query.get("follow") not in ("true", "1"):
        return web.Response(body=text, content_type="text/plain")
    response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(text)
    offset = len(data)
    pending = b""
    while True:
        await asyncio.sleep(0.2)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            break
        if size < offset:  # rotated or replaced by a new container instance
            offset = 0
        if size > offset:
            with path.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read(size - offset)
            offset = size
            pending += chunk
            complete, _, pending = pending.rpartition(b"\n")
            if complete:
                await response.write(_render(complete + b"\n", timestamps))
            continue
        if not _container_running(get_pod(ns, name), container):
            break
    if pending:
        await response.write(_render(pending, timestamps))
    return response


# -- proxy -------------------------------------------------------------------------------------


def split_proxy_name(text: str) -> tuple[str, str]:
    """``[scheme:]name[:port]`` -> (name, port) as the apiserver parses proxy targets."""
    parts = text.split(":")
    if len(parts) == 1:
        return parts[0], ""
    if len(parts) == 2:
        return parts[0], parts[1]
    return parts[1], parts[2]


def pod_port(pod: Obj, port: str) -> int:
    if not port:
        return 80
    if port.isdigit():
        return int(port)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
    raise status.service_unavailable(
        f"error trying to reach service: no such port {port!r} in pod {pod['metadata']['name']}"
    )


def _dial_error(ip: str, port: int, err: BaseException) -> status.ApiError:
    if isinstance(err, TimeoutError | asyncio.TimeoutError):
        why = "i/o timeout"
    elif isinstance(err, ConnectionRefusedError) or getattr(err, "errno", None) == errno.ECONNREFUSED:
        why = "connect: connection refused"
    elif getattr(err, "errno", None) == errno.EHOSTUNREACH:
        why = "connect: no route to host"
    elif getattr(err, "errno", None) == errno.ENETUNREACH:
        why = "connect: network is unreachable"
    else:
        why = f"connect: {getattr(err, 'strerror', None) or err}"
    return status.service_unavailable(f"error trying to reach service: dial tcp {ip}:{port}: {why}")


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, list[tuple[str, str]], bytes]:
    line = await reader.readline()
    if not line:
        raise ConnectionResetError("EOF before response")
    parts = line.decode("latin-1").split(" ", 2)
    code = int(parts[1])
    headers: list[tuple[str, str]] = []
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers.append((k.strip(), v.strip()))
    lower = {k.lower(): v for k, v in headers}
    if "chunked" in lower.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line = await reader.readline()
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += await reader.readexactly(size)
            await reader.readline()
        return code, headers, bytes(body)
    if "content-length" in lower:
        return code, headers, await reader.readexactly(int(lower["content-length"]))
    return code, headers, await reader.read()


_PROXY_PATH = re.compile(r"/(?:pods|services|nodes)/[^/]+/proxy(/[^?]*)?(\?.*)?$")


def raw_target(raw_path: str, subpath: str) -> str:
    """The path and query to send upstream, still percent-encoded as the client sent them."""
    m = _PROXY_PATH.search(raw_path)
    if m is None:
        return "/" + subpath.lstrip("/")
    return (m.group(1) or "/") + (m.group(2) or "")


async def forward(request: web.Request, pod: Obj, port: int, subpath: str, pod_io: PodIO) -> web.Response:
    """Send the request to the pod over a connection PodIO opens, and relay the answer."""
    ip = str((pod.get("status") or {}).get("podIP") or "")
    try:
        reader, writer = await asyncio.wait_for(pod_io.open_connection(pod, port), CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as err:
        raise _dial_error(ip, port, err) from None
    try:
        body = await request.read()
        target = raw_target(request.raw_path, subpath)
        lines = [f"{request.method} {target} HTTP/1.1", f"Host: {ip}:{port}"]
        for k, v in request.headers.items():
            if k.lower() not in _HOP_HEADERS and k.lower() != "accept-encoding":
                lines.append(f"{k}: {v}")
        lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1") + body)
        await writer.drain()
        code, headers, payload = await asyncio.wait_for(_read_response(reader), RESPONSE_TIMEOUT)
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as err:
        raise status.service_unavailable(f"error trying to reach service: {err}") from None
    finally:
        writer.close()
    out = web.Response(status=code, body=payload)
    for k, v in headers:
        if k.lower() not in _HOP_HEADERS:
            out.headers.add(k, v)
    return out


def service_backend(service: Obj, port: str, pods: list[Obj]) -> tuple[Obj, int]:
    """Pick a ready pod behind ``service`` and the target port, as services/proxy does."""
    name = service["metadata"]["name"]
    spec = service.get("spec") or {}
    ports = spec.get("ports") or []
    chosen = None
    for p in ports:
        if not port or str(p.get("port")) == port or p.get("name") == port:
            chosen = p
            break
    if chosen is None:
        raise status.service_unavailable(f'no endpoints available for service "{name}"')
    selector = spec.get("selector") or {}
    sel = from_label_selector({"matchLabels": selector})
    ready = [
        p
        for p in pods
        if selector
        and sel.matches(p["metadata"].get("labels"))
        and (p.get("status") or {}).get("podIP")
        and not p["metadata"].get("deletionTimestamp")
        and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
    ]
    if not ready:
        raise status.service_unavailable(f'no endpoints available for service "{name}"')
    pod = random.choice(ready)
    target = chosen.get("targetPort", chosen.get("port"))
    return pod, pod_port(pod, str(target))
