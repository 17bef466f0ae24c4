"""Helpers for the lab CoreDNS tests: free loopback ports, program processes, deadline polls."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import dns.message
import dns.query
import dns.rcode

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    """A loopback port free for both UDP and TCP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free loopback port for UDP+TCP")


class Program:
    """A lab program run as ``python -m <module> …``; output goes to a file; always killed on exit."""

    def __init__(self, module: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._fh = log.open("wb")
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env=full_env,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._fh.close()


@contextlib.contextmanager
def program(module: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[Program]:
    p = Program(module, args, log, env)
    try:
        yield p
    finally:
        p.stop()


def poll(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Call ``fn`` until it returns something truthy, or fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            got = fn()
            if got:
                return got
            last = got
        except Exception as err:  # the thing polled for may fail until it is up
            last = err
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def query(
    port: int, name: str, rdtype: str, *, tcp: bool = False, timeout: float = 3.0
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=timeout)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=timeout)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()


def answers(msg: dns.message.Message) -> list[str]:
    """Answer rdata as text, sorted (``10.96.0.5``, ``0 100 80 web.ns.svc.cluster.local.``)."""
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


def rcode(msg: dns.message.Message) -> str:
    return dns.rcode.to_text(msg.rcode())
