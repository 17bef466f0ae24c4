"""Lab benchmark: `lab up` to a usable cluster, pod start latency over N agnhost pods, memory.

Run as root: `.venv/bin/python benchmarks/lab_bench.py [--pods 30] [--runs 3]`. Each run starts a
fresh lab under its own root and name prefix and stops it afterwards. Latency is measured per pod
from the API create call returning to the pod's Ready condition as seen by a watch; memory is the
summed RSS (from /proc) of the lab daemon and every process in the lab's network namespaces, with
the pods running. Numbers go to docs/benchmarks.md by hand, with the machine's load noted.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from kubernetes import client as k
from kubernetes import watch

from clusters.kubeclient import api_client
from clusters.lab import control
from clusters.lab.netns import list_netns
from clusters.lab.node.underlay import owned_by, processes_in_netns

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def one_run(pods: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="knetcheck-bench-", dir="/run"))
    prefix = f"kncl-t-{secrets.token_hex(3)}-"
    try:
        t0 = time.monotonic()
        status = control.up(control.LabConfig(root=root, nodes=3, prefix=prefix))
        up = time.monotonic() - t0
        core = k.CoreV1Api(api_client(status.kubeconfig))
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
        created: dict[str, float] = {}
        ready: dict[str, float] = {}
        w = watch.Watch()
        start = time.monotonic()
        for i in range(pods):
            name = f"p{i}"
            core.create_namespaced_pod(
                "bench",
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name},
                    "spec": {
                        "containers": [
                            {
                                "name": "c",
                                "image": AGNHOST,
                                "args": ["netexec"],
                                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                            }
                        ]
                    },
                },
            )
            created[name] = time.monotonic()
        for event in w.stream(core.list_namespaced_pod, "bench", timeout_seconds=120):
            pod = event["object"]
            conds = pod.status.conditions or []
            if pod.metadata.name not in ready and any(
                c.type == "Ready" and c.status == "True" for c in conds
            ):
                ready[pod.metadata.name] = time.monotonic()
                if len(ready) == pods:
                    w.stop()
        all_ready = max(ready.values()) - start
        lat = sorted(ready[n] - created[n] for n in ready)
        pids = {status.pid or 0}
        for ns in list_netns():
            if owned_by(prefix, ns):
                pids.update(processes_in_netns(ns))
        mem = sum(rss_kib(p) for p in pids) / 1024
        return {
            "up": up,
            "all_ready": all_ready,
            "p50": statistics.median(lat),
            "p95": lat[max(0, int(len(lat) * 0.95) - 1)],
            "max": lat[-1],
            "mem_mib": mem,
            "procs": float(len(pids)),
        }
    finally:
        control.down(root, prefix=prefix)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = [one_run(args.pods) for _ in range(args.runs)]
    for key in results[0]:
        values = sorted(r[key] for r in results)
        print(
            f"{key:10s} min {values[0]:8.2f}  median {statistics.median(values):8.2f}  max {values[-1]:8.2f}"
        )


if __name__ == "__main__":
    main()
