"""The Corefile parser: kubeadm's real Corefiles load unchanged; bad ones fail with CoreDNS's words."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusters.lab.programs.coredns.corefile import CorefileError, ServerKey, parse
from clusters.lab.programs.coredns.plugin import SetupContext, SetupError
from clusters.lab.programs.coredns.plugins.cache import Cache
from clusters.lab.programs.coredns.plugins.forward import Forward
from clusters.lab.programs.coredns.server import Instance

REFERENCE = Path("/work/shared/reference/configs/dns")
KUBEADM = ("Corefile.kubeadm", "Corefile.kubeadm-pre-1.32")


def _reference(name: str) -> str:
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"reference Corefile {path} is not on this machine")
    return path.read_text()


@pytest.mark.parametrize("name", KUBEADM)
def test_kubeadm_corefile_structure(name: str) -> None:
    cf = parse(_reference(name), "/etc/coredns/Corefile")
    assert len(cf.blocks) == 1
    block = cf.blocks[0]
    assert block.keys == (ServerKey(".", 53),)
    assert [d.name for d in block.directives] == [
        "errors", "health", "ready", "kubernetes", "prometheus", "forward", "cache", "loop", "reload",
        "loadbalance",
    ]  # fmt: skip
    health = block.find("health")[0]
    assert [(o.name, o.args) for o in health.block] == [("lameduck", ("5s",))]
    k8s = block.find("kubernetes")[0]
    assert k8s.args == ("cluster.local", "in-addr.arpa", "ip6.arpa")
    assert [(o.name, o.args) for o in k8s.block] == [
        ("pods", ("insecure",)),
        ("fallthrough", ("in-addr.arpa", "ip6.arpa")),
        ("ttl", ("30",)),
    ]
    fwd = block.find("forward")[0]
    assert fwd.args == (".", "/etc/resolv.conf")
    assert [(o.name, o.args) for o in fwd.block] == [("max_concurrent", ("1000",))]
    assert block.find("prometheus")[0].args == (":9153",)
    cache = block.find("cache")[0]
    assert cache.args == ("30",)
    if name == "Corefile.kubeadm":
        assert [(o.name, o.args) for o in cache.block] == [
            ("disable", ("success", "cluster.local")),
            ("disable", ("denial", "cluster.local")),
        ]
    else:
        assert not cache.has_block


@pytest.mark.parametrize("name", KUBEADM)
def test_kubeadm_corefile_sets_up_every_plugin(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Setup (not start) of the whole instance: every kubeadm directive is accepted as written."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "resolv.conf").write_text("nameserver 172.18.255.253\n")
    monkeypatch.setenv("KNETCHECK_ROOTFS", str(tmp_path))
    inst = Instance(parse(_reference(name), "/etc/coredns/Corefile"))
    names = [p.name for p in inst.plugins]
    # execution order is CoreDNS's plugin.cfg order, not the Corefile's
    assert names == [
        "reload", "ready", "health", "prometheus", "errors", "loadbalance", "cache", "kubernetes", "loop",
        "forward",
    ]  # fmt: skip
    cache = next(p for p in inst.plugins if isinstance(p, Cache))
    assert cache.success.max_ttl == 30
    if name == "Corefile.kubeadm":
        assert cache.success.disabled_zones == ("cluster.local.",)
        assert cache.denial.disabled_zones == ("cluster.local.",)
    else:
        assert cache.success.disabled_zones is None


def test_unknown_directive_is_coredns_parse_error() -> None:
    text = ".:53 {\n    errors\n    # old style\n    proxy . /etc/resolv.conf\n}\n"
    with pytest.raises(CorefileError) as err:
        parse(text, "/etc/coredns/Corefile")
    assert str(err.value) == "/etc/coredns/Corefile:4 - Error during parsing: Unknown directive 'proxy'"


def test_brace_glued_to_a_token_is_not_a_brace() -> None:
    """Caddy's lexer: ``example.com{`` is one token, so the block never opens (CoreDNS issue 7121)."""
    text = ".:53 {\n    forward . 1.1.1.1 {\n        except a.test{\n    }\n}\n"
    cf = parse(text)
    fwd = cf.blocks[0].find("forward")[0]
    assert fwd.block[0].args == ("a.test{",)


