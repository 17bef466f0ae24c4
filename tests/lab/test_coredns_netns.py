"""kubeadm's Corefile byte for byte, on the real ports (53, 8080, 8181, 9153), in a network namespace.

Needs root: a private ``kncl-t-<hex>-dns`` namespace gives the program port 53 and its own
127.0.0.0/8 without touching the host. The container root holds the Corefile at
/etc/coredns/Corefile and a resolv.conf, as the kubelet lays them out. The API is deliberately
unreachable (the kubernetes plugin starts unsynced after 5 s, like CoreDNS); what is checked is
forwarding through /etc/resolv.conf and the loop the classic ``nameserver 127.0.0.1`` node
resolv.conf causes.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest

from clusters.lab.netns import list_netns, socket_in_netns
from clusters.proc import run
from tests.lab.coredns_support import REPO, answers, poll

pytestmark = pytest.mark.lab

KUBEADM = Path("/work/shared/reference/configs/dns/Corefile.kubeadm")
FATAL_UNBOUND = re.compile(
    r'^\[FATAL\] plugin/loop: Loop \(127\.0\.0\.1:\d+ -> :53\) detected for zone "\.", '
    r'see https://coredns\.io/plugins/loop#troubleshooting\. Query: "HINFO \d+\.\d+\."$',
    re.M,
)


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (network namespaces)")
    if not KUBEADM.exists():
        pytest.skip(f"reference Corefile {KUBEADM} is not on this machine")
    name = f"kncl-t-{secrets.token_hex(3)}-dns"
    run(["ip", "netns", "add", name], timeout=10)
    try:
        run(["ip", "-n", name, "link", "set", "lo", "up"], timeout=10)
        yield name
    finally:
        run(["ip", "netns", "del", name], timeout=10, check=False)
        assert name not in list_netns()


class InNetns:
    """A program started with ``ip netns exec`` (which execs, so the PID is the program's)."""

    def __init__(self, netns: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, *argv],
            cwd=REPO,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._fh.close()


def _rootfs(tmp_path: Path, nameserver: str) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc" / "coredns").mkdir(parents=True)
    shutil.copyfile(KUBEADM, root / "etc" / "coredns" / "Corefile")
    (root / "etc" / "resolv.conf").write_text(f"nameserver {nameserver}\n")
    return root


def _env(root: Path) -> dict[str, str]:
    # an API address nobody answers on inside the namespace: the plugin starts unsynced
    return {
        "KNETCHECK_ROOTFS": str(root),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": "1",
    }


def _query(netns: str, name: str) -> dns.message.Message:
    sock = socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        return dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=53, timeout=2, sock=sock)
    finally:
        sock.close()


def _http(netns: str, port: int, path: str) -> str:
    sock = socket_in_netns(netns)
    try:
        sock.settimeout(2)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data.decode(errors="replace")
    finally:
        sock.close()


def test_kubeadm_corefile_unchanged_forwards_via_resolv_conf(netns: str, tmp_path: Path) -> None:
    root = _rootfs(tmp_path, "::1")  # not 127.0.0.x:53: CoreDNS binds 0.0.0.0:53, as the real one would
    up = InNetns(
        netns, ["-m", "clusters.lab.programs.upstream", "--listen", "[::1]:53"], tmp_path / "up.log", {}
    )
    core = InNetns(
        netns,
        ["-m", "clusters.lab.programs.coredns", "-conf", "/etc/coredns/Corefile"],
        tmp_path / "cd.log",
        _env(root),
    )
    try:
        poll(lambda: "CoreDNS-" in core.output(), 20, "the start-up banner")
        assert ".:53" in core.output().splitlines()
        poll(
            lambda: answers(_query(netns, "upstream.lab.test")) == ["172.18.255.253"],
            10,
            "a forwarded answer",
        )
        assert _http(netns, 8080, "/health").endswith("OK")
        ready = _http(netns, 8181, "/ready")
        assert " 503 " in ready.splitlines()[0] and ready.endswith("kubernetes")
        assert "coredns_build_info" in _http(netns, 9153, "/metrics")
        assert core.proc.poll() is None, core.output()
    finally:
        core.stop()
        up.stop()


def test_kubeadm_corefile_with_loopback_resolv_conf_halts_with_loop(netns: str, tmp_path: Path) -> None:
    """The classic cause: the node's resolv.conf names a local address, so CoreDNS forwards to itself."""
    root = _rootfs(tmp_path, "127.0.0.1")
    core = InNetns(
        netns,
        ["-m", "clusters.lab.programs.coredns", "-conf", "/etc/coredns/Corefile"],
        tmp_path / "cd.log",
        _env(root),
    )
    try:
        assert core.proc.wait(timeout=20) == 1
        assert FATAL_UNBOUND.search(core.output()), core.output()
    finally:
        core.stop()
