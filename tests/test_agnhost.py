"""The lab's agnhost behaves like the real image: endpoints, quirks, exit codes and error prefixes.

Every server is a real subprocess on 127.0.0.1 with free ports, killed in teardown. Nothing leaves
loopback; the one DNS-failure case runs inside a throwaway network namespace with only ``lo``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from clusters.lab.programs.agnhost import flags, golang
from clusters.proc import CommandResult, run

MODULE = "clusters.lab.programs.agnhost"
POD = "agnhost-test-pod"
DEADLINE_S = 15.0
POLL_S = 0.05


@dataclass(frozen=True)
class Agnhost:
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def exit_code(self, timeout: float = DEADLINE_S) -> int:
        return self.proc.wait(timeout=timeout)


Starter = Callable[..., Agnhost]


def free_port() -> int:
    """A port free for both TCP and UDP on loopback (netexec binds both)."""
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "HOSTNAME": POD, **(extra or {})}


def agnhost(*args: str, env: dict[str, str] | None = None, timeout: float = 30.0) -> CommandResult:
    return run([sys.executable, "-m", MODULE, *args], timeout=timeout, env=_env(env), check=False)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Starter]:
    """Start agnhost subprocesses; every one is killed and reaped in teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def _start(*args: str, env: dict[str, str] | None = None) -> Agnhost:
        log = tmp_path / f"agnhost-{len(procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", MODULE, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_env({"TMPDIR": str(tmp_path), **(env or {})}),
            )
        procs.append(proc)
        return Agnhost(proc, log)

    yield _start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: str


def get(
    port: int,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode())
    finally:
        conn.close()


def wait_until(check: Callable[[], bool], what: str, server: Agnhost | None = None) -> None:
    """Deadline poll; fails early with the server's log when the server died."""
    end = time.monotonic() + DEADLINE_S
    while not check():
        if server is not None and server.proc.poll() is not None:
            pytest.fail(
                f"agnhost exited {server.proc.returncode} while waiting for {what}:\n{server.output()}"
            )
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}" + (f":\n{server.output()}" if server else ""))
        time.sleep(POLL_S)


def wait_http(server: Agnhost, port: int, path: str = "/") -> Reply:
    box: list[Reply] = []

    def answered() -> bool:
        try:
            box.append(get(port, path, timeout=2))
        except OSError:
            return False
        return True

    wait_until(answered, f"HTTP on port {port}", server)
    return box[0]


