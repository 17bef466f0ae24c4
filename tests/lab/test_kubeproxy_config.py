"""The lab kube-proxy reads config.conf like the real one (reference §3.3); no root needed.

Every reference config must load unchanged; every fault row of §3.3 must end the real way: exit 1
and klog's ``"command failed" err="…"`` line (checked through a subprocess, as the kubelet runs it).
The faults are all detected before the program touches the network, so no namespace is needed;
valid configs are run with a kubeconfig path that does not exist, so those runs stop at the
client too.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from clusters.lab.api import write_kubeconfig
from clusters.lab.programs.kubeproxy.config import (
    ConfigError,
    LocalMode,
    ProxyMode,
    load,
    parse_duration,
)
from clusters.lab.programs.kubeproxy.sync import HealthState, TokenBucket

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "configs" / "kube-proxy"
"""shared/ sits beside the repository (locally and in CI)."""
REFERENCE_FILES = sorted(REFERENCE.glob("config.conf.*")) if REFERENCE.is_dir() else []
KIND = REFERENCE / "config.conf.kind"
LINE = re.compile(
    r'^(?P<sev>[IWE])\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ (?P<src>[^\]]+)\] (?P<msg>"(?:[^"\\]|\\.)*")(?P<kv>.*)$'
)

pytestmark = pytest.mark.skipif(not REFERENCE_FILES, reason="shared/reference/configs/kube-proxy not found")


def kind_text(**replace: str) -> str:
    """The kind reference config with whole lines replaced (``mode: iptables`` → ``mode: foo``)."""
    text = KIND.read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def run_proxy(tmp_path: Path, text: str, *args: str) -> tuple[int, list[tuple[str, str, dict[str, str]]]]:
    """Run the program on ``text``; return its exit code and parsed klog lines (sev, msg, kv)."""
    conf = tmp_path / "config.conf"
    conf.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "clusters.lab.programs.kubeproxy", f"--config={conf}", *args],
        capture_output=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    lines = []
    for raw in proc.stderr.decode().splitlines():
        m = LINE.match(raw)
        assert m, f"not a klog line: {raw!r}"
        kv = {k: json.loads(v) for k, v in re.findall(r' ([A-Za-z]+)=("(?:[^"\\]|\\.)*")', m["kv"])}
        lines.append((m["sev"], json.loads(m["msg"]), kv))
    return proc.returncode, lines


def failure(lines: list[tuple[str, str, dict[str, str]]]) -> str:
    """The err of the final ``command failed`` line (there must be one)."""
    sev, msg, kv = lines[-1]
    assert (sev, msg) == ("E", "command failed"), lines
    return kv["err"]


# -- the reference configs --------------------------------------------------------------------


@pytest.mark.parametrize("path", REFERENCE_FILES, ids=lambda p: p.name)
def test_every_reference_config_loads_unchanged(path: Path) -> None:
    decoded = load(path.read_text())
    cfg = decoded.config
    assert decoded.strict_error is None
    expected_mode = ProxyMode.NFTABLES if path.name.endswith("nftables") else ProxyMode.IPTABLES
    assert cfg.mode is expected_mode
    assert cfg.mode_was_blank == (path.name == "config.conf.kubeadm")
    assert [str(c) for c in cfg.cluster_cidrs] == ["10.244.0.0/16"]
    assert cfg.detect_local_mode is LocalMode.CLUSTER_CIDR
    assert cfg.kubeconfig == "/var/lib/kube-proxy/kubeconfig.conf"
    assert cfg.healthz_bind_address == "0.0.0.0:10256"
    assert cfg.metrics_bind_address == "127.0.0.1:10249"
    assert cfg.sync_period == 30.0
    assert cfg.min_sync_period == 1.0  # kind writes 1s; kubeadm's 0s defaults to 1s
    assert cfg.masquerade_mark == "0x004000"
    assert cfg.localhost_node_ports is True


@pytest.mark.parametrize("path", REFERENCE_FILES, ids=lambda p: p.name)
def test_reference_configs_pass_decode_and_validate_in_the_program(path: Path, tmp_path: Path) -> None:
    text = path.read_text().replace("/var/lib/kube-proxy/kubeconfig.conf", "/nonexistent/kubeconfig")
    code, lines = run_proxy(tmp_path, text)
    assert code == 1
    assert failure(lines) == "stat /nonexistent/kubeconfig: no such file or directory"
    assert not any("lenient" in msg for _, msg, _ in lines)
    assert any(msg == "Using iptables proxy" for _, msg, _ in lines) == (path.name == "config.conf.kubeadm")


# -- §3.3 fault rows ---------------------------------------------------------------------------


def test_invalid_yaml_fails_complete(tmp_path: Path) -> None:
    code, lines = run_proxy(tmp_path, kind_text(**{"mode: iptables": "mode: [iptables"}))
    assert code == 1
    err = failure(lines)
    assert err.startswith("failed complete: failed to decode: ")
    assert "yaml: line" in err


def test_misspelled_field_is_accepted_leniently(tmp_path: Path) -> None:
    text = kind_text(
        **{"mode: iptables": "mdoe: iptables", "/var/lib/kube-proxy/kubeconfig.conf": "/nonexistent/kc"}
    )
    code, lines = run_proxy(tmp_path, text)
    info = [kv for sev, msg, kv in lines if msg == "Using lenient decoding as strict decoding failed"]
    assert info and info[0]["err"] == 'strict decoding error: unknown field "mdoe"'
    assert [sev for sev, msg, _ in lines if "lenient" in msg] == ["I"]
    # the misspelled key is ignored: mode stays blank → iptables; the run gets past validation
    assert any(msg == "Using iptables proxy" for _, msg, _ in lines)
    assert code == 1 and failure(lines) == "stat /nonexistent/kc: no such file or directory"
    assert load(text).config.mode is ProxyMode.IPTABLES


def test_mode_foo_fails_validation_with_the_real_wording(tmp_path: Path) -> None:
    code, lines = run_proxy(tmp_path, kind_text(**{"mode: iptables": "mode: foo"}))
    assert code == 1
    assert failure(lines) == (
        'failed validate: KubeProxyConfiguration.ProxyMode: Invalid value: "foo": must be iptables, ipvs, '
        "nftables or blank (blank means the best-available proxy [currently iptables])"
    )


def test_mode_foo_line_is_klog_quoted(tmp_path: Path) -> None:
    """Inside err="…" the inner quotes are escaped, as klog writes them: greps must allow for it."""
    conf = tmp_path / "c.conf"
    conf.write_text(kind_text(**{"mode: iptables": "mode: foo"}))
    proc = subprocess.run(
        [sys.executable, "-m", "clusters.lab.programs.kubeproxy", f"--config={conf}"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    stderr = proc.stderr.decode()
    assert (
        '] "command failed" err="failed validate: KubeProxyConfiguration.ProxyMode: Invalid value: \\"foo\\"'
        in stderr
    )


def test_cluster_cidr_not_a_cidr_fails_validation(tmp_path: Path) -> None:
    code, lines = run_proxy(tmp_path, kind_text(**{"clusterCIDR: 10.244.0.0/16": "clusterCIDR: notacidr"}))
    assert code == 1
    err = failure(lines)
    assert err.startswith("failed validate: ")
    assert (
        'Invalid value: "notacidr": must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)'
        in err
    )


def test_wrong_but_valid_cluster_cidr_is_accepted() -> None:
    cfg = load(kind_text(**{"clusterCIDR: 10.244.0.0/16": "clusterCIDR: 10.99.0.0/16"})).config
    assert [str(c) for c in cfg.cluster_cidrs] == ["10.99.0.0/16"]


def test_empty_cluster_cidr_warns(tmp_path: Path) -> None:
    """The warning comes after the client is built; an unreachable in-cluster API is enough to get
    there, and the lab's safety check then stops the run outside a lab namespace."""
    text = kind_text(
        **{
            "clusterCIDR: 10.244.0.0/16": 'clusterCIDR: ""',
            "kubeconfig: /var/lib/kube-proxy/kubeconfig.conf": 'kubeconfig: ""',
        }
    )
    conf = tmp_path / "c.conf"
    conf.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "clusters.lab.programs.kubeproxy", f"--config={conf}"],
        capture_output=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "9"},
    )
    stderr = proc.stderr.decode()
    assert (
        '"Detect-local-mode set to ClusterCIDR, but no cluster CIDR specified for primary IP family"'
        in stderr
    )
    assert proc.returncode == 1
    assert "lab safety" in stderr  # it never reached iptables in this (non-lab) namespace


