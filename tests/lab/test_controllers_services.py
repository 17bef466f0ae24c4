"""EndpointSlice, Endpoints and LoadBalancer controllers over the lab API, with the shared controller
fixture plus a stand-in pod network that gives bound pods an IP (the fake kubelet does not)."""

from __future__ import annotations

import copy
import ipaddress
import itertools
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clusters.lab.controllers.client import JSON, MERGE_PATCH, Kube, is_not_found, meta
from clusters.lab.controllers.endpoints import repack
from clusters.lab.controllers.endpointslice import EndpointPort, WriteTracker, find_port
from clusters.lab.controllers.informer import Handlers, Informer
from clusters.lab.controllers.servicelb import pool_addresses
from clusters.lab.controllers.workqueue import ShutDown, WorkQueue
from clusters.lab.layout import LB_POOL
from clusters.proc import run

from .controllers_lab import (  # noqa: F401
    DEPLOY,
    HASH_CHARS,
    NODES,
    W1,
    W2,
    Lab,
    deployment,
    eventually,
    lab_fixture,
)

NS = "default"
SVC = f"/api/v1/namespaces/{NS}/services"
PODS = f"/api/v1/namespaces/{NS}/pods"
SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
EPS = f"/api/v1/namespaces/{NS}/endpoints"
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.39"
KUBECTL = "/usr/bin/kubectl"
SLICE_MANAGER = ("endpointslice.kubernetes.io/managed-by", "endpointslice-controller.k8s.io")