def udp_ask(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(payload, ("127.0.0.1", port))
        return sock.recv(2048)


@dataclass(frozen=True)
class Netexec:
    server: Agnhost
    http: int
    udp: int


@pytest.fixture
def netexec(start: Starter) -> Netexec:
    http_port, udp_port = free_port(), free_port()
    server = start("netexec", f"--http-port={http_port}", f"--udp-port={udp_port}")
    wait_until(lambda: wait_http(server, http_port, "/healthz").status == 200, "healthz 200", server)
    return Netexec(server, http_port, udp_port)


def dial(server_port: int, **params: str) -> Reply:
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return get(server_port, f"/dial?{query}", timeout=30)


def one_shot_http_server() -> int:
    """A target that answers one HTTP request with ``ok`` and then refuses connections."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = int(listener.getsockname()[1])

    def serve() -> None:
        conn, _ = listener.accept()
        listener.close()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    threading.Thread(target=serve, daemon=True).start()
    return port


# --- pure helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("1s", 1.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("-2s", -2.0),
        ("10us", 1e-5),
    ],
)
def test_parse_duration_accepts_go_syntax(text: str, seconds: float) -> None:
    assert flags.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("1", 'time: missing unit in duration "1"'),
        ("abc", 'time: invalid duration "abc"'),
        ("3x", 'time: unknown unit "x" in duration "3x"'),
        ("", 'time: invalid duration ""'),
    ],
)
def test_parse_duration_rejects_like_go(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        flags.parse_duration(text)


@pytest.mark.parametrize(
    ("hostport", "expected"),
    [("1.2.3.4:80", ("1.2.3.4", "80")), ("[::1]:53", ("::1", "53")), ("host:", ("host", ""))],
)
def test_split_host_port(hostport: str, expected: tuple[str, str]) -> None:
    assert golang.split_host_port(hostport) == expected


@pytest.mark.parametrize(
    ("hostport", "why"),
    [("nohost", "missing port in address"), ("a:b:c", "too many colons in address"), ("[::1", "missing ']'")],
)
def test_split_host_port_errors(hostport: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"address {hostport}: {why}")):
        golang.split_host_port(hostport)


def test_flags_parse_like_pflag() -> None:
    spec = (
        flags.Flag("port", flags.FlagKind.INT, 9376, ""),
        flags.Flag("tcp", flags.FlagKind.BOOL, False, ""),
    )
    parsed = flags.parse(spec, ["--tcp", "--port", "80", "pos", "--v=4"])
    assert (parsed.get_int("port"), parsed.get_bool("tcp"), parsed.args) == (80, True, ("pos",))
    assert flags.parse(spec, ["--tcp=false"]).get_bool("tcp") is False
    with pytest.raises(flags.FlagError, match='invalid argument "x" for "--port" flag'):
        flags.parse(spec, ["--port=x"])
    with pytest.raises(flags.FlagError, match="unknown flag: --nope"):
        flags.parse(spec, ["--nope"])


def test_go_json_is_compact_sorted_and_html_safe() -> None:
    assert (
        golang.go_json({"output": "<a&b>", "error": "x"})
        == '{"error":"x","output":"\\u003ca\\u0026b\\u003e"}'
    )


# --- netexec HTTP endpoints --------------------------------------------------------------------


def test_root_prints_go_time(netexec: Netexec) -> None:
    body = get(netexec.http, "/").body
    assert re.fullmatch(
        r"NOW: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,9})? [+-]\d{4} \S+ m=\+\d+\.\d{9}", body
    ), body
    assert get(netexec.http, "/no/such/path").body.startswith("NOW: ")  # "/" catches everything


@pytest.mark.parametrize("path", ["/hostname", "/hostName"])
def test_hostname_is_the_pod_name(netexec: Netexec, path: str) -> None:
    reply = get(netexec.http, path)
    assert (reply.status, reply.body) == (200, POD)


def test_clientip_is_the_callers_ip_and_port(netexec: Netexec) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", netexec.http, timeout=10)
    try:
        conn.request("GET", "/clientip")
        body = conn.getresponse().read().decode()
        assert conn.sock is not None
        assert body == f"127.0.0.1:{conn.sock.getsockname()[1]}"
    finally:
        conn.close()


def test_header_by_key_and_all(netexec: Netexec) -> None:
    assert get(netexec.http, "/header?key=x-probe", headers={"X-Probe": "abc"}).body == "abc"
    everything = json.loads(get(netexec.http, "/header", headers={"x-probe": "abc"}).body)
    assert everything["X-Probe"] == ["abc"]
    assert "Host" not in everything


def test_echo_message_and_status(netexec: Netexec) -> None:
    reply = get(netexec.http, "/echo?msg=hello&code=503")
    assert (reply.status, reply.body) == (503, "hello")
    bad = get(netexec.http, "/echo?msg=hello&code=abc")
    assert (bad.status, bad.body) == (200, "argument 'code' must be an integer or empty, got \"abc\"\n")


def test_echo_carries_a_payload_larger_than_an_mtu(netexec: Netexec) -> None:
    msg = "x" * 4000
    assert get(netexec.http, f"/echo?msg={msg}").body == msg


def test_redirect(netexec: Netexec) -> None:
    reply = get(netexec.http, "/redirect?location=/hostname&code=307")
    assert (reply.status, reply.headers["location"]) == (307, "/hostname")
    assert get(netexec.http, "/redirect?location=/x").status == 302


def test_upload_stores_the_file(netexec: Netexec) -> None:
    boundary = "kncl-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\npayload-123\r\n--{boundary}--\r\n"
    ).encode()
    reply = get(
        netexec.http,
        "/upload",
        method="POST",
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert reply.status == 201, reply.body
    path = Path(json.loads(reply.body)["output"])
    try:
        assert path.read_text() == "payload-123"
    finally:
        path.unlink()
    assert get(netexec.http, "/upload", method="POST", body=b"x").status == 417


def test_http_keepalive_head_and_form_bodies(netexec: Netexec) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", netexec.http, timeout=10)
    try:
        conn.request("GET", "/hostname")
        first = conn.getresponse()
        assert first.read() == POD.encode()
        local = conn.sock.getsockname() if conn.sock is not None else None
        conn.request("HEAD", "/hostname")
        head = conn.getresponse()
        assert (head.status, head.read(), head.getheader("Content-Length")) == (200, b"", str(len(POD)))
        assert conn.sock is not None and conn.sock.getsockname() == local  # same connection
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        conn.request("POST", "/echo?msg=query", body=b"msg=posted", headers=form)
        assert conn.getresponse().read() == b"posted"  # Go's r.Form: body values before the query's
        conn.request("POST", "/echo", body=iter([b"msg=", b"chunky"]), headers=form, encode_chunked=True)
        assert conn.getresponse().read() == b"chunky"
    finally:
        conn.close()


def test_malformed_request_gets_400(netexec: Netexec) -> None:
    with socket.create_connection(("127.0.0.1", netexec.http), timeout=10) as sock:
        sock.sendall(b"garbage\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_echo_with_an_invalid_status_drops_the_connection(netexec: Netexec) -> None:
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        get(netexec.http, "/echo?msg=x&code=1000")  # Go's WriteHeader panics; the server closes
    assert get(netexec.http, "/hostname").body == POD


# --- /dial --------------------------------------------------------------------------------------


def test_dial_http_collects_every_response(netexec: Netexec) -> None:
    reply = dial(netexec.http, host="127.0.0.1", port=str(netexec.http), request="hostname", tries="2")
    assert (reply.status, json.loads(reply.body)) == (200, {"responses": [POD, POD]})


def test_dial_all_failed_is_still_200_with_errors_only(netexec: Netexec) -> None:
    closed = free_port()
    reply = dial(
        netexec.http, host="127.0.0.1", port=str(closed), request="hostname", protocol="http", tries="2"
    )
    assert reply.status == 200
    out = json.loads(reply.body)
    assert "responses" not in out
    url = f"http://127.0.0.1:{closed}/hostname"
    refused = f'Get "{url}": dial tcp 127.0.0.1:{closed}: connect: connection refused'
    assert out["errors"] == [refused, refused]


def test_dial_drops_earlier_responses_when_the_last_try_fails(netexec: Netexec) -> None:
    target = one_shot_http_server()
    out = json.loads(dial(netexec.http, host="127.0.0.1", port=str(target), request="x", tries="2").body)
    assert "responses" not in out  # the first try got "ok", but upstream only looks at the last try
    assert len(out["errors"]) == 1 and "connection refused" in out["errors"][0]


def test_dial_counts_a_5xx_answer_as_a_response(netexec: Netexec) -> None:
    reply = dial(netexec.http, host="127.0.0.1", port=str(netexec.http), request="echo?msg=boom&code=500")
    assert (reply.status, json.loads(reply.body)) == (200, {"responses": ["boom"]})


def test_dial_zero_tries_is_an_empty_object(netexec: Netexec) -> None:
    assert dial(netexec.http, host="127.0.0.1", port="1", request="hostname", tries="0").body == "{}"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"host": "127.0.0.1", "port": "1"}, "request parameter not specified. <nil>\n"),
        ({"request": "hostname", "tries": "abc"}, "tries parameter is invalid."),
        ({"request": "hostname", "protocol": "ftp"}, "unsupported protocol. ftp\n"),
        (
            {"request": "hostname", "host": "127.0.0.1", "port": "99999"},
            "host and/or port param are invalid.",
        ),
    ],
)
def test_dial_bad_requests_are_400(netexec: Netexec, params: dict[str, str], message: str) -> None:
    reply = dial(netexec.http, **params)
    assert reply.status == 400
    assert reply.body.startswith(message)


def test_dial_udp_against_the_udp_server(netexec: Netexec) -> None:
    def ask(request: str) -> object:
        reply = dial(netexec.http, host="127.0.0.1", port=str(netexec.udp), request=request, protocol="udp")
        return json.loads(reply.body)

    assert ask("hostname") == {"responses": [POD]}
    assert ask("echo Hello World") == {"responses": ["hello world"]}  # commands are lower-cased upstream
    client = ask("clientip")
    assert isinstance(client, dict) and client["responses"][0].startswith("127.0.0.1:")


def test_dial_udp_without_answer_reports_the_read_error(netexec: Netexec) -> None:
    closed = free_port()
    out = json.loads(
        dial(netexec.http, host="127.0.0.1", port=str(closed), request="hostname", protocol="udp").body
    )
    assert "responses" not in out
    assert out["errors"][0].startswith("reading from udp connection failed. err:'read udp 127.0.0.1:")
    assert out["errors"][0].endswith(f"->127.0.0.1:{closed}: read: connection refused'")


def test_udp_server_commands_are_trimmed_and_lowercased(netexec: Netexec) -> None:
    assert udp_ask(netexec.udp, b"  HOSTNAME \n") == POD.encode()
    assert udp_ask(netexec.udp, b"echo abc") == b"abc"
    with pytest.raises(TimeoutError):
        udp_ask(netexec.udp, b"what", timeout=0.5)  # unknown commands get no answer


# --- /shell --------------------------------------------------------------------------------------


def shell(port: int, cmd: str, key: str = "cmd") -> dict[str, str]:
    reply = get(port, f"/shell?{key}={quote(cmd, safe='')}", timeout=60)
    assert reply.status == 200  # even when the command failed
    out = json.loads(reply.body)
    assert isinstance(out, dict)
    return out


def test_shell_runs_sh_with_combined_output(netexec: Netexec) -> None:
    assert shell(netexec.http, "echo out; echo err >&2") == {"output": "out\nerr\n"}
    assert shell(netexec.http, "echo hi; exit 3", key="shellCommand") == {
        "output": "hi\n",
        "error": "exit status 3",
    }


def test_shell_agnhost_connect_to_a_listening_port(netexec: Netexec) -> None:
    assert shell(netexec.http, f"/agnhost connect 127.0.0.1:{netexec.http} --timeout=1s --protocol=tcp") == {}


def test_shell_agnhost_connect_to_a_closed_port(netexec: Netexec) -> None:
    out = shell(netexec.http, f"/agnhost connect 127.0.0.1:{free_port()} --timeout=1s --protocol=tcp")
    assert out == {"output": "REFUSED\n", "error": "exit status 1"}


# --- health, override, TLS ------------------------------------------------------------------------


def test_healthz_stays_412_without_a_udp_server(start: Starter) -> None:
    port = free_port()
    server = start("netexec", f"--http-port={port}", "--udp-port=-1")
    wait_http(server, port)
    assert get(port, "/healthz").status == 412
    assert get(port, "/readyz").status == 412


def test_udp_listen_addresses_and_bad_addresses(start: Starter) -> None:
    http_port, udp_port = free_port(), free_port()
    server = start(
        "netexec", f"--http-port={http_port}", f"--udp-port={udp_port}", "--udp-listen-addresses=127.0.0.1"
    )
    wait_until(lambda: wait_http(server, http_port, "/healthz").status == 200, "healthz 200", server)
    assert udp_ask(udp_port, b"hostname") == POD.encode()
    bad = agnhost("netexec", f"--http-port={free_port()}", "--udp-listen-addresses=not-an-ip")
    assert bad.returncode == 1
    assert "parseAddress: invalid address not-an-ip" in bad.stderr


def test_busy_http_port_exits_1(netexec: Netexec) -> None:
    result = agnhost("netexec", f"--http-port={netexec.http}", "--udp-port=-1")
    assert result.returncode == 1
    assert f"listen tcp :{netexec.http}: bind: address already in use" in result.stderr


def test_http_override_answers_every_path(start: Starter) -> None:
    port = free_port()
    server = start("netexec", f"--http-port={port}", "--udp-port=-1", "--http-override=/hostname")
    assert wait_http(server, port, "/anything").body == POD


def test_https_when_cert_and_key_are_given(start: Starter, tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ],
        timeout=60,
    )
    port = free_port()
    server = start(
        "netexec",
        f"--http-port={port}",
        "--udp-port=-1",
        f"--tls-cert-file={cert}",
        f"--tls-private-key-file={key}",
    )
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    box: list[str] = []

    def answered() -> bool:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=context)
        try:
            conn.request("GET", "/hostname")
            box.append(conn.getresponse().read().decode())
        except OSError:
            return False
        finally:
            conn.close()
        return True

    wait_until(answered, "HTTPS", server)
    assert box[0] == POD


# --- process lifecycle ------------------------------------------------------------------------------


def test_exit_without_timeout_exits_at_once_with_the_code(netexec: Netexec) -> None:
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        get(netexec.http, "/exit?code=7")
    assert netexec.server.exit_code() == 7


def test_exit_with_timeout_answers_then_exits(netexec: Netexec) -> None:
    assert get(netexec.http, "/exit?code=abc").body.startswith("argument 'code' must be an integer")
    assert get(netexec.http, "/exit?code=5&timeout=1s").status == 200
    assert netexec.server.exit_code() == 5


def test_shutdown_exits_zero(netexec: Netexec) -> None:
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        get(netexec.http, "/shutdown")
    assert netexec.server.exit_code() == 0


def test_sigterm_exits_promptly(netexec: Netexec) -> None:
    netexec.server.proc.send_signal(signal.SIGTERM)
    assert netexec.server.exit_code() == 0


def test_delay_shutdown_keeps_serving_with_readyz_503(start: Starter) -> None:
    http_port, udp_port = free_port(), free_port()
    server = start("netexec", f"--http-port={http_port}", f"--udp-port={udp_port}", "--delay-shutdown=3")
    wait_until(lambda: wait_http(server, http_port, "/readyz").status == 200, "readyz 200", server)
    server.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: get(http_port, "/readyz").status == 503, "readyz 503", server)
    assert get(http_port, "/hostname").body == POD  # still serving during the delay
    assert server.exit_code() == 0
    assert "Sleeping 3 seconds before terminating..." in server.output()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 2), (signal.SIGINT, 1)])
def test_pause_exits_on_signal_with_upstream_codes(start: Starter, signum: int, code: int) -> None:
    server = start("pause")
    wait_until(lambda: "Paused" in server.output(), "Paused", server)
    server.proc.send_signal(signum)
    assert server.exit_code() == code


def test_no_arguments_runs_the_default_cmd_pause(start: Starter) -> None:
    server = start()
    wait_until(lambda: "Paused" in server.output(), "Paused", server)
    server.proc.send_signal(signal.SIGTERM)
    assert server.exit_code() == 2


def test_unknown_subcommand_fails_like_cobra() -> None:
    result = agnhost("frobnicate")
    assert result.returncode == 1
    assert result.stderr.startswith('Error: unknown command "frobnicate" for "agnhost"\n')


def test_unknown_flag_fails_like_cobra() -> None:
    result = agnhost("netexec", "--no-such-flag")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: unknown flag: --no-such-flag\nUsage:\n  agnhost netexec [flags]")


# --- serve-hostname and porter -------------------------------------------------------------------------


def test_serve_hostname_tcp(start: Starter) -> None:
    port = free_port()
    server = start("serve-hostname", "--tcp", "--http=false", f"--port={port}")
    box: list[bytes] = []

    def answered() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                box.append(conn.recv(1024))
        except OSError:
            return False
        return True

    wait_until(answered, "TCP serve-hostname", server)
    assert box[0] == POD.encode()


def test_serve_hostname_udp(start: Starter) -> None:
    port = free_port()
    server = start("serve-hostname", "--udp", "--http=false", "--port", str(port))
    wait_until(lambda: "Serving on port" in server.output(), "serve-hostname up", server)
    assert udp_ask(port, b"anything") == POD.encode()


def test_serve_hostname_http_and_close(start: Starter) -> None:
    port = free_port()
    server = start("serve-hostname", f"--port={port}", "--close")
    reply = wait_http(server, port, "/whatever")
    assert (reply.status, reply.body, reply.headers.get("connection")) == (200, POD, "close")
    server.proc.send_signal(signal.SIGTERM)
    assert server.exit_code() == 0
    assert "Awaiting pod deletion." in server.output()


def test_serve_hostname_refuses_tcp_with_http() -> None:
    result = agnhost("serve-hostname", "--tcp", f"--port={free_port()}")
    assert result.returncode == 1
    assert "Can't server TCP/UDP mode and HTTP mode at the same time" in result.stderr


def test_porter_serves_env_values(start: Starter) -> None:
    port = free_port()
    server = start("porter", env={f"SERVE_PORT_{port}": "foo"})
    assert wait_http(server, port).body == "foo"


# --- connect -------------------------------------------------------------------------------------------


def test_connect_tcp_success(netexec: Netexec) -> None:
    result = agnhost("connect", f"127.0.0.1:{netexec.http}", "--timeout=1s", "--protocol=tcp")
    assert (result.returncode, result.stderr) == (0, "")


def test_connect_tcp_refused_is_bare() -> None:
    result = agnhost("connect", f"127.0.0.1:{free_port()}", "--timeout=1s")
    assert (result.returncode, result.stderr) == (1, "REFUSED\n")


def test_connect_tcp_timeout_is_bare() -> None:
    """A listener whose accept queue is full drops new SYNs: a loopback-only timeout."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        result = agnhost("connect", f"127.0.0.1:{listener.getsockname()[1]}", "--timeout=1s")
    finally:
        for sock in (*fillers, listener):
            sock.close()
    assert (result.returncode, result.stderr) == (1, "TIMEOUT\n")


def test_connect_udp_success(netexec: Netexec) -> None:
    result = agnhost("connect", f"127.0.0.1:{netexec.udp}", "--timeout=1s", "--protocol=udp")
    assert (result.returncode, result.stderr) == (0, "")


def test_connect_udp_without_reply_times_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        result = agnhost("connect", f"127.0.0.1:{port}", "--timeout=500ms", "--protocol=udp")
    assert result.returncode == 1
    assert re.fullmatch(
        rf"TIMEOUT: read udp 127\.0\.0\.1:\d+->127\.0\.0\.1:{port}: i/o timeout\n", result.stderr
    )


def test_connect_udp_refused() -> None:
    result = agnhost("connect", f"127.0.0.1:{free_port()}", "--timeout=1s", "--protocol=udp")
    assert result.returncode == 1
    assert result.stderr.startswith("REFUSED: read udp 127.0.0.1:")


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        (["nohostport", "--timeout=1s"], "UNKNOWN: address nohostport: missing port in address\n"),
        (["127.0.0.1:99999", "--timeout=1s"], "DNS: address 99999: invalid port\n"),
        (["nohostport", "--protocol=udp"], "DNS: address nohostport: missing port in address\n"),
    ],
)
def test_connect_bad_destinations(args: list[str], stderr: str) -> None:
    result = agnhost("connect", *args)
    assert (result.returncode, result.stderr) == (1, stderr)


