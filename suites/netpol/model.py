"""The upstream NetworkPolicy matrix: namespaces x, y, z x pods a, b, c, every name derived from the model.

As in kubernetes ``test/e2e/network/netpol/model.go``: namespaces labelled ``ns=<x>``, pods labelled
``pod=<a>``, one container per port/protocol named ``cont-<port>-<proto>`` running agnhost
``serve-hostname`` (``porter`` for SCTP) with a named port ``serve-<port>-<proto>``, and a Service
``s-<ns>-<pod>`` per pod. Namespaces get the run id as a suffix so runs never collide, and every
object carries the run labels so a sweep finds a crashed run's leftovers.

One addition: a ``netexec`` container on :8080 in each pod, the probe control channel (see
:mod:`suites.probe`). Probes leave from the SOURCE pod itself, so the matrix traffic is the real
thing; only the API server's leg to :8080 is extra, and :func:`probe_channel_policies` opens it
on exactly the pods that are already ingress-isolated, which changes no matrix cell.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clusters.errors import UsageProblem
from clusters.labels import run_labels
from suites.netpol.oracle import Direction, NamespaceInfo, Oracle, PodInfo
from suites.probe import CONTROL_PORT, PodRef, ProbeJob, ProbeKind
from suites.truthtable import PortProtocol, TruthTable

AGNHOST_IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
NETEXEC_CONTAINER = "netexec"
NS_LABEL = "ns"
POD_LABEL = "pod"
METADATA_NAME_LABEL = "kubernetes.io/metadata.name"
"""Set on every namespace by the API server; the oracle must see it, since policies may select on it."""
PROBE_CHANNEL_POLICY = "knetcheck-probe-channel"


@dataclass(frozen=True)
class Container:
    port: int
    protocol: str

    @property
    def name(self) -> str:
        return f"cont-{self.port}-{self.protocol.lower()}"

    @property
    def port_name(self) -> str:
        return f"serve-{self.port}-{self.protocol.lower()}"

    def manifest(self, image: str) -> dict[str, Any]:
        port = {"containerPort": self.port, "name": self.port_name, "protocol": self.protocol}
        base: dict[str, Any] = {
            "name": self.name,
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "ports": [port],
        }
        if self.protocol == "SCTP":
            return {
                **base,
                "command": ["/agnhost", "porter"],
                "env": [{"name": f"SERVE_SCTP_PORT_{self.port}", "value": "foo"}],
            }
        flag = "--tcp" if self.protocol == "TCP" else "--udp"
        return {
            **base,
            "command": ["/agnhost", "serve-hostname", flag, "--http=false", "--port", str(self.port)],
        }


@dataclass(frozen=True)
class ModelPod:
    namespace: str
    """The model's namespace name (``x``), not the cluster's."""
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Model:
    run_id: str
    namespaces: tuple[str, ...] = ("x", "y", "z")
    pod_names: tuple[str, ...] = ("a", "b", "c")
    ports: tuple[int, ...] = (80, 81)
    protocols: tuple[str, ...] = ("TCP", "UDP")
    image: str = AGNHOST_IMAGE

    def __post_init__(self) -> None:
        if not self.run_id or not self.run_id.replace("-", "").isalnum():
            raise ValueError(f"run id {self.run_id!r} must be letters, digits and dashes")
        bad = sorted(set(self.protocols) - {"TCP", "UDP", "SCTP"})
        if bad:
            raise ValueError(f"unknown protocol(s) {', '.join(bad)}; use TCP, UDP, SCTP")
        if CONTROL_PORT in self.ports:
            raise ValueError(f"port {CONTROL_PORT} is the probe control channel; pick other matrix ports")

    # ---- names
    @property
    def suffix(self) -> str:
        return self.run_id.lower()

    def ns_name(self, namespace: str) -> str:
        """The cluster's name for model namespace ``namespace``: ``x-<run id>``."""
        return f"{namespace}-{self.suffix}"

    def service_name(self, pod: ModelPod) -> str:
        return f"s-{self.ns_name(pod.namespace)}-{pod.name}"

    def pods(self) -> list[ModelPod]:
        return [ModelPod(ns, p) for ns in self.namespaces for p in self.pod_names]

    def pod_keys(self) -> list[str]:
        return [p.key for p in self.pods()]

    def cluster_key(self, key: str) -> str:
        """``x/a`` -> ``x-<run id>/a`` (the oracle's and the API's names)."""
        ns, _, pod = key.partition("/")
        return f"{self.ns_name(ns)}/{pod}"

    def model_key(self, cluster_key: str) -> str:
        ns, _, pod = cluster_key.partition("/")
        return f"{ns.removesuffix('-' + self.suffix)}/{pod}"

    def containers(self) -> list[Container]:
        return [Container(port, proto) for port in self.ports for proto in self.protocols]

    def port_protocols(self) -> list[PortProtocol]:
        return [PortProtocol(c.port, c.protocol) for c in self.containers()]

    def source(self, key: str) -> PodRef:
        ns, _, pod = key.partition("/")
        return PodRef(self.ns_name(ns), pod, NETEXEC_CONTAINER)

    # ---- manifests
    def namespace_labels(self, namespace: str) -> dict[str, str]:
        return {**run_labels(self.run_id), NS_LABEL: namespace, METADATA_NAME_LABEL: self.ns_name(namespace)}

    def namespace_manifest(self, namespace: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": self.ns_name(namespace), "labels": self.namespace_labels(namespace)},
        }

    def pod_labels(self, pod: ModelPod) -> dict[str, str]:
        return {**run_labels(self.run_id), POD_LABEL: pod.name}

    def pod_manifest(self, pod: ModelPod) -> dict[str, Any]:
        netexec = {
            "name": NETEXEC_CONTAINER,
            "image": self.image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["/agnhost", "netexec", f"--http-port={CONTROL_PORT}", "--udp-port=-1"],
            "ports": [{"containerPort": CONTROL_PORT, "name": "probe-http", "protocol": "TCP"}],
        }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod.name,
                "namespace": self.ns_name(pod.namespace),
                "labels": self.pod_labels(pod),
            },
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [*(c.manifest(self.image) for c in self.containers()), netexec],
            },
        }

    def service_manifest(self, pod: ModelPod) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": self.service_name(pod),
                "namespace": self.ns_name(pod.namespace),
                "labels": run_labels(self.run_id),
            },
            "spec": {
                "selector": {POD_LABEL: pod.name},
                "ports": [
                    {"name": c.port_name, "port": c.port, "targetPort": c.port, "protocol": c.protocol}
                    for c in self.containers()
                ],
            },
        }

    def manifests(self) -> list[dict[str, Any]]:
        """Namespaces first, then each pod and its Service: the order to apply them in."""
        objs = [self.namespace_manifest(ns) for ns in self.namespaces]
        for pod in self.pods():
            objs += [self.pod_manifest(pod), self.service_manifest(pod)]
        return objs

    # ---- expectations
    def oracle(
        self,
        pod_ips: Mapping[str, str],
        policies: Iterable[Mapping[str, Any]],
        *,
        pod_labels: Mapping[str, Mapping[str, str]] | None = None,
        namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
        allow_loopback: bool = True,
    ) -> Oracle:
        """An oracle over this model's pods (cluster names). ``pod_ips`` is keyed by model key;
        label overrides (by model key / model namespace) follow tests that relabel objects."""
        namespaces = [
            NamespaceInfo(self.ns_name(ns), (namespace_labels or {}).get(ns, self.namespace_labels(ns)))
            for ns in self.namespaces
        ]
        named = {c.port_name: (c.port, c.protocol) for c in self.containers()}
        named["probe-http"] = (CONTROL_PORT, "TCP")
        pods = [
            PodInfo(
                self.ns_name(p.namespace),
                p.name,
                (pod_labels or {}).get(p.key, self.pod_labels(p)),
                pod_ips.get(p.key, ""),
                named,
            )
            for p in self.pods()
        ]
        return Oracle(namespaces, pods, policies, allow_loopback=allow_loopback)

    def expected(self, oracle: Oracle) -> dict[PortProtocol, TruthTable]:
        """Per port/protocol, the oracle's table with model keys (``x/a``) for short matrices."""
        return {pp: self.expected_table(oracle, pp) for pp in self.port_protocols()}

    def expected_table(self, oracle: Oracle, pp: PortProtocol) -> TruthTable:
        keys = self.pod_keys()
        return TruthTable.from_function(
            keys,
            keys,
            lambda s, d: oracle.allowed(self.cluster_key(s), self.cluster_key(d), pp.port, pp.protocol),
        )

    def jobs(
        self,
        pod_ips: Mapping[str, str],
        *,
        timeout: float = 1.0,
        froms: Sequence[str] | None = None,
        tos: Sequence[str] | None = None,
    ) -> dict[tuple[PortProtocol, str, str], ProbeJob]:
        """One connect probe per (port/protocol, from, to), to the target's pod IP."""
        return {
            (pp, s, d): ProbeJob(self.source(s), pod_ips[d], pp.port, pp.protocol, ProbeKind.CONNECT, timeout)
            for pp in self.port_protocols()
            for s in (froms or self.pod_keys())
            for d in (tos or self.pod_keys())
        }


