"""containerd/go-cni config selection, error wording and watcher rules (no root needed)."""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusters.errors import UsageProblem
from clusters.lab.node import gojson
from clusters.lab.node.cni import CniExec, ConfigLoadError, PluginError, conf_files, load_conf_dir
from clusters.lab.node.confwatch import ConfWatcher, Event, Op
from clusters.lab.programs import cniagent

REFERENCE_CNI = Path("/work/shared/reference/configs/cni")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{bad", "invalid character 'b' looking for beginning of object key string"),
        (b"", "unexpected end of JSON input"),
        (b'{"name": "x"', "unexpected end of JSON input"),
        (b'{"a": 1,}', "invalid character '}' looking for beginning of object key string"),
        (b"[1,]", "invalid character ']' looking for beginning of value"),
        (b'{"a":tru}', "invalid character '}' in literal true (expecting 'e')"),
        (b'{"a":1}x', "invalid character 'x' after top-level value"),
        (b'{"a" 1}', "invalid character '1' after object key"),
        (b'{"a": "\n"}', "invalid character '\\n' in string literal"),
        (b'{"ok": [1, 2.5e3, null, true, "s\\u00e9"]}', None),
    ],
)
def test_go_json_errors(data: bytes, message: str | None) -> None:
    assert gojson.syntax_error(data) == message


def test_first_file_by_name_wins_and_broken_first_is_fatal(tmp_path: Path) -> None:
    good = json.dumps({"cniVersion": "1.0.0", "name": "good", "plugins": [{"type": "bridge"}]})
    (tmp_path / "10-good.conflist").write_text(good)
    (tmp_path / "05-other.txt").write_text("{bad")  # wrong extension: ignored
    (tmp_path / "sub.conf").mkdir()  # directories are ignored
    assert load_conf_dir(tmp_path).name == "good"
    (tmp_path / "00-bad.conflist").write_text("{bad")
    assert conf_files(tmp_path) == ["00-bad.conflist", "10-good.conflist"]
    with pytest.raises(ConfigLoadError) as err:
        load_conf_dir(tmp_path)
    assert str(err.value) == (
        "cni config load failed: failed to load CNI config list file /etc/cni/net.d/00-bad.conflist: "
        "error parsing configuration list: invalid character 'b' looking for beginning of object key string: "
        "invalid cni config: failed to load cni config"
    )


@pytest.mark.parametrize(
    ("name", "content", "inner"),
    [
        ("a.conflist", '{"plugins": []}', "error parsing configuration list: no name"),
        ("a.conflist", '{"name": 3}', "error parsing configuration list: invalid name type float64"),
        ("a.conflist", '{"name": "n"}', "error parsing configuration list: no 'plugins' key"),
        (
            "a.conflist",
            '{"name": "n", "plugins": []}',
            "error parsing configuration list: no plugins in list",
        ),
        (
            "a.conflist",
            '{"name": "n", "plugins": [{"ipam": {}}]}',
            "failed to parse plugin config 0: error parsing configuration: missing 'type'",
        ),
        ("a.conflist", "[]", "error parsing configuration list: json: cannot unmarshal array into Go value"),
    ],
)
def test_libcni_parse_errors(tmp_path: Path, name: str, content: str, inner: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(
        ConfigLoadError, match=r"^cni config load failed: failed to load CNI config list file"
    ) as err:
        load_conf_dir(tmp_path)
    assert inner in str(err.value)
    assert str(err.value).endswith(": invalid cni config: failed to load cni config")


def test_single_conf_file_is_upconverted(tmp_path: Path) -> None:
    (tmp_path / "10-x.conf").write_text('{"cniVersion": "0.4.0", "name": "x", "type": "bridge"}')
    net = load_conf_dir(tmp_path)
    assert (net.name, net.cni_version, [p.type for p in net.plugins]) == ("x", "0.4.0", ["bridge"])


def test_empty_dir_is_not_initialized(tmp_path: Path) -> None:
    with pytest.raises(ConfigLoadError) as err:
        load_conf_dir(tmp_path / "missing")
    assert "no network config found in /etc/cni/net.d: cni plugin not initialized" in str(err.value)


@pytest.mark.skipif(not REFERENCE_CNI.is_dir(), reason="reference configs not present on this machine")
def test_every_real_conflist_loads(tmp_path: Path) -> None:
    files = sorted(REFERENCE_CNI.glob("*.conflist"))
    assert files
    for f in files:
        d = tmp_path / f.stem
        d.mkdir()
        (d / f.name).write_bytes(f.read_bytes())
        assert load_conf_dir(d).plugins, f.name


def test_missing_plugin_wording(tmp_path: Path) -> None:
    (tmp_path / "opt/cni/bin").mkdir(parents=True)
    cni = CniExec(tmp_path, lambda argv: list(argv))
    with pytest.raises(PluginError, match=r'^failed to find plugin "bridge" in path \[/opt/cni/bin\]$'):
        cni.find_in_path("bridge")


def test_agent_conflist_is_valid_and_written_only_on_change(tmp_path: Path) -> None:
    writer = cniagent.ConfWriter(tmp_path)
    cidr = ipaddress.IPv4Network("10.244.1.0/24")
    assert writer.write(cidr, 1500)
    net = load_conf_dir(tmp_path)
    assert [p.type for p in net.plugins] == ["bridge", "portmap"]
    assert not list(tmp_path.glob("*.temp"))
    (tmp_path / cniagent.CONF_NAME).unlink()
    assert not writer.write(cidr, 1500)  # kindnet: same inputs, the deleted file stays deleted
    assert not (tmp_path / cniagent.CONF_NAME).exists()
    assert writer.write(cidr, 1450)  # an input changed: rewritten
    assert (tmp_path / cniagent.CONF_NAME).exists()


def test_agent_env_problems_are_one_line() -> None:
    with pytest.raises(UsageProblem, match="NODE_NAME"):
        cniagent.config_from_env({})
    with pytest.raises(UsageProblem, match="MODE='ipip'"):
        cniagent.config_from_env({"NODE_NAME": "n", "MODE": "ipip", "POD_CIDR": "10.244.1.0/24", "PEERS": ""})
    with pytest.raises(UsageProblem, match="nodeIP=podCIDR"):
        cniagent.parse_peers("10.244.1.0/24")
    cfg = cniagent.config_from_env(
        {
            "NODE_NAME": "n",
            "POD_CIDR": "10.244.1.0/24",
            "PEERS": "172.18.0.3=10.244.1.0/24,172.18.0.4=10.244.2.0/24",
        }
    )
    assert cfg.mode is cniagent.Mode.HOST_GW
    assert cfg.peers is not None and [str(p.ip) for p in cfg.peers] == ["172.18.0.3", "172.18.0.4"]


# ---- containerd's watcher rules -------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.reloads: list[Event] = []
        self.cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self.cond:
            self.reloads.append(event)
            self.cond.notify_all()


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Path, ConfWatcher, Recorder]]:
    conf = tmp_path / "net.d"
    conf.mkdir()
    rec = Recorder()
    watcher = ConfWatcher(conf, rec)
    watcher.start()
    try:
        yield conf, watcher, rec
    finally:
        watcher.stop()