class PodNetwork:
    """Stand-in for CNI: gives every bound pod a podIP from its node's pod CIDR (status patch)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.queue = WorkQueue()
        self.pods = Informer(kube, "/api/v1/pods")
        self.pods.add_handlers(Handlers(self._seen, lambda _o, n: self._seen(n), None))
        self.hosts = {node: itertools.count(2) for node in NODES}
        self.thread = threading.Thread(target=self._work, name="fake-pod-network", daemon=True)

    def start(self) -> None:
        self.pods.start()
        self.thread.start()

    def stop(self) -> list[threading.Thread]:
        self.queue.shutdown()
        self.pods.stop()
        self.thread.join(5)
        return self.pods.join(5) + ([self.thread] if self.thread.is_alive() else [])

    def _seen(self, pod: JSON) -> None:
        if (pod.get("spec") or {}).get("nodeName") and not (pod.get("status") or {}).get("podIP"):
            self.queue.add(f"{meta(pod)['namespace']}/{meta(pod)['name']}")

    def _work(self) -> None:
        while True:
            try:
                key = self.queue.get()
            except ShutDown:
                return
            try:
                pod = self.pods.get(key)
                if pod is not None and not (pod.get("status") or {}).get("podIP"):
                    # A PUT with the cached resourceVersion: from a stale cache it conflicts and is
                    # retried, so a pod never gets a second address.
                    node = pod["spec"]["nodeName"]
                    fresh = copy.deepcopy(pod)
                    ip = f"10.244.{NODES.index(node)}.{next(self.hosts[node])}"
                    fresh["status"] = {**(fresh.get("status") or {}), "podIP": ip, "podIPs": [{"ip": ip}]}
                    ns, name = key.split("/")
                    self.kube.update(f"/api/v1/namespaces/{ns}/pods/{name}/status", fresh)
            except Exception as err:
                if not is_not_found(err):
                    self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)


@pytest.fixture(name="net")
def net_fixture(lab: Lab) -> Iterator[Lab]:
    network = PodNetwork(lab.kube)
    network.start()
    try:
        yield lab
    finally:
        alive = network.stop()
        assert not alive, f"pod network threads still running: {[t.name for t in alive]}"


# -- helpers ------------------------------------------------------------------------------------


def service(name: str, selector: dict[str, str] | None, ports: list[JSON], **spec: object) -> JSON:
    body: JSON = {"ports": ports, **spec}
    if selector is not None:
        body["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS}, "spec": body}


def bare_pod(
    name: str, labels: dict[str, str], node: str, ports: list[JSON] | None = None, **spec: object
) -> JSON:
    container: JSON = {"name": "c", "image": AGNHOST}
    if ports:
        container["ports"] = ports
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"nodeName": node, "containers": [container], **spec},
    }


def slices_of(lab: Lab, svc: str) -> list[JSON]:
    return lab.kube.get(SLICES, [("labelSelector", f"kubernetes.io/service-name={svc}")]).get("items") or []


def endpoints_of(lab: Lab, svc: str) -> JSON | None:
    try:
        return lab.kube.get(f"{EPS}/{svc}")
    except Exception as err:
        if is_not_found(err):
            return None
        raise


def ready_pods(lab: Lab, selector: str, count: int) -> list[JSON]:
    """Wait for ``count`` live pods with an IP and Ready=True."""

    def check() -> list[JSON] | None:
        pods = [p for p in lab.pods(selector=selector) if not meta(p).get("deletionTimestamp")]
        ok = len(pods) == count and all(
            (p.get("status") or {}).get("podIP")
            and any(
                c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or []
            )
            for p in pods
        )
        return pods if ok else None

    return eventually(check, f"{count} ready pods with IPs for {selector}")


def single_slice(lab: Lab, svc: str, predicate: Callable[[JSON], bool]) -> JSON:
    def check() -> JSON | None:
        found = slices_of(lab, svc)
        return found[0] if len(found) == 1 and predicate(found[0]) else None

    return eventually(check, f"one EndpointSlice for {svc} matching the expectation")


def all_ready(n: int) -> Callable[[JSON], bool]:
    return lambda s: (
        len(s.get("endpoints") or []) == n and all(e["conditions"]["ready"] for e in s["endpoints"])
    )


def set_pod_ready(lab: Lab, name: str, ready: bool) -> None:
    pod = lab.kube.get(f"{PODS}/{name}")
    conds = [
        c for c in pod["status"].get("conditions") or [] if c["type"] not in ("Ready", "ContainersReady")
    ]
    value = "True" if ready else "False"
    conds += [{"type": t, "status": value} for t in ("Ready", "ContainersReady")]
    lab.kube.patch(f"{PODS}/{name}/status", {"status": {"conditions": conds}}, MERGE_PATCH)


def web_service(lab: Lab, replicas: int = 3) -> list[JSON]:
    body = deployment("web", replicas)
    body["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 8080}]
    lab.kube.create(DEPLOY, body)
    lab.kube.create(SVC, service("web", {"app": "web"}, [{"name": "http", "port": 80, "targetPort": 8080}]))
    return ready_pods(lab, "app=web", replicas)


# -- EndpointSlices and Endpoints ---------------------------------------------------------------


def test_clusterip_service_gets_one_slice_and_endpoints(net: Lab) -> None:
    lab = net
    pods = web_service(lab)
    sl = single_slice(lab, "web", all_ready(3))
    svc = lab.kube.get(f"{SVC}/web")
    assert re.fullmatch(f"web-[{HASH_CHARS}]{{5}}", sl["metadata"]["name"])
    assert sl["metadata"]["generateName"] == "web-"
    labels = sl["metadata"]["labels"]
    assert labels["kubernetes.io/service-name"] == "web"
    assert labels[SLICE_MANAGER[0]] == SLICE_MANAGER[1]
    assert "service.kubernetes.io/headless" not in labels
    assert sl["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "name": "web",
            "uid": svc["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert sl["addressType"] == "IPv4"
    assert sl["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    by_name = {p["metadata"]["name"]: p for p in pods}
    for ep in sl["endpoints"]:
        pod = by_name[ep["targetRef"]["name"]]
        assert ep["targetRef"] == {
            "kind": "Pod",
            "namespace": NS,
            "name": pod["metadata"]["name"],
            "uid": pod["metadata"]["uid"],
        }
        assert ep["addresses"] == [pod["status"]["podIP"]]
        assert ep["nodeName"] == pod["spec"]["nodeName"] and ep["nodeName"] in (W1, W2)
        assert ep["conditions"] == {"ready": True, "serving": True, "terminating": False}
        assert "hostname" not in ep
    assert {e["targetRef"]["name"] for e in sl["endpoints"]} == set(by_name)

    def three_addresses() -> JSON | None:
        ep = endpoints_of(lab, "web")
        subsets = (ep or {}).get("subsets") or []
        return ep if len(subsets) == 1 and len(subsets[0].get("addresses") or []) == 3 else None

    ep = eventually(three_addresses, "Endpoints web with 3 addresses")
    assert ep["metadata"]["labels"] == {"endpoints.kubernetes.io/managed-by": "endpoint-controller"}
    subset = ep["subsets"][0]
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert "notReadyAddresses" not in subset
    ips = [a["ip"] for a in subset["addresses"]]
    assert ips == sorted(ips, key=ipaddress.ip_address)
    for addr in subset["addresses"]:
        pod = by_name[addr["targetRef"]["name"]]
        assert addr["ip"] == pod["status"]["podIP"] and addr["nodeName"] == pod["spec"]["nodeName"]
        assert addr["targetRef"]["uid"] == pod["metadata"]["uid"] and addr["targetRef"]["kind"] == "Pod"

    lab.kube.delete(f"{SLICES}/{sl['metadata']['name']}")  # a managed slice deleted by hand comes back
    again = single_slice(lab, "web", all_ready(3))
    assert again["metadata"]["name"] != sl["metadata"]["name"]
    lab.kube.delete(f"{EPS}/web")
    eventually(lambda: endpoints_of(lab, "web"), "Endpoints written again after a deletion")

    lab.kube.delete(f"{SVC}/web")
    eventually(
        lambda: not slices_of(lab, "web") and endpoints_of(lab, "web") is None, "slices and endpoints gone"
    )


def test_not_ready_pod_moves_to_not_ready_and_back(net: Lab) -> None:
    lab = net
    pods = web_service(lab)
    single_slice(lab, "web", all_ready(3))
    victim = pods[0]["metadata"]["name"]
    set_pod_ready(lab, victim, False)

    def victim_not_ready(sl: JSON) -> bool:
        conds = {e["targetRef"]["name"]: e["conditions"] for e in sl.get("endpoints") or []}
        return (
            len(conds) == 3
            and conds[victim] == {"ready": False, "serving": False, "terminating": False}
            and all(c["ready"] for n, c in conds.items() if n != victim)
        )

    single_slice(lab, "web", victim_not_ready)

    def split() -> JSON | None:
        subsets = (endpoints_of(lab, "web") or {}).get("subsets") or []
        if len(subsets) != 1:
            return None
        s = subsets[0]
        ok = len(s.get("addresses") or []) == 2 and [
            a["targetRef"]["name"] for a in s.get("notReadyAddresses") or []
        ] == [victim]
        return s if ok else None

    subset = eventually(split, "the not-ready pod under notReadyAddresses")
    assert subset["notReadyAddresses"][0]["ip"] == pods[0]["status"]["podIP"]
    set_pod_ready(lab, victim, True)
    single_slice(lab, "web", all_ready(3))
    eventually(
        lambda: "notReadyAddresses" not in ((endpoints_of(lab, "web") or {}).get("subsets") or [{}])[0],
        "ready again",
    )


def test_scaling_down_shrinks_slice_and_endpoints(net: Lab) -> None:
    lab = net
    web_service(lab)
    first = single_slice(lab, "web", all_ready(3))
    lab.kube.patch(f"{DEPLOY}/web", {"spec": {"replicas": 1}}, MERGE_PATCH)
    left = single_slice(lab, "web", all_ready(1))
    assert left["metadata"]["name"] == first["metadata"]["name"]  # updated in place
    (pod,) = lab.pods(selector="app=web")
    assert left["endpoints"][0]["targetRef"]["uid"] == pod["metadata"]["uid"]
    eventually(
        lambda: (
            [len(s.get("addresses") or []) for s in (endpoints_of(lab, "web") or {}).get("subsets") or []]
            == [1]
        ),
        "Endpoints with 1 address",
    )
    lab.kube.patch(f"{DEPLOY}/web", {"spec": {"replicas": 0}}, MERGE_PATCH)
    placeholder = single_slice(lab, "web", lambda s: not s.get("endpoints"))
    assert "ports" not in placeholder  # the real controller's placeholder slice has no ports
    eventually(lambda: "subsets" not in (endpoints_of(lab, "web") or {"subsets": 1}), "empty Endpoints")


def test_terminating_pod_is_flagged_in_slice_and_dropped_from_endpoints(net: Lab) -> None:
    lab = net
    lab.kube.create(SVC, service("hold", {"app": "hold"}, [{"port": 80, "targetPort": 8080}]))
    for i, node in enumerate((W1, W2)):
        body = bare_pod(f"hold-{i}", {"app": "hold"}, node)
        body["metadata"]["finalizers"] = ["knetcheck.test/hold"]
        lab.kube.create(PODS, body)
    ready_pods(lab, "app=hold", 2)
    single_slice(lab, "hold", all_ready(2))
    lab.kube.delete(f"{PODS}/hold-0")

    def flagged(sl: JSON) -> bool:
        conds = {e["targetRef"]["name"]: e["conditions"] for e in sl.get("endpoints") or []}
        return conds.get("hold-0") == {"ready": False, "serving": True, "terminating": True}

    sl = single_slice(lab, "hold", flagged)
    assert sl["ports"] == [{"name": "", "protocol": "TCP", "port": 8080}]
    eventually(
        lambda: (
            [
                a["targetRef"]["name"]
                for s in (endpoints_of(lab, "hold") or {}).get("subsets") or []
                for a in s.get("addresses") or []
            ]
            == ["hold-1"]
        ),
        "the terminating pod left out of Endpoints",
    )
    for name in ("hold-0", "hold-1"):
        lab.kube.patch(f"{PODS}/{name}", {"metadata": {"finalizers": None}}, MERGE_PATCH)
    lab.kube.delete(f"{PODS}/hold-1")
    single_slice(lab, "hold", lambda s: not s.get("endpoints"))


def test_named_target_port_resolved_per_pod(net: Lab) -> None:
    lab = net
    lab.kube.create(
        SVC, service("named", {"app": "named"}, [{"name": "web", "port": 80, "targetPort": "web"}])
    )
    lab.kube.create(PODS, bare_pod("named-a", {"app": "named"}, W1, [{"name": "web", "containerPort": 8080}]))
    lab.kube.create(PODS, bare_pod("named-b", {"app": "named"}, W2, [{"name": "web", "containerPort": 8080}]))
    lab.kube.create(PODS, bare_pod("named-c", {"app": "named"}, W2, [{"name": "web", "containerPort": 9090}]))
    ready_pods(lab, "app=named", 3)

    def two_slices() -> dict[int, list[str]] | None:
        found = slices_of(lab, "named")
        got = {
            s["ports"][0]["port"]: sorted(e["targetRef"]["name"] for e in s.get("endpoints") or [])
            for s in found
            if s.get("ports")
        }
        return got if len(found) == 2 and got == {8080: ["named-a", "named-b"], 9090: ["named-c"]} else None

    eventually(two_slices, "one slice per resolved port")
    for sl in slices_of(lab, "named"):
        assert sl["ports"][0]["name"] == "web" and sl["ports"][0]["protocol"] == "TCP"

    def two_subsets() -> dict[int, list[str]] | None:
        subsets = (endpoints_of(lab, "named") or {}).get("subsets") or []
        got = {
            s["ports"][0]["port"]: sorted(a["targetRef"]["name"] for a in s.get("addresses") or [])
            for s in subsets
            if len(s.get("ports") or []) == 1 and s["ports"][0]["name"] == "web"
        }
        return got if len(subsets) == 2 and got == {8080: ["named-a", "named-b"], 9090: ["named-c"]} else None

    eventually(two_subsets, "one Endpoints subset per resolved port")


def test_headless_service_publishes_hostnames(net: Lab) -> None:
    lab = net
    lab.kube.create(SVC, service("db", {"app": "db"}, [{"port": 5432}], clusterIP="None"))
    lab.kube.create(PODS, bare_pod("db-0", {"app": "db"}, W1, hostname="db-0", subdomain="db"))
    lab.kube.create(PODS, bare_pod("db-1", {"app": "db"}, W2, hostname="db-1", subdomain="other"))
    lab.kube.create(PODS, bare_pod("db-2", {"app": "db"}, W2))
    ready_pods(lab, "app=db", 3)
    sl = single_slice(lab, "db", all_ready(3))
    assert sl["metadata"]["labels"]["service.kubernetes.io/headless"] == ""
    hostnames = {e["targetRef"]["name"]: e.get("hostname") for e in sl["endpoints"]}
    assert hostnames == {"db-0": "db-0", "db-1": None, "db-2": None}

    def ep_hostnames() -> dict[str, str | None] | None:
        subsets = (endpoints_of(lab, "db") or {}).get("subsets") or []
        addrs = [a for s in subsets for a in s.get("addresses") or []]
        return {a["targetRef"]["name"]: a.get("hostname") for a in addrs} if len(addrs) == 3 else None

    assert eventually(ep_hostnames, "Endpoints for db") == hostnames
    assert (endpoints_of(lab, "db") or {})["metadata"]["labels"]["service.kubernetes.io/headless"] == ""


def test_tcp_and_udp_on_the_same_port_number(net: Lab) -> None:
    lab = net
    ports = [
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        {"name": "dns", "port": 53, "protocol": "UDP"},
    ]
    lab.kube.create(SVC, service("dns", {"app": "dns"}, ports))
    lab.kube.create(PODS, bare_pod("dns-0", {"app": "dns"}, W1))
    ready_pods(lab, "app=dns", 1)
    sl = single_slice(lab, "dns", all_ready(1))
    assert sl["ports"] == [
        {"name": "dns-tcp", "protocol": "TCP", "port": 53},
        {"name": "dns", "protocol": "UDP", "port": 53},
    ]

    def subset() -> JSON | None:
        subsets = (endpoints_of(lab, "dns") or {}).get("subsets") or []
        return subsets[0] if len(subsets) == 1 else None

    got = eventually(subset, "Endpoints for dns")
    assert sorted((p["name"], p["protocol"], p["port"]) for p in got["ports"]) == [
        ("dns", "UDP", 53),
        ("dns-tcp", "TCP", 53),
    ]


def test_selectorless_and_external_name_services_are_left_alone(net: Lab) -> None:
    lab = net
    lab.kube.create(PODS, bare_pod("app-0", {"app": "app"}, W1))
    ready_pods(lab, "app=app", 1)
    lab.kube.create(SVC, service("manual", None, [{"port": 80}]))
    user_slice = lab.kube.create(
        SLICES,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "manual-1",
                "labels": {"kubernetes.io/service-name": "manual", SLICE_MANAGER[0]: "staff"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["192.0.2.10"]}],
            "ports": [{"name": "", "port": 80, "protocol": "TCP"}],
        },
    )
    user_ep = lab.kube.create(
        EPS,
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "manual"},
            "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 80}]}],
        },
    )
    lab.kube.create(
        SVC, service("ext", {"app": "app"}, [{"port": 80}], type="ExternalName", externalName="example.com")
    )
    # Created last: once its slice and Endpoints exist, the controllers have been through the others.
    lab.kube.create(SVC, service("sentinel", {"app": "app"}, [{"port": 80}]))
    single_slice(lab, "sentinel", all_ready(1))
    eventually(lambda: endpoints_of(lab, "sentinel"), "Endpoints for the sentinel")
    assert slices_of(lab, "ext") == [] and endpoints_of(lab, "ext") is None
    (still,) = slices_of(lab, "manual")
    assert still["metadata"]["resourceVersion"] == user_slice["metadata"]["resourceVersion"]
    ep = endpoints_of(lab, "manual")
    assert ep is not None and ep["metadata"]["resourceVersion"] == user_ep["metadata"]["resourceVersion"]


def count_endpoint_writes(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record every write the controllers send for slices and Endpoints: the API server drops a
    write that changes nothing without an event, so the watch alone cannot see a needless PUT."""
    writes: list[tuple[str, str]] = []
    kube = lab.manager.kube
    for verb in ("create", "update", "patch", "delete"):
        original = getattr(kube, verb)

        def counting(path: str, *args: Any, _orig: Any = original, _verb: str = verb, **kw: Any) -> Any:
            if "/endpoints" in path:
                writes.append((_verb, path))
            return _orig(path, *args, **kw)

        monkeypatch.setattr(kube, verb, counting)
    return writes


