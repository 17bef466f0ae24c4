"""The process: Go-style flags, CoreDNS's log format, start-up banner, reload checks and signals.

Output matches what ``kubectl logs`` shows for the real image, because the doctor and the chaos
experiments read it: ``.:53``, ``[INFO] plugin/reload: Running configuration SHA512 = …``,
``CoreDNS-1.12.1``, ``linux/amd64, go…, …`` on stdout; a bad Corefile is one line on stderr and
exit 1; a FATAL from a plugin (loop) is ``[FATAL] …`` and exit 1.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import platform
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from clusters.lab.programs import container
from clusters.lab.programs.coredns import COMMIT, GO_VERSION, VERSION
from clusters.lab.programs.coredns.corefile import DEFAULT_PORT, Corefile, CorefileError, parse
from clusters.lab.programs.coredns.plugin import SetupError
from clusters.lab.programs.coredns.plugins import SETUPS
from clusters.lab.programs.coredns.plugins.loop import fatal
from clusters.lab.programs.coredns.server import Instance

log = logging.getLogger(__name__)
DEFAULT_CONF = "Corefile"
LEVELS = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "FATAL"}


class UsageError(Exception):
    """Bad command-line flags (Go's flag package prints the problem and exits 2)."""


@dataclass(frozen=True)
class Flags:
    conf: str = DEFAULT_CONF
    port: int = DEFAULT_PORT
    version: bool = False
    plugins: bool = False


def parse_flags(argv: Sequence[str]) -> Flags:
    """Go ``flag`` syntax: ``-conf X``, ``-conf=X``, ``--conf X``; also -dns.port, -version, -plugins."""
    conf, port, version, plugins = DEFAULT_CONF, DEFAULT_PORT, False, False
    args = list(argv)
    while args:
        raw = args.pop(0)
        if not raw.startswith("-"):
            raise UsageError(f"unexpected argument {raw!r}")
        name, eq, value = raw.lstrip("-").partition("=")
        if name in ("version", "plugins", "quiet"):
            version, plugins = version or name == "version", plugins or name == "plugins"
            continue
        if name not in ("conf", "dns.port", "pidfile"):
            raise UsageError(f"flag provided but not defined: -{name}")
        if not eq:
            if not args:
                raise UsageError(f"flag needs an argument: -{name}")
            value = args.pop(0)
        if name == "conf":
            conf = value
        elif name == "dns.port":
            if not value.isdigit():
                raise UsageError(f'invalid value "{value}" for flag -dns.port: parse error')
            port = int(value)
    return Flags(conf, port, version, plugins)


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if getattr(record, "bare", False):
            return msg
        if record.name.startswith("clusters.lab.controllers"):
            msg = f"plugin/kubernetes: {msg}"
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return f"[{LEVELS.get(record.levelname, record.levelname)}] {msg}"


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Format())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("clusters.lab.controllers", "kubernetes", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retry chatter; the informer reports


def banner(lines: Sequence[str]) -> None:
    for line in lines:
        log.info("%s", line, extra={"bare": True})


def sha512(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


def load(flags: Flags) -> tuple[bytes, Corefile]:
    path = container.container_path(flags.conf)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CorefileError(f"open {flags.conf}: {(err.strerror or str(err)).lower()}") from err
    return data, parse(data.decode("utf-8", "replace"), flags.conf, default_port=flags.port)


class Process:
    def __init__(self, flags: Flags) -> None:
        self.flags = flags
        self.stop = asyncio.Event()
        self.reload_now = asyncio.Event()
        self.instance: Instance | None = None
        self.sha = ""

    async def run(self) -> int:
        try:
            data, corefile = load(self.flags)
            inst = Instance(corefile)
            await inst.start()
        except (CorefileError, SetupError) as err:
            sys.stderr.write(f"{err}\n")
            return 1
        self.instance, self.sha = inst, sha512(data)
        banner(inst.addresses())
        if inst.schedule is not None:
            log.info("plugin/reload: Running configuration SHA512 = %s", self.sha)
        machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        banner([f"CoreDNS-{VERSION}", f"linux/{machine}, {GO_VERSION}, {COMMIT}"])
        loop = asyncio.get_running_loop()
        for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
            loop.add_signal_handler(sig, self._terminate, name)
        loop.add_signal_handler(signal.SIGUSR1, self.reload_now.set)
        watcher = loop.create_task(self._watch())
        await self.stop.wait()
        watcher.cancel()
        if self.instance is not None:
            await self.instance.stop(final=True)
        return 0

    def _terminate(self, name: str) -> None:
        log.info("%s: Shutting down servers then terminating", name)
        self.stop.set()

    async def _watch(self) -> None:
        while not self.stop.is_set():
            inst = self.instance
            wait = inst.schedule.next_wait() if inst is not None and inst.schedule is not None else 3600.0
            try:
                await asyncio.wait_for(self.reload_now.wait(), wait)
            except TimeoutError:
                if inst is None or inst.schedule is None:
                    continue
            self.reload_now.clear()
            await self._check()

    async def _check(self) -> None:
        try:
            data, corefile = load(self.flags)
        except CorefileError as err:
            if not str(err).startswith("open "):
                self._failed(err)
            return
        sha = sha512(data)
        if sha == self.sha:
            return
        log.info("Reloading")
        try:
            new = Instance(corefile)
        except SetupError as err:
            self._failed(err)
            return
        old = self.instance
        if old is not None:
            await old.stop()
        try:
            await new.start()
        except SetupError as err:
            self._failed(err)
            if old is not None:  # roll back, as Caddy does; if even that fails there is no server left
                self.instance = Instance(old.corefile)
                try:
                    await self.instance.start()
                except SetupError as again:
                    fatal(f"Restart of the previous configuration failed: {again}")
            return
        self.instance, self.sha = new, sha
        if new.schedule is not None:
            log.info("plugin/reload: Running configuration SHA512 = %s", sha)
        log.info("Reloading complete")

    def _failed(self, err: Exception) -> None:
        log.error("Restart failed: %s", err)
        log.error("plugin/reload: Corefile changed but reload failed: %s", err)


def main(argv: Sequence[str]) -> int:
    configure_logging()
    try:
        flags = parse_flags(argv)
    except UsageError as err:
        sys.stderr.write(
            f'{err}\nUsage of coredns:\n  -conf string\n\tCorefile to load (default "Corefile")\n'
        )
        return 2
    if flags.version:
        banner([f"CoreDNS-{VERSION}", f"linux/amd64, {GO_VERSION}, {COMMIT}"])
        return 0
    if flags.plugins:
        banner(
            ["Server types:", "  dns", "", "Caddyfile loaders:", "  flag", "  default", "", "Other plugins:"]
        )
        banner([f"  dns.{name}" for name in sorted(SETUPS)])
        return 0
    return asyncio.run(Process(flags).run())
