"""The run-id label every object we create carries, so a sweep can find a crashed run's leftovers."""

from __future__ import annotations

import os
import secrets
import time

RUN_ID_LABEL = "knetcheck.io/run-id"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "knetcheck"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"


def new_run_id() -> str:
    """A short, sortable, label-safe id: time first, so older runs' leftovers are easy to spot."""
    return f"r{int(time.time()):x}{secrets.token_hex(2)}"


def run_labels(run_id: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, RUN_ID_LABEL: run_id}


def env_run_id() -> str | None:
    """A run id handed down by a parent process (the Makefile, `chaos run`), if any."""
    return os.environ.get("KNETCHECK_RUN_ID") or None