def test_missing_kubeconfig_fails_with_stat_error(tmp_path: Path) -> None:
    code, lines = run_proxy(tmp_path, kind_text(**{"/var/lib/kube-proxy/kubeconfig.conf": "/wrong/path"}))
    assert code == 1
    assert failure(lines) == "stat /wrong/path: no such file or directory"


def test_empty_kubeconfig_falls_back_to_in_cluster(tmp_path: Path) -> None:
    """Not a fault on a real node; outside a pod the in-cluster env is missing, and that is the error."""
    code, lines = run_proxy(
        tmp_path, kind_text(**{"kubeconfig: /var/lib/kube-proxy/kubeconfig.conf": 'kubeconfig: ""'})
    )
    assert code == 1
    assert failure(lines).startswith("unable to load in-cluster configuration")


def test_ipvs_mode_is_accepted() -> None:
    assert load(kind_text(**{"mode: iptables": "mode: ipvs"})).config.mode is ProxyMode.IPVS


def test_config_file_missing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "clusters.lab.programs.kubeproxy", f"--config={tmp_path}/none.conf"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert (
        f'err="failed complete: open {tmp_path}/none.conf: no such file or directory"' in proc.stderr.decode()
    )


# -- unit details --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0s", 0.0), ("1s", 1.0), ("100ms", 0.1), ("1m30s", 90.0), ("2h22m", 8520.0), ("0", 0.0)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_bad_duration_fails_decode() -> None:
    with pytest.raises(
        ConfigError, match=r'^failed complete: failed to decode: time: invalid duration "abc"$'
    ):
        load(kind_text(**{"  minSyncPeriod: 1s": "  minSyncPeriod: abc"}))


