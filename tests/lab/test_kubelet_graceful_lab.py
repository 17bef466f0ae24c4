"""Graceful pod deletion end to end, with real processes in a whole lab (real CNI, controllers).

A pod whose program traps SIGTERM (netexec ``--delay-shutdown``, as upstream's e2e tests use it)
goes on serving and finishes inside its grace period; one that outlasts its grace period is
SIGKILLed when it ends. Meanwhile the pod is Terminating, its EndpointSlice endpoint is
``ready=false, serving=true, terminating=true``, and the Endpoints object no longer lists it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import watch

from tests.lab.labkit import AGNHOST, Lab, Manifest, started_lab, wait_for

pytestmark = pytest.mark.lab

NS = "grace"
TRAP_DELAY = 6
"""Seconds the trapping pod waits after SIGTERM: room to see it Terminating on a loaded machine."""


def netexec_pod(name: str, node: str, delay: int, grace: int) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "grace"}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": grace,
            "containers": [
                {
                    "name": "netexec",
                    "image": AGNHOST,
                    "args": ["netexec", "--http-port=8080", "--udp-port=-1", f"--delay-shutdown={delay}"],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                }
            ],
        },
    }


SERVICE: Manifest = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "grace"},
    "spec": {"selector": {"app": "grace"}, "ports": [{"port": 80, "targetPort": 8080}]},
}


class PodEvents:
    """Every watch event of the namespace's pods, as (monotonic time, type, raw object)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.seen: list[tuple[float, str, dict[str, Any]]] = []
        self._rv = str(lab.core.list_namespaced_pod(NS).metadata.resource_version)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grace-watch", daemon=True)

    def __enter__(self) -> PodEvents:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "the pod watch did not stop"

    def _run(self) -> None:
        # Short server-side timeouts, resumed from the last resourceVersion: the thread ends
        # within a second of the test leaving, with no stream left open at lab teardown.
        while not self._stop.is_set():
            for ev in watch.Watch().stream(
                self.lab.core.list_namespaced_pod, NS, resource_version=self._rv, timeout_seconds=1
            ):
                raw = ev["raw_object"]
                self._rv = str(raw["metadata"]["resourceVersion"])
                self.seen.append((time.monotonic(), str(ev["type"]), raw))

    def of(self, name: str) -> list[tuple[float, str, dict[str, Any]]]:
        return [e for e in self.seen if e[2]["metadata"]["name"] == name]

    def deleted(self, name: str) -> bool:
        return any(kind == "DELETED" for _, kind, _ in self.of(name))


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with started_lab("grace") as the_lab:
        the_lab.namespace(NS)
        yield the_lab


def slice_conditions(lab: Lab) -> dict[str, dict[str, bool]]:
    slices = lab.discovery.list_namespaced_endpoint_slice(
        NS, label_selector="kubernetes.io/service-name=grace"
    ).items
    return {
        str(e.target_ref.name): {
            "ready": bool(e.conditions.ready),
            "serving": bool(e.conditions.serving),
            "terminating": bool(e.conditions.terminating),
        }
        for s in slices
        for e in s.endpoints or []
    }


def endpoints_names(lab: Lab) -> tuple[list[str], list[str]]:
    eps = lab.core.read_namespaced_endpoints("grace", NS)
    ready = [str(a.target_ref.name) for s in eps.subsets or [] for a in s.addresses or []]
    not_ready = [str(a.target_ref.name) for s in eps.subsets or [] for a in s.not_ready_addresses or []]
    return sorted(ready), sorted(not_ready)


def last_status(events: list[tuple[float, str, dict[str, Any]]]) -> dict[str, Any]:
    status: dict[str, Any] = events[-1][2]["status"]
    return status


def test_sigterm_trap_finishes_in_grace_and_a_stubborn_pod_is_killed(lab: Lab) -> None:
    worker = lab.workers[0]
    lab.apply(NS, SERVICE, netexec_pod("trap", worker, delay=TRAP_DELAY, grace=30))
    lab.apply(NS, netexec_pod("stubborn", worker, delay=120, grace=3))
    wait_for("both pods Ready", lambda: lab.ready_pod(NS, "trap") and lab.ready_pod(NS, "stubborn"), 90)
    both = {"ready": True, "serving": True, "terminating": False}
    wait_for("both endpoints ready", lambda: slice_conditions(lab) == {"trap": both, "stubborn": both})

    with PodEvents(lab) as events:
        deleted_at = time.monotonic()
        lab.core.delete_namespaced_pod("trap", NS)
        lab.core.delete_namespaced_pod("stubborn", NS)

        terminating = {"ready": False, "serving": True, "terminating": True}
        wait_for(
            "the trapping pod's endpoint serving and terminating",
            lambda: slice_conditions(lab).get("trap") == terminating,
            timeout=4,
            every=0.05,
        )
        row = lab.kubectl("get", "pod", "trap", "-n", NS, "--no-headers").stdout.split()
        assert row[2] == "Terminating"
        # Terminating pods go nowhere in Endpoints: seen while the trapping pod still terminates
        # (the controller handles the two deletions one after the other, so wait for both).
        wait_for(
            "both terminating pods out of Endpoints while the trapping one still runs",
            lambda: endpoints_names(lab) == ([], []),
            timeout=TRAP_DELAY - 1,
            every=0.05,
        )
        assert not events.deleted("trap"), "the trapping pod was gone before Endpoints emptied"
        wait_for("both pods removed", lambda: len([e for e in events.seen if e[1] == "DELETED"]) == 2, 40)

    for name in ("trap", "stubborn"):
        kinds = [kind for _, kind, _ in events.of(name)]
        assert kinds[-1] == "DELETED" and "MODIFIED" in kinds, kinds
    trap_gone = events.of("trap")[-1][0] - deleted_at
    stubborn_gone = events.of("stubborn")[-1][0] - deleted_at
    assert TRAP_DELAY <= trap_gone < 20 + TRAP_DELAY, trap_gone  # it exited on its own after its delay
    assert 3 <= stubborn_gone < 20, stubborn_gone  # SIGKILLed once its 3 s grace ended

    trap_status, stubborn_status = last_status(events.of("trap")), last_status(events.of("stubborn"))
    trap_exit = trap_status["containerStatuses"][0]["state"]["terminated"]
    stubborn_exit = stubborn_status["containerStatuses"][0]["state"]["terminated"]
    assert (trap_exit["exitCode"], trap_exit["reason"]) == (0, "Completed")
    assert (stubborn_exit["exitCode"], stubborn_exit["reason"]) == (137, "Error")
    for st in (trap_status, stubborn_status):
        ready = next(c for c in st["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False"
        assert st["containerStatuses"][0]["ready"] is False
    assert slice_conditions(lab) == {}
