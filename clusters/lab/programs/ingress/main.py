"""The process: klog-style output, the start banner, where the files go, signals, exit codes.

ingress-nginx logs with klog's printf form (``W0320 20:15:25.141987  7 controller.go:1354] Using
default certificate``) and, for a few lines, the structured form (``"updating Ingress status"
namespace="…"``); the doctor and the chaos experiments grep these, so both are reproduced.
The nginx files live in ``--conf-dir``, else the container's ``/etc/nginx`` (under
``KNETCHECK_ROOTFS``), else a private temporary directory: never the host's ``/etc/nginx``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from clusters.errors import UsageProblem
from clusters.lab.controllers.client import Kube
from clusters.lab.kubelet.klog import format_line
from clusters.lab.programs import container
from clusters.lab.programs.ingress import flags as flagmod
from clusters.lab.programs.ingress.controller import Controller
from clusters.lab.programs.ingress.nginx import Nginx

log = logging.getLogger(__name__)
RELEASE = "v1.15.1"


class KlogHandler(logging.Handler):
    """Records as klog lines on stderr; ``extra={"kv": {...}}`` selects the structured form."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sev = (
                "E" if record.levelno >= logging.ERROR else "W" if record.levelno >= logging.WARNING else "I"
            )
            source = f"{record.module}.py:{record.lineno}"
            now = datetime.now(UTC)
            kv: dict[str, Any] | None = getattr(record, "kv", None)
            if kv is not None:
                line = format_line(sev, source, record.getMessage(), now, os.getpid(), **kv)
            else:
                stamp = now.strftime("%m%d %H:%M:%S.%f")
                line = f"{sev}{stamp} {os.getpid():7d} {source}] {record.getMessage()}\n"
            sys.stderr.write(line)
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def configure_logging() -> None:
    root = logging.getLogger()
    root.handlers[:] = [KlogHandler()]
    root.setLevel(logging.INFO)
    for noisy in ("clusters.lab.controllers", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def banner(nginx_version: str) -> None:
    rule = "-" * 79
    sys.stdout.write(
        f"{rule}\nNGINX Ingress controller\n  Release:       {RELEASE} (knetcheck lab)\n"
        f"  Build:         knetcheck\n  Repository:    https://github.com/kubernetes/ingress-nginx\n"
        f"  nginx version: {nginx_version}\n\n{rule}\n\n"
    )
    sys.stdout.flush()


def conf_dir(flags: flagmod.Flags) -> tuple[Path, bool]:
    """The private nginx directory and whether it is a temporary one to delete at exit."""
    if flags.conf_dir:
        path = container.container_path(flags.conf_dir)
    elif os.environ.get(container.ROOTFS_ENV):
        path = container.container_path("/etc/nginx")
    else:
        return Path(tempfile.mkdtemp(prefix="kncl-ingress-")), True
    path.mkdir(parents=True, exist_ok=True)
    return path, False


def main(argv: Sequence[str]) -> int:
    configure_logging()
    try:
        flags = flagmod.parse(argv)
    except UsageProblem as err:
        log.error("%s", err)
        return 2
    for word in flags.ignored:
        log.info("lab: ignoring %s (not implemented by the lab ingress controller)", word)
    stop = threading.Event()
    running: list[Controller] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("Received %s, shutting down", signal.Signals(signum).name)
        stop.set()
        for ctl in running:
            ctl.dirty.set()  # wake the sync loop now rather than at its next tick

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    path, temporary = conf_dir(flags)
    try:
        nginx = Nginx(path)
        banner(nginx.version())
        try:
            kube = Kube(container.api_client(flags.kubeconfig or None))
        except Exception as err:  # a bad kubeconfig, no in-cluster env: one line, exit 1
            log.error("Error while initiating a connection to the Kubernetes API server: %s", err)
            return 1
        controller = Controller(flags, kube, path, nginx)
        running.append(controller)
        rc = controller.run(stop)
        log.info("Exiting with %d", rc)
        return rc
    finally:
        if temporary:
            shutil.rmtree(path, ignore_errors=True)
