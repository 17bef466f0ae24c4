"""The informer's list/watch/re-list loop and the work queue, against a scripted API double."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from kubernetes.client.exceptions import ApiException

from clusters.lab.controllers.informer import Handlers, Informer
from clusters.lab.controllers.workqueue import ShutDown, WorkQueue

from .controllers_lab import eventually


def obj(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


class BlockingStream:
    def __init__(self, lines: list[dict[str, Any]], block: bool) -> None:
        self._lines = [json.dumps(x).encode() for x in lines]
        self._block = block
        self.closed = threading.Event()

    def lines(self) -> Iterator[bytes]:
        yield from self._lines
        if self._block:
            self.closed.wait(10)

    def close(self) -> None:
        self.closed.set()


class ScriptedKube:
    """Two lists and three watches: 410 after one event, a 500 on opening, then an idle stream."""

    def __init__(self) -> None:
        self.lists = [
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": "5"},
                "items": [obj("a", "1"), obj("b", "2")],
            },
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": "8"},
                "items": [obj("a", "7"), obj("c", "7")],
            },
        ]
        self.watch_rvs: list[str] = []
        self.list_calls = 0
        self.last_stream: BlockingStream | None = None

    def get(self, path: str, query: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        self.list_calls += 1
        return self.lists[min(self.list_calls, len(self.lists)) - 1]

    def watch(self, path: str, query: list[tuple[str, str]], *, read_timeout: float) -> BlockingStream:
        rv = dict(query)["resourceVersion"]
        self.watch_rvs.append(rv)
        n = len(self.watch_rvs)
        if n == 1:
            return BlockingStream(
                [
                    {"type": "MODIFIED", "object": obj("a", "6")},
                    {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}},
                ],
                block=False,
            )
        if n == 2:
            raise ApiException(status=500, reason="boom")
        self.last_stream = BlockingStream([{"type": "BOOKMARK", "object": obj("", "9")}], block=True)
        return self.last_stream


def test_informer_relists_on_410_and_reports_the_difference() -> None:
    kube = ScriptedKube()
    seen: list[tuple[str, str, str]] = []
    inf = Informer(kube, "/api/v1/pods")  # type: ignore[arg-type]
    inf.add_handlers(
        Handlers(
            lambda o: seen.append(("add", o["metadata"]["name"], o["metadata"]["resourceVersion"])),
            lambda _old, n: seen.append(("update", n["metadata"]["name"], n["metadata"]["resourceVersion"])),
            lambda o: seen.append(("delete", o["metadata"]["name"], o["metadata"]["resourceVersion"])),
        )
    )
    inf.start()
    try:
        eventually(lambda: inf.resource_version == "9", "the bookmark after the re-list")
        assert kube.list_calls == 2
        # first watch from the list's RV; after 410 a re-list; the 500 retries the watch from RV 8.
        assert kube.watch_rvs == ["5", "8", "8"]
        assert seen[:3] == [("add", "a", "1"), ("add", "b", "2"), ("update", "a", "6")]
        assert sorted(seen[3:]) == [("add", "c", "7"), ("delete", "b", "2"), ("update", "a", "7")]
        assert sorted(o["metadata"]["name"] for o in inf.objects()) == ["a", "c"]
        assert inf.get("ns/a")["kind"] == "Pod"  # type: ignore[index]
    finally:
        inf.stop()
    assert inf.join(5) == []
    assert kube.last_stream is not None and kube.last_stream.closed.is_set()


def test_work_queue_dedupes_and_serialises_a_key() -> None:
    q = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    key = q.get()
    assert key == "a"
    q.add("a")  # changed while processing: queued again only after done()
    assert q.get() == "b"
    q.done("b")
    q.done("a")
    assert q.get() == "a"
    q.add_after("c", 0.01)
    q.add_after("c", 60)  # a later duplicate does not postpone the earlier one
    assert q.get() == "c"
    q.shutdown()
    try:
        q.get()
    except ShutDown:
        pass
    else:
        raise AssertionError("get() after shutdown must raise ShutDown")