def probe_channel_policies(model: Model, oracle: Oracle) -> list[dict[str, Any]]:
    """Policies opening TCP :8080 (the probe control channel) on every pod already ingress-isolated.

    Selecting only isolated pods and allowing only a port outside the matrix, they change no
    matrix cell (NetworkPolicy is a union); selecting an unisolated pod would isolate it, so the
    set is recomputed whenever the policies under test change. ipBlock 0.0.0.0/0 and ::/0 admit
    the API server's node address on CNIs that match node IPs with ipBlock.
    """
    out = []
    for ns in model.namespaces:
        pods = [oracle.pod(model.cluster_key(p.key)) for p in model.pods() if p.namespace == ns]
        isolated = {p.labels.get(POD_LABEL) for p in pods if oracle.isolated(p, Direction.INGRESS)}
        if not isolated:
            continue
        open_ = {p.labels.get(POD_LABEL) for p in pods if not oracle.isolated(p, Direction.INGRESS)}
        if None in isolated or isolated & open_:
            raise UsageProblem(
                f"namespace {model.ns_name(ns)}: the probe-channel policy selects pods by their "
                f"{POD_LABEL!r} label, which must stay unique per pod; keep it when relabelling pods"
            )
        values = sorted(str(v) for v in isolated)
        out.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {
                    "name": PROBE_CHANNEL_POLICY,
                    "namespace": model.ns_name(ns),
                    "labels": run_labels(model.run_id),
                },
                "spec": {
                    "podSelector": {
                        "matchExpressions": [{"key": POD_LABEL, "operator": "In", "values": values}]
                    },
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {
                            "from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}],
                            "ports": [{"protocol": "TCP", "port": CONTROL_PORT}],
                        }
                    ],
                },
            }
        )
    return out
