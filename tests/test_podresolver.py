"""The lab pods' resolver: resolv.conf search rules, and failing fast like Go on a refused query."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from clusters.lab.programs import podresolver
from clusters.lab.programs.podresolver import LookupError_, _query, _ResolvConf


def test_candidates_follow_search_and_ndots(tmp_path: Path) -> None:
    conf_file = tmp_path / "resolv.conf"
    conf_file.write_text(
        "search ns.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\noptions ndots:5\n"
    )
    conf = _ResolvConf.read(conf_file)
    assert conf.nameservers == ("10.96.0.10",) and conf.ndots == 5
    assert conf.candidates("web") == [
        "web.ns.svc.cluster.local.",
        "web.svc.cluster.local.",
        "web.cluster.local.",
        "web.",
    ]
    assert conf.candidates("a.b.c.d.e.f")[0] == "a.b.c.d.e.f."
    assert conf.candidates("web.") == ["web."]


@pytest.fixture
def dns_server() -> Iterator[int]:
    """A UDP DNS server on loopback answering web.example. with 10.1.2.3, NXDOMAIN otherwise."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            q = DNSRecord.parse(data)
            reply = q.reply()
            if str(q.q.qname) == "web.example." and q.q.qtype == QTYPE.A:
                reply.add_answer(RR("web.example.", QTYPE.A, rdata=A("10.1.2.3"), ttl=30))
            elif str(q.q.qname) != "web.example.":
                reply.header.rcode = 3
            sock.sendto(reply.pack(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()


def test_query_answers_and_nxdomain(dns_server: int) -> None:
    assert _query(("127.0.0.1",), "web.example.", "A", port=dns_server) == ["10.1.2.3"]
    assert _query(("127.0.0.1",), "nope.example.", "A", port=dns_server) == []


def test_refused_query_fails_fast_with_gos_wording(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    closed = probe.getsockname()[1]
    probe.close()  # nothing listens there now: the kernel answers ICMP port unreachable
    monkeypatch.setattr(podresolver, "QUERY_TIMEOUT", 30.0)  # a timeout would say "i/o timeout"
    with pytest.raises(LookupError_) as err:
        _query(("127.0.0.1",), "web.example.", "A", port=closed)
    assert err.value.why.endswith(f"->127.0.0.1:{closed}: read: connection refused")