def test_wrong_type_fails_decode() -> None:
    with pytest.raises(
        ConfigError, match=r"cannot unmarshal bool into Go struct field KubeProxyConfiguration\.mode"
    ):
        load(kind_text(**{"mode: iptables": "mode: true"}))


def test_host_bits_allowed_but_bare_address_rejected() -> None:
    assert str(
        load(kind_text(**{"clusterCIDR: 10.244.0.0/16": "clusterCIDR: 10.244.1.1/16"})).config.cluster_cidrs[
            0
        ]
    ) == ("10.244.0.0/16")
    with pytest.raises(ConfigError, match=r"ClusterCIDRs\[0\]: Invalid value: \"10.244.0.0\""):
        load(kind_text(**{"clusterCIDR: 10.244.0.0/16": "clusterCIDR: 10.244.0.0"}))


def test_two_errors_are_aggregated() -> None:
    with pytest.raises(ConfigError) as exc:
        load(kind_text(**{"mode: iptables": "mode: foo", "clusterCIDR: 10.244.0.0/16": "clusterCIDR: x"}))
    assert str(exc.value).startswith(
        'failed validate: [KubeProxyConfiguration.ProxyMode: Invalid value: "foo"'
    )
    assert str(exc.value).endswith("]")


def test_nftables_mode_is_a_documented_lab_difference(tmp_path: Path) -> None:
    """nftables is valid config; the lab refuses it after the real startup line, before any rule."""
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, "http://127.0.0.1:9")
    text = (REFERENCE / "config.conf.kind-nftables").read_text()
    code, lines = run_proxy(tmp_path, text.replace("/var/lib/kube-proxy/kubeconfig.conf", str(kubeconfig)))
    assert code == 1
    assert ("I", "Using nftables Proxier") in [(sev, msg) for sev, msg, _ in lines]
    assert "lab difference" in failure(lines)


def test_health_turns_503_when_an_update_waits_too_long() -> None:
    now = [1000.0]
    health = HealthState(timeout=60.0, clock=lambda: now[0])
    assert health.status()[0] == 200  # nothing queued yet
    health.queued()
    now[0] += 59
    assert health.status()[0] == 200
    now[0] += 2
    code, body = health.status()
    assert code == 503
    assert json.loads(body)["lastUpdated"] == "0001-01-01 00:00:00 +0000 UTC"
    health.updated()
    code, body = health.status()
    assert code == 200 and json.loads(body)["nodeEligible"] is True
    assert json.loads(body)["lastUpdated"].endswith(" +0000 UTC")


def test_sync_rate_limit_is_a_burst_of_two_then_one_per_min_sync_period() -> None:
    now = [0.0]
    bucket = TokenBucket(1.0, burst=2, clock=lambda: now[0])
    waits = []
    for _ in range(3):
        waits.append(bucket.wait_time())
        bucket.take()
    assert waits[:2] == [0.0, 0.0] and waits[2] == pytest.approx(1.0)
    now[0] += 5
    assert bucket.wait_time() == 0.0
