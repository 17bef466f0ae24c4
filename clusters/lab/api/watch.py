"""Watch streams: JSON lines of ``{"type": ..., "object": ...}`` over a chunked response.

Selector semantics follow the real watch cache: an object that stops matching is sent as
DELETED, one that starts matching as ADDED. A resourceVersion older than the history window
gets an ERROR event carrying a 410 Expired Status, which clients turn into a relist.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from clusters.lab.api import status
from clusters.lab.api.resources import ResourceType
from clusters.lab.api.selectors import FieldSelector, LabelSelector
from clusters.lab.api.store import Obj, Store, TooOld, WatchEvent, clone

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 1800.0


@dataclass(frozen=True)
class WatchRequest:
    rt: ResourceType
    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector
    resource_version: str
    timeout: float
    bookmarks: bool
    send_initial: bool


class Watches:
    """Open watch streams, so stopping the server can end them all."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[WatchEvent | None]] = set()

    def add(self, q: asyncio.Queue[WatchEvent | None]) -> None:
        self._queues.add(q)

    def discard(self, q: asyncio.Queue[WatchEvent | None]) -> None:
        self._queues.discard(q)

    def close_all(self) -> None:
        for q in list(self._queues):
            q.put_nowait(None)


def translate(event: WatchEvent, req: WatchRequest) -> tuple[str, Obj] | None:
    def match(obj: Obj | None) -> bool:
        if obj is None:
            return False
        return req.labels.matches(obj.get("metadata", {}).get("labels")) and req.fields.matches(obj)

    now_ok = match(event.obj)
    if event.type == "ADDED":
        return ("ADDED", event.obj) if now_ok else None
    if event.type == "DELETED":
        return ("DELETED", event.obj) if match(event.old) or now_ok else None
    was_ok = match(event.old)
    if now_ok and was_ok:
        return ("MODIFIED", event.obj)
    if now_ok:
        return ("ADDED", event.obj)
    if was_ok:
        return ("DELETED", event.obj)
    return None


async def serve(
    request: web.Request,
    store: Store,
    watches: Watches,
    req: WatchRequest,
    render: Callable[[Obj, bool], Obj],
) -> web.StreamResponse:
    """Stream events until timeout, client disconnect or server stop.

    ``render(obj, first)`` turns a stored object into what the client asked for (the object
    itself, or a one-row Table whose first instance carries the column definitions).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()

    def listener(event: WatchEvent) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    initial: list[tuple[str, Obj]] = []
    backlog: list[WatchEvent] = []
    sub = None
    expired: Obj | None = None
    with store.lock:
        rv_text = req.resource_version
        if rv_text in ("", "0") or req.send_initial:
            items, since = store.list(req.rt, req.namespace)
            initial = [
                ("ADDED", o)
                for o in items
                if req.labels.matches(o["metadata"].get("labels")) and req.fields.matches(o)
            ]
        else:
            try:
                since = int(rv_text)
            except ValueError:
                raise status.bad_request(f'invalid resource version: "{rv_text}"') from None
        try:
            backlog, sub = store.subscribe(req.rt, req.namespace, since, listener)
        except TooOld as err:
            expired = status.gone(str(err)).status()
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    if expired is not None:
        await response.write(_line("ERROR", expired))
        return response
    assert sub is not None
    watches.add(queue)
    first = True
    try:
        for typ, obj in initial:
            await response.write(_line(typ, render(obj, first)))
            first = False
        if req.send_initial and req.bookmarks:
            await response.write(_line("BOOKMARK", _bookmark(req.rt, since, initial_end=True)))
        for event in backlog:
            out = translate(event, req)
            if out:
                await response.write(_line(out[0], render(clone(out[1]), first)))
                first = False
        deadline = loop.time() + req.timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                item = await asyncio.wait_for(queue.get(), timeout=min(remaining, 60.0))
            except TimeoutError:
                if req.bookmarks:
                    await response.write(_line("BOOKMARK", _bookmark(req.rt, store.resource_version)))
                continue
            if item is None:
                break
            out = translate(item, req)
            if out:
                await response.write(_line(out[0], render(clone(out[1]), first)))
                first = False
    except ConnectionResetError:
        log.debug("watch client went away")
    finally:
        store.unsubscribe(sub)
        watches.discard(queue)
    return response


def _bookmark(rt: ResourceType, rv: int, initial_end: bool = False) -> Obj:
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}


def _line(typ: str, obj: Obj) -> bytes:
    return (json.dumps({"type": typ, "object": obj}, separators=(",", ":")) + "\n").encode()
