"""The kubelet's own log on the node, in klog's structured format.

The runbooks say ``journalctl -u kubelet | grep CNI``; on the lab the node's
``/var/log/kubelet.log`` carries the same lines a kind node's journal would (the node shell or
the doctor reads that file), e.g.::

    E0102 03:04:05.123456    4242 kubelet.go:3002] "Container runtime network not ready" networkReady="..."
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

LOG_PATH = "var/log/kubelet.log"


def _quote(value: object) -> str:
    """Go's %q for the strings we log (JSON escaping matches it for printable text)."""
    return json.dumps(str(value), ensure_ascii=False)


def format_line(severity: str, source: str, message: str, when: datetime, pid: int, **kv: object) -> str:
    stamp = when.astimezone(UTC).strftime("%m%d %H:%M:%S.%f")
    pairs = "".join(f" {k}={_quote(v)}" for k, v in kv.items())
    return f"{severity[0]}{stamp} {pid:7d} {source}] {_quote(message)}{pairs}\n"


class KlogFile:
    """Append-only klog writer; safe to share between the kubelet's threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _write(self, severity: str, source: str, message: str, **kv: object) -> None:
        line = format_line(severity, source, message, datetime.now(UTC), os.getpid(), **kv)
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a") as fh:
                    fh.write(line)
            except OSError:
                pass  # the node tree is gone (lab down): nothing to log into

    def info(self, source: str, message: str, **kv: object) -> None:
        self._write("I", source, message, **kv)

    def error(self, source: str, message: str, **kv: object) -> None:
        self._write("E", source, message, **kv)