def test_unbalanced_braces_fail() -> None:
    with pytest.raises(CorefileError, match="Unexpected EOF"):
        parse(".:53 {\n  errors\n")
    with pytest.raises(CorefileError, match="Unexpected '}'"):
        parse("}\n")


def test_keys_comments_quotes_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM", "10.0.0.9")
    text = (
        "# header comment\n"
        "cluster.local:1053, example.org {  # trailing\n"
        '    forward . {$UPSTREAM} "1.2.3.4:5353"\n'
        "}\n"
        "dns://10.96.0.0/16:5300 {\n"
        "    errors\n"
        "}\n"
    )
    cf = parse(text)
    assert cf.blocks[0].keys == (ServerKey("cluster.local.", 1053), ServerKey("example.org.", 53))
    assert cf.blocks[0].directives[0].args == (".", "10.0.0.9", "1.2.3.4:5353")
    assert cf.blocks[1].keys == (ServerKey("96.10.in-addr.arpa.", 5300),)


def test_block_without_braces_and_default_port() -> None:
    cf = parse(". \nerrors\nforward . 127.0.0.1\n", default_port=1053)
    assert cf.blocks[0].keys == (ServerKey(".", 1053),)
    assert [d.name for d in cf.blocks[0].directives] == ["errors", "forward"]


def test_plugin_property_errors_use_coredns_wording() -> None:
    text = ".:53 {\n    kubernetes cluster.local {\n        bogus 1\n    }\n}\n"
    with pytest.raises(SetupError) as err:
        Instance(parse(text, "/etc/coredns/Corefile"))
    assert str(err.value) == (
        "plugin/kubernetes: /etc/coredns/Corefile:3 - Error during parsing: unknown property 'bogus'"
    )


def test_forward_without_upstream_is_an_argument_error() -> None:
    with pytest.raises(
        SetupError, match=r"plugin/forward: Corefile:2 - Error during parsing: Wrong argument"
    ):
        Instance(parse(".:53 {\n    forward .\n}\n"))


def test_real_plugin_the_lab_lacks_fails_clearly() -> None:
    with pytest.raises(SetupError, match="'rewrite' plugin is not supported by the knetcheck lab"):
        Instance(parse(".:53 {\n    rewrite name a.test b.test\n}\n"))


def test_setup_context_zones() -> None:
    block = parse("a.test:5300 b.test:5300 {\n errors\n}\n").blocks[0]
    ctx = SetupContext("Corefile", block, ("",))
    assert ctx.zones == ("a.test.", "b.test.")
    assert ctx.port == 5300


def test_forward_reads_resolv_conf_through_the_container_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``forward . /etc/resolv.conf`` reads the file the kubelet wrote under KNETCHECK_ROOTFS."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "resolv.conf").write_text(
        "search example.test\nnameserver 172.18.255.253\n# nameserver 9.9.9.9\n"
        "nameserver 10.96.0.10 \noptions ndots:5\n"
    )
    monkeypatch.setenv("KNETCHECK_ROOTFS", str(tmp_path))
    inst = Instance(parse(".:53 {\n    forward . /etc/resolv.conf\n}\n"))
    fwd = inst.plugins[0]
    assert isinstance(fwd, Forward)
    assert [str(u) for u in fwd.upstreams] == ["172.18.255.253:53", "10.96.0.10:53"]


def test_forward_to_a_missing_file_is_coredns_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KNETCHECK_ROOTFS", str(tmp_path))
    with pytest.raises(SetupError, match=r"not an IP address or file: '/etc/resolv.conf'"):
        Instance(parse(".:53 {\n    forward . /etc/resolv.conf\n}\n"))
