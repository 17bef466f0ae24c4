"""Which cluster and which run an activity works on, from Chaos Toolkit's world of env and dicts.

Activities are plain functions that Chaos Toolkit calls with JSON arguments, so they cannot be
handed a Cluster. They find it here: the handle the runner (or the sweep) installed with
:func:`use_cluster`, else one attached from ``configuration['kubeconfig']``/``KUBECONFIG`` (what
`chaos run` gives). The run id names everything a fault creates: ``KNETCHECK_RUN_ID`` if a parent
set it, else the cluster's, else one generated once per process and exported, so every activity
of one `chaos run` (and anything it spawns) shares it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from clusters.handle import Cluster
from clusters.labels import env_run_id, new_run_id

log = logging.getLogger(__name__)

RUN_ID_ENV = "KNETCHECK_RUN_ID"
Configuration = Mapping[str, Any] | None

_lock = threading.Lock()
_installed: list[Cluster] = []
_attached: dict[tuple[str, str | None, str], Cluster] = {}


@contextlib.contextmanager
def use_cluster(cluster: Cluster) -> Iterator[Cluster]:
    """Make ``cluster`` the one every activity in this process uses (the runner, the sweep)."""
    with _lock:
        _installed.append(cluster)
    try:
        yield cluster
    finally:
        with _lock:
            _installed.remove(cluster)


def cluster_for(configuration: Configuration = None) -> Cluster:
    """The cluster an activity acts on: the installed handle, else attached from a kubeconfig."""
    with _lock:
        if _installed:
            return _installed[-1]
    conf = dict(configuration or {})
    from clusters.attach import attach
    from clusters.options import kubeconfig_path

    path = kubeconfig_path(str(conf["kubeconfig"]) if conf.get("kubeconfig") else None, os.environ)
    context = str(conf["context"]) if conf.get("context") else None
    key = (str(path), context, os.environ.get("KNETCHECK_LAB_DIR", ""))
    with _lock:
        found = _attached.get(key)
    if found is None:
        found = attach(path, context)
        with _lock:
            _attached[key] = found
        log.info("attached to %s cluster %r through %s", found.provider, found.name, path)
    return found


def run_id(configuration: Configuration = None) -> str:
    """This run's id; generated once per process (and exported) when nobody gave one."""
    given = env_run_id()
    if given:
        return given
    with _lock:
        if _installed and _installed[-1].run_id:
            return _installed[-1].run_id
        generated = os.environ.setdefault(RUN_ID_ENV, new_run_id())
    return generated
