"""Per-test namespaces: named after the run and the test, labelled so a sweep can always find them.

The name ``kc-<run-id>-<test>`` lets a person map a namespace on a shared cluster back to the run
and the test that made it; a short hash of the test id keeps parametrised tests apart after the
name is cut to the 63 characters a namespace name may have.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from clusters.handle import Cluster
from clusters.labels import run_labels

log = logging.getLogger(__name__)

MAX_NAME = 63
API_TIMEOUT = 30.0


def namespace_name(run_id: str, test_name: str, test_id: str) -> str:
    """``kc-<run_id>-<slug of test_name>-<4 hex of test_id>``, a valid DNS-1123 label."""
    digest = hashlib.sha256(test_id.encode()).hexdigest()[:4]
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower().removeprefix("test_")).strip("-") or "test"
    prefix = f"kc-{run_id.lower()}-"
    room = MAX_NAME - len(prefix) - len(digest) - 1
    slug = slug[: max(room, 1)].rstrip("-") or "t"
    return f"{prefix}{slug}-{digest}"


def create(cluster: Cluster, name: str, run_id: str) -> None:
    from kubernetes import client

    metadata = {"name": name, "labels": run_labels(run_id)}
    body: Any = {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}
    client.CoreV1Api(cluster.api_client).create_namespace(body, _request_timeout=API_TIMEOUT)
    log.info("created namespace %s", name)


def delete(cluster: Cluster, name: str) -> bool:
    """Delete ``name`` without waiting for it to go; False when it was already gone."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        client.CoreV1Api(cluster.api_client).delete_namespace(
            name, propagation_policy="Background", _request_timeout=API_TIMEOUT
        )
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    log.info("deleted namespace %s", name)
    return True
