"""The nginx child process: test a configuration, start, reload, stop — all inside a private prefix.

nginx always gets ``-p <prefix> -c <prefix>/nginx.conf -e stderr`` so nothing of the host's
``/etc/nginx`` or ``/var/log/nginx`` is read or written. A new configuration is written next to
the live one, checked with ``nginx -t`` and only then moved into place and loaded with SIGHUP
(what ``nginx -s reload`` sends); a failing one leaves the running configuration untouched.
Stopping is ``SIGQUIT`` (``nginx -s quit``, graceful), then SIGTERM, then SIGKILL of the master
and of every worker it had, by pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from clusters.errors import CommandFailed
from clusters.proc import run

log = logging.getLogger(__name__)

NGINX = "/usr/sbin/nginx"
CONF = "nginx.conf"
PR_SET_PDEATHSIG = 1


class ConfigRejected(Exception):
    """``nginx -t`` failed; the message is nginx's own output."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """The kernel sends nginx SIGTERM if the controller dies, so no orphan survives a SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class Nginx:
    def __init__(self, prefix: Path, binary: str = NGINX) -> None:
        self.prefix = prefix
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None
        self.workers_seen: set[int] = set()
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)

    @property
    def conf(self) -> Path:
        return self.prefix / CONF

    def _args(self, conf: Path) -> list[str]:
        return [self.binary, "-p", f"{self.prefix}/", "-c", str(conf), "-e", "stderr"]

    def version(self) -> str:
        res = run([self.binary, "-v"], timeout=10, check=False)
        return (res.stderr or res.stdout).strip().removeprefix("nginx version: ")

    def test(self, text: str) -> Path:
        """Write ``text`` as a candidate and ``nginx -t`` it; :class:`ConfigRejected` on failure."""
        candidate = self.prefix / f"{CONF}.new"
        candidate.write_text(text)
        try:
            run([*self._args(candidate), "-t", "-q"], timeout=30)
        except CommandFailed as err:
            raise ConfigRejected(str(err)) from None
        return candidate

    def install(self, candidate: Path) -> None:
        candidate.replace(self.conf)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*self._args(self.conf), "-g", "daemon off; master_process on;"],
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        log.info("Starting NGINX process")

    def reload(self, timeout: float = 10.0) -> bool:
        """SIGHUP, then wait until the old workers stop accepting; False if they never did.

        nginx starts the new workers, sleeps 100 ms, then tells the old ones to quit: in that
        window both generations accept connections. Waiting it out means that once we say
        "reloaded", every new connection sees the new configuration.
        """
        if not self.running():
            raise RuntimeError("nginx is not running")
        assert self.proc is not None
        old = set(active_workers(self.proc.pid))
        self.workers_seen.update(old)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running():
            now = set(active_workers(self.proc.pid))
            if now and not now & old:
                self._remember_workers()
                return True
            time.sleep(0.02)
        log.warning("nginx did not replace its workers within %.0fs after SIGHUP", timeout)
        return False

    def _remember_workers(self) -> None:
        if self.proc is not None:
            self.workers_seen.update(children_of(self.proc.pid))

    def stop(self, grace: float = 10.0) -> None:
        """Graceful quit, then force; afterwards no master or worker of ours is left."""
        proc = self.proc
        if proc is None:
            return
        self._remember_workers()
        for sig, wait in ((signal.SIGQUIT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            proc.send_signal(sig)
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                log.warning("nginx did not exit after %s", sig.name)
        deadline = time.monotonic() + 5.0
        for pid in sorted(self.workers_seen):
            while alive(pid) and _is_nginx(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(pid) and _is_nginx(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.proc = None


def active_workers(master: int) -> list[int]:
    """Workers of ``master`` that still accept connections (not "worker process is shutting down")."""
    found = []
    for pid in children_of(master):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if alive(pid) and "worker process" in title and "shutting down" not in title:
            found.append(pid)
    return found


def _is_nginx(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "nginx"
    except OSError:
        return False