def test_connect_needs_exactly_one_argument_and_a_valid_duration() -> None:
    missing = agnhost("connect", "--timeout=1s")
    assert missing.returncode == 1 and missing.stderr.startswith("Error: accepts 1 arg(s), received 0\n")
    bad = agnhost("connect", "127.0.0.1:1", "--timeout=soon")
    assert bad.returncode == 1
    assert bad.stderr.startswith(
        'Error: invalid argument "soon" for "--timeout" flag: time: invalid duration "soon"'
    )


@pytest.fixture
def lonely_netns() -> Iterator[str]:
    """A netns with only ``lo``: DNS queries there cannot leave the machine (no route anywhere)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    name = f"kncl-t-{uuid.uuid4().hex[:8]}"
    run(["ip", "netns", "add", name], timeout=10)
    try:
        run(["ip", "-n", name, "link", "set", "lo", "up"], timeout=10)
        yield name
    finally:
        run(["ip", "netns", "del", name], timeout=10)


@pytest.mark.lab
def test_connect_dns_failure(lonely_netns: str) -> None:
    result = run(
        [
            "ip",
            "netns",
            "exec",
            lonely_netns,
            sys.executable,
            "-m",
            MODULE,
            "connect",
            "nonexistent.invalid:80",
            "--timeout=1s",
        ],
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("DNS: lookup nonexistent.invalid"), result.stderr