def test_no_writes_when_nothing_changed(net: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = net
    writes = count_endpoint_writes(lab, monkeypatch)
    pods = web_service(lab)
    sl = single_slice(lab, "web", all_ready(3))
    eventually(
        lambda: len(((endpoints_of(lab, "web") or {}).get("subsets") or [{}])[0].get("addresses") or []) == 3,
        "ep",
    )
    writes.clear()
    rv = lab.kube.get(SLICES)["metadata"]["resourceVersion"]
    ep_rv = lab.kube.get(EPS)["metadata"]["resourceVersion"]
    slice_watch = lab.kube.watch(
        SLICES, [("watch", "true"), ("resourceVersion", rv), ("timeoutSeconds", "4")], read_timeout=15
    )
    ep_watch = lab.kube.watch(
        EPS, [("watch", "true"), ("resourceVersion", ep_rv), ("timeoutSeconds", "4")], read_timeout=15
    )
    try:
        # Changes the controllers must look at but that change nothing they write.
        for p in pods:
            lab.kube.patch(
                f"{PODS}/{p['metadata']['name']}",
                {"metadata": {"annotations": {"touched": "1"}}},
                MERGE_PATCH,
            )
        lab.kube.patch(f"{SVC}/web", {"metadata": {"annotations": {"touched": "1"}}}, MERGE_PATCH)
        # A tracer queued after them: its slice proves the controllers ran during the window.
        lab.kube.create(SVC, service("tracer", {"app": "web"}, [{"port": 81}]))
        slice_events = [json.loads(line) for line in slice_watch.lines()]
        ep_events = [json.loads(line) for line in ep_watch.lines()]
    finally:
        slice_watch.close()
        ep_watch.close()
    web_slice = [e["type"] for e in slice_events if e["object"]["metadata"]["name"] == sl["metadata"]["name"]]
    tracer = [
        e["type"]
        for e in slice_events
        if e["object"]["metadata"]["labels"].get("kubernetes.io/service-name") == "tracer"
    ]
    assert "ADDED" in tracer, f"the tracer's slice never appeared: {slice_events}"
    web_paths = (f"/endpointslices/{sl['metadata']['name']}", "/endpoints/web")
    assert [w for w in writes if w[1].endswith(web_paths)] == []
    assert ("create", SLICES) in writes and ("create", EPS) in writes  # the tracer's
    assert web_slice == [], f"the web slice was written although nothing changed: {web_slice}"
    assert [e["type"] for e in ep_events if e["object"]["metadata"]["name"] == "web"] == []
    assert "tracer" in {e["object"]["metadata"]["name"] for e in ep_events}


# -- LoadBalancer -------------------------------------------------------------------------------


def lb_ip(lab: Lab, name: str) -> str:
    def check() -> str | None:
        ingress = (lab.kube.get(f"{SVC}/{name}").get("status") or {}).get("loadBalancer", {}).get(
            "ingress"
        ) or []
        if ingress:
            assert ingress == [{"ip": ingress[0]["ip"], "ipMode": "VIP"}]
            return str(ingress[0]["ip"])
        return None

    return eventually(check, f"a LoadBalancer IP for {name}")


def event_for(lab: Lab, name: str, reason: str) -> JSON | None:
    items: list[JSON] = lab.kube.get(f"/api/v1/namespaces/{NS}/events").get("items") or []
    return next((e for e in items if e["involvedObject"]["name"] == name and e["reason"] == reason), None)


def lb(name: str, **spec: object) -> JSON:
    return service(name, {"app": name}, [{"port": 80}], type="LoadBalancer", **spec)


def test_load_balancer_ips_from_the_pool(net: Lab) -> None:
    lab = net
    lab.kube.create(SVC, lb("lb-a"))
    a = lb_ip(lab, "lb-a")
    lab.kube.create(SVC, lb("lb-b"))
    b = lb_ip(lab, "lb-b")
    assert a != b
    for ip in (a, b):
        addr = ipaddress.ip_address(ip)
        assert addr in LB_POOL and int(addr) & 0xFF not in (0, 1, 255)
    assert {a, b} == {"172.18.255.2", "172.18.255.3"}  # lowest free first, as MetalLB hands them out

    ev = eventually(lambda: event_for(lab, "lb-a", "IPAllocated"), "an IPAllocated event")
    assert ev["message"] == f'Assigned IP ["{a}"]' and ev["type"] == "Normal"
    assert ev["source"]["component"] == "metallb-controller"

    lab.kube.delete(f"{SVC}/lb-a")
    lab.kube.create(SVC, lb("lb-c"))
    assert lb_ip(lab, "lb-c") == a  # released on delete, and reused

    lab.kube.create(SVC, lb("lb-d", loadBalancerIP="172.18.255.77"))
    assert lb_ip(lab, "lb-d") == "172.18.255.77"
    lab.kube.create(SVC, lb("lb-e", loadBalancerIP="172.18.255.77"))

    ev = eventually(lambda: event_for(lab, "lb-e", "AllocationFailed"), "AllocationFailed for a taken IP")
    assert ev["type"] == "Warning" and 'Failed to allocate IP for "default/lb-e"' in ev["message"]
    assert not (lab.kube.get(f"{SVC}/lb-e").get("status") or {}).get("loadBalancer", {}).get("ingress")

    lab.kube.delete(f"{SVC}/lb-d")
    assert lb_ip(lab, "lb-e") == "172.18.255.77"  # retried once the address was freed


def test_load_balancer_released_when_type_changes(net: Lab) -> None:
    lab = net
    lab.kube.create(SVC, lb("lb-a"))
    ip = lb_ip(lab, "lb-a")
    body = lab.kube.get(f"{SVC}/lb-a")
    body["spec"]["type"] = "ClusterIP"
    # The real API server drops these itself on such a change (dropTypeDependentFields); the lab's
    # does not, so the test sends them cleared, which both accept.
    for port in body["spec"]["ports"]:
        port.pop("nodePort", None)
    for field in ("externalTrafficPolicy", "allocateLoadBalancerNodePorts"):
        body["spec"].pop(field, None)
    lab.kube.update(f"{SVC}/lb-a", body)
    eventually(
        lambda: not (lab.kube.get(f"{SVC}/lb-a").get("status") or {}).get("loadBalancer", {}).get("ingress"),
        "status.loadBalancer cleared",
    )
    lab.kube.create(SVC, lb("lb-b"))
    assert lb_ip(lab, "lb-b") == ip


def test_pool_skips_network_gateway_and_broadcast() -> None:
    pool = pool_addresses()
    assert pool[0] == "172.18.255.2" and pool[-1] == "172.18.255.254" and len(pool) == 253


# -- units ----------------------------------------------------------------------------------------


def test_find_port_by_number_and_by_name_and_protocol() -> None:
    pod = {
        "spec": {
            "containers": [{"ports": [{"name": "dns", "containerPort": 5353, "protocol": "UDP"}]}],
            "initContainers": [
                {"restartPolicy": "Always", "ports": [{"name": "side", "containerPort": 9000}]}
            ],
        }
    }
    assert find_port(pod, {"port": 80, "targetPort": 8080}) == 8080
    assert find_port(pod, {"port": 53, "targetPort": "dns", "protocol": "UDP"}) == 5353
    assert find_port(pod, {"port": 53, "targetPort": "dns", "protocol": "TCP"}) is None
    assert find_port(pod, {"port": 90, "targetPort": "side"}) == 9000


def test_repack_groups_addresses_by_their_port_sets() -> None:
    def addr(ip: str) -> JSON:
        return {"ip": ip, "targetRef": {"kind": "Pod", "uid": ip}}

    http, https = EndpointPort("http", "TCP", 80), EndpointPort("https", "TCP", 443)
    entries = [
        (addr("10.0.0.2"), True, http),
        (addr("10.0.0.2"), True, https),
        (addr("10.0.0.10"), False, http),
        (addr("10.0.0.10"), False, https),
        (addr("10.0.0.3"), True, http),
    ]
    http_only = {"name": "http", "port": 80, "protocol": "TCP"}
    assert repack(entries) == [
        {
            "addresses": [addr("10.0.0.2"), addr("10.0.0.3")],
            "notReadyAddresses": [addr("10.0.0.10")],
            "ports": [http_only],
        },
        {
            "addresses": [addr("10.0.0.2")],
            "notReadyAddresses": [addr("10.0.0.10")],
            "ports": [{"name": "https", "port": 443, "protocol": "TCP"}],
        },
    ]
    # Two ports served by the same addresses share one subset.
    both = [(addr("10.0.0.2"), True, http), (addr("10.0.0.2"), True, https)]
    assert repack(both) == [
        {
            "addresses": [addr("10.0.0.2")],
            "ports": [http_only, {"name": "https", "port": 443, "protocol": "TCP"}],
        }
    ]


# -- what the real kubectl shows ------------------------------------------------------------------


@pytest.mark.skipif(not os.access(KUBECTL, os.X_OK), reason="needs /usr/bin/kubectl")
def test_kubectl_shows_endpoints_and_external_ip(net: Lab, tmp_path: Path) -> None:
    lab = net
    pods = web_service(lab)
    single_slice(lab, "web", all_ready(3))
    ips = sorted((p["status"]["podIP"] for p in pods), key=ipaddress.ip_address)
    eventually(lambda: endpoints_of(lab, "web"), "Endpoints for web")
    lab.kube.create(SVC, lb("front"))
    ip = lb_ip(lab, "front")
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "KUBECONFIG": str(lab.kubeconfig)}

    def kubectl(*args: str) -> str:
        return run([KUBECTL, *args], timeout=60, env=env).stdout

    def get_ep() -> str | None:
        out = kubectl("get", "endpoints", "web")
        return out if all(f"{i}:8080" in out for i in ips) else None

    assert eventually(get_ep, "kubectl get ep listing the pod addresses")
    described = kubectl("describe", "service", "web")
    assert re.search(r"Endpoints:\s+" + re.escape(f"{ips[0]}:8080"), described), described
    slices = kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=web")
    assert re.search(r"web-\w{5}\s+IPv4\s+8080\s+", slices), slices
    svc = kubectl("get", "service", "front")
    assert re.search(r"front\s+LoadBalancer\s+\S+\s+" + re.escape(ip) + r"\s+80:3\d{4}/TCP", svc), svc
    described = kubectl("describe", "service", "front")
    assert f"LoadBalancer Ingress:     {ip} (VIP)" in described, described
    assert "IPAllocated" in described, described


class _Cache:
    def __init__(self) -> None:
        self.resource_version = ""
        self.objects: dict[str, JSON] = {}

    def get(self, key: str) -> JSON | None:
        return self.objects.get(key)


def test_write_tracker_holds_a_service_until_the_cache_has_its_writes() -> None:
    cache, tracker = _Cache(), WriteTracker()
    assert not tracker.stale("ns/svc", cache)
    tracker.wrote("ns/svc", "ns/svc-abcde", 10)
    cache.resource_version = "9"
    assert tracker.stale("ns/svc", cache)
    cache.resource_version = "10"
    assert not tracker.stale("ns/svc", cache)
    cache.objects["ns/svc-abcde"] = {"metadata": {"resourceVersion": "10"}}
    tracker.wrote("ns/svc", "ns/svc-abcde", WriteTracker.DELETED)
    assert tracker.stale("ns/svc", cache)
    del cache.objects["ns/svc-abcde"]
    assert not tracker.stale("ns/svc", cache)
    expiring = WriteTracker(ttl=0.0)
    expiring.wrote("ns/svc", "ns/x", 99)
    assert not expiring.stale("ns/svc", cache)
