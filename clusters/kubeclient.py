"""Typed doors into the official ``kubernetes`` client, whose config loaders are untyped."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from kubernetes import config as _config
from kubernetes.client import ApiClient


def api_client(kubeconfig: Path, context: str | None = None) -> ApiClient:
    """An ApiClient for ``kubeconfig`` (and ``context``), independent of global client state."""
    loader: Any = _config.new_client_from_config
    return cast(ApiClient, loader(config_file=str(kubeconfig), context=context))
