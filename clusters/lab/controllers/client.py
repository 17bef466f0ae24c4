"""Plain-JSON REST calls to the API server through the official kubernetes client.

The controllers speak Kubernetes JSON (dicts) at this edge rather than the typed models: the
garbage and namespace controllers act on resources discovered at run time, for which no typed
API exists, and round-tripping through models would drop fields the API server sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

JSON = dict[str, Any]
Query = list[tuple[str, str]]

JSON_CT = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


def now_iso() -> str:
    """RFC 3339 with second precision, as metav1.Time serialises."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_of(err: BaseException) -> int:
    return int(getattr(err, "status", 0) or 0)


def describe_error(err: BaseException) -> str:
    status = getattr(err, "status", None)
    if status is not None:
        return f"{status} {getattr(err, 'reason', '')}: {str(getattr(err, 'body', '') or '')[:300]}"
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def is_terminating_namespace(err: BaseException) -> bool:
    """403 because the namespace is being deleted: creating there is pointless, not an error."""
    return status_of(err) == 403 and "being terminated" in str(getattr(err, "body", "") or "")


def is_not_found(err: BaseException) -> bool:
    return status_of(err) == 404


def is_conflict(err: BaseException) -> bool:
    return status_of(err) == 409


class WatchStream:
    """One open watch response; :meth:`close` from another thread unblocks a reader at once."""

    def __init__(self, resp: urllib3.HTTPResponse) -> None:
        self._resp = resp

    def lines(self) -> Iterator[bytes]:
        # Chunked bodies are read chunk by chunk; a plain streamed body with read1(), which returns
        # whatever has arrived: either way an event is seen as soon as its line is complete.
        chunks: Iterator[bytes]
        if self._resp.chunked:
            chunks = self._resp.read_chunked()
        else:
            chunks = iter(lambda: self._resp.read1(65536), b"")
        buf = b""
        for chunk in chunks:
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield line
        if buf.strip():
            yield buf

    def close(self) -> None:
        try:
            self._resp.shutdown()
        except Exception:  # already closed, or never connected
            log.debug("watch shutdown failed", exc_info=True)
        try:
            self._resp.release_conn()
        except Exception:
            log.debug("watch release failed", exc_info=True)


class Kube:
    """Thin JSON client: every call is one HTTP request through ``api_client``."""

    def __init__(self, api_client: ApiClient, *, timeout: float = 15.0) -> None:
        self.api_client = api_client
        self.timeout = timeout

    def _open(
        self,
        method: str,
        path: str,
        query: Query | None,
        body: Any,
        content_type: str,
        timeout: float | tuple[float, float],
    ) -> urllib3.HTTPResponse:
        headers = {"Accept": JSON_CT}
        if body is not None:
            headers["Content-Type"] = content_type
        m, url, hdrs, payload, _ = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query or []),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            rest = self.api_client.call_api(
                m, url, header_params=hdrs, body=payload, _request_timeout=timeout
            )
        except urllib3.exceptions.HTTPError as err:
            raise ApiException(status=0, reason=f"{method} {path}: {err}") from err
        resp: urllib3.HTTPResponse = rest.response
        if not 200 <= resp.status <= 299:
            data = resp.data.decode("utf-8", "replace")
            resp.release_conn()
            raise ApiException(status=resp.status, reason=f"{method} {path}: {resp.reason}", body=data)
        return resp

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        body: Any = None,
        content_type: str = JSON_CT,
    ) -> JSON:
        try:
            resp = self._open(method, path, query, body, content_type, self.timeout)
            data = resp.data
        except urllib3.exceptions.HTTPError as err:
            raise ApiException(status=0, reason=f"{method} {path}: {err}") from err
        if not data:
            return {}
        parsed = json.loads(data)
        return parsed if isinstance(parsed, dict) else {"items": parsed}

    def get(self, path: str, query: Query | None = None) -> JSON:
        return self.request("GET", path, query=query)

    def create(self, path: str, body: JSON) -> JSON:
        return self.request("POST", path, body=body)

    def update(self, path: str, body: JSON) -> JSON:
        return self.request("PUT", path, body=body)

    def patch(self, path: str, body: Any, content_type: str = MERGE_PATCH) -> JSON:
        return self.request("PATCH", path, body=body, content_type=content_type)

    def delete(self, path: str, options: JSON | None = None) -> JSON:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", **(options or {})}
        return self.request("DELETE", path, body=body)

    def watch(self, path: str, query: Query, *, read_timeout: float) -> WatchStream:
        return WatchStream(self._open("GET", path, query, None, JSON_CT, (self.timeout, read_timeout)))


def object_path(base: str, namespace: str | None, name: str | None = None, sub: str = "") -> str:
    """``/api/v1`` + ``pods`` style base → the object's URL (``base`` is ``<group-version>/<resource>``)."""
    prefix, resource = base.rsplit("/", 1)
    url = f"{prefix}/namespaces/{namespace}/{resource}" if namespace else f"{prefix}/{resource}"
    if name:
        url += f"/{name}"
    if sub:
        url += f"/{sub}"
    return url


def meta(obj: JSON) -> JSON:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def key_of(obj: JSON) -> str:
    m = meta(obj)
    ns = m.get("namespace") or ""
    return f"{ns}/{m.get('name', '')}" if ns else str(m.get("name", ""))


def split_key(key: str) -> tuple[str | None, str]:
    if "/" in key:
        ns, name = key.split("/", 1)
        return ns, name
    return None, key


def controller_ref(obj: JSON) -> JSON | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def owner_ref(owner: JSON, *, controller: bool = True) -> JSON:
    """The reference a controller puts on what it creates (blockOwnerDeletion, like the real ones)."""
    m = meta(owner)
    return {
        "apiVersion": owner.get("apiVersion", ""),
        "kind": owner.get("kind", ""),
        "name": m.get("name", ""),
        "uid": m.get("uid", ""),
        "controller": controller,
        "blockOwnerDeletion": True,
    }
