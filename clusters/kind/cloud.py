"""cloud-provider-kind as a managed child process: LoadBalancer Services and Ingress on kind.

It is a host process that serves every kind cluster (reference §1.5, §1.6), so one instance is
shared by the clusters one provider holds, and it is stopped on every path: at release, when
acquire fails, and at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import subprocess
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

BINARY = "cloud-provider-kind"


class CloudProviderKind:
    """Starts the binary once, tracks which clusters use it, stops it when the last one goes."""

    def __init__(self, log_path: Path, settle: float = 2.0, stop_timeout: float = 10.0):
        self._log_path = log_path
        self._settle = settle
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._users: set[str] = set()

    @staticmethod
    def available() -> bool:
        return shutil.which(BINARY) is not None

    def attach(self, cluster: str) -> bool:
        """Make sure it runs for ``cluster``; False when it is absent or exits at once."""
        if self._proc is None:
            if not self.available():
                return False
            if not self._start():
                return False
        self._users.add(cluster)
        return True

    def _start(self) -> bool:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self._log_path.open("ab")
        proc = subprocess.Popen(
            [BINARY], stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self._proc = proc
        atexit.register(self._stop)
        try:
            code = proc.wait(timeout=self._settle)
        except subprocess.TimeoutExpired:
            log.info("started %s (pid %d), log %s", BINARY, proc.pid, self._log_path)
            return True
        log.warning("%s exited at once with code %s; see %s", BINARY, code, self._log_path)
        self._stop()
        return False

    def detach(self, cluster: str) -> None:
        self._users.discard(cluster)
        if not self._users:
            self._stop()

    def stop(self) -> None:
        self._users.clear()
        self._stop()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=self._stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.info("stopped %s", BINARY)
        if self._log is not None:
            self._log.close()
            self._log = None
        atexit.unregister(self._stop)