def wait_for_event(watcher: ConfWatcher, name: str, op: Op) -> Event:
    """Wait until the watcher thread has processed the event (a deadline poll)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for ev in watcher.history:
            if ev.name == name and ev.op is op:
                return ev
        time.sleep(0.01)
    raise AssertionError(f"no {op} event for {name}; saw {watcher.history}")


def test_watcher_follows_fsnotify_and_containerd(
    tmp_path: Path, watched: tuple[Path, ConfWatcher, Recorder]
) -> None:
    conf, watcher, rec = watched
    with open(conf / "00-bad.conflist", "w") as f:  # echo '{bad' > …: Create (ignored) + Write (reload)
        f.write("{bad")
    assert wait_for_event(watcher, "00-bad.conflist", Op.CREATE).reloaded is False
    assert wait_for_event(watcher, "00-bad.conflist", Op.WRITE).reloaded is True
    outside = tmp_path / "moved.conflist"
    outside.write_text("{}")
    os.rename(outside, conf / "01-moved.conflist")  # mv into the dir: Create only -> no reload
    assert wait_for_event(watcher, "01-moved.conflist", Op.CREATE).reloaded is False
    (conf / "02-empty.conflist").touch()  # new empty file: Create only
    assert wait_for_event(watcher, "02-empty.conflist", Op.CREATE).reloaded is False
    os.chmod(conf / "02-empty.conflist", 0o600)  # Chmod: ignored
    assert wait_for_event(watcher, "02-empty.conflist", Op.CHMOD).reloaded is False
    (conf / "00-bad.conflist").unlink()  # rm: Remove -> reload
    assert wait_for_event(watcher, "00-bad.conflist", Op.REMOVE).reloaded is True
    os.rename(conf / "01-moved.conflist", tmp_path / "back")  # mv out: Rename -> reload
    assert wait_for_event(watcher, "01-moved.conflist", Op.RENAME).reloaded is True
    assert [(e.name, e.op) for e in rec.reloads] == [
        ("00-bad.conflist", Op.WRITE),
        ("00-bad.conflist", Op.REMOVE),
        ("01-moved.conflist", Op.RENAME),
    ]


def test_removing_the_conf_dir_stops_the_watcher(tmp_path: Path) -> None:
    conf = tmp_path / "net.d"
    conf.mkdir()
    gone = threading.Event()
    watcher = ConfWatcher(conf, lambda _e: None, gone.set)
    watcher.start()
    try:
        conf.rmdir()
        assert gone.wait(5), "containerd >= 2.1 stops (and exits) when the conf dir is removed"
    finally:
        watcher.stop()


def test_agent_reads_peers_from_node_objects() -> None:
    from kubernetes import client

    def node(name: str, cidr: str | None, ip: str) -> client.V1Node:
        return client.V1Node(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1NodeSpec(pod_cidr=cidr),
            status=client.V1NodeStatus(
                addresses=[
                    client.V1NodeAddress(type="Hostname", address=name),
                    client.V1NodeAddress(type="InternalIP", address=ip),
                ]
            ),
        )

    peers = cniagent._peers_from_nodes(
        [
            node("a", "10.244.0.0/24", "172.18.0.2"),
            node("b", "10.244.1.0/24", "172.18.0.3"),
            node("c", None, "x"),
        ]
    )
    assert sorted(peers) == ["a", "b"]  # a node without podCIDR is not routable yet
    assert peers["b"].ip == ipaddress.IPv4Address("172.18.0.3")
    assert peers["b"].pod_cidr == ipaddress.IPv4Network("10.244.1.0/24")
