"""The lab ingress controller's pure parts: Ingress objects → routing model → nginx.conf.

No root, no network: golden checks on the rendered text, the log lines ingress-nginx prints
while building, class selection, status addresses, flags; one test has ``nginx -t`` accept a
rendered configuration in a private prefix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from clusters.errors import UsageProblem
from clusters.lab.controllers.client import Kube
from clusters.lab.programs.ingress import flags as flagmod
from clusters.lab.programs.ingress.build import (
    Built,
    Options,
    Snapshot,
    build,
    class_problem,
    endpoints,
    status_addresses,
)
from clusters.lab.programs.ingress.certs import (
    CertError,
    CertInfo,
    generate_fake,
    hostname_error,
    verify_hostname,
)
from clusters.lab.programs.ingress.controller import Controller
from clusters.lab.programs.ingress.main import conf_dir
from clusters.lab.programs.ingress.nginx import ConfigRejected, Nginx
from clusters.lab.programs.ingress.render import CertFiles, render

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
FAKE = CertFiles("/p/ssl/fake.crt", "/p/ssl/fake.key")
OPTS = Options(prefix="/p", watch_without_class=True)
JSON = dict[str, Any]


def ingress(
    name: str, rules: list[JSON], *, ns: str = "app", created: str = "2026-01-01T00:00:00Z", **spec: Any
) -> JSON:
    annotations = spec.pop("annotations", {})
    return {
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": created, "annotations": annotations},
        "spec": {"rules": rules, **spec},
    }


def rule(host: str | None, *paths: tuple[str, str, str]) -> JSON:
    out: JSON = {
        "http": {
            "paths": [
                {"path": p, "pathType": t, "backend": {"service": {"name": svc, "port": {"number": 80}}}}
                for p, t, svc in paths
            ]
        }
    }
    if host:
        out["host"] = host
    return out


def service(name: str, ns: str = "app", target: int = 8080, port_name: str = "") -> JSON:
    port: JSON = {"port": 80, "targetPort": target, "protocol": "TCP"}
    if port_name:
        port["name"] = port_name
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"type": "ClusterIP", "ports": [port]}}


def eslice(svc: str, addrs: dict[str, bool], port: int = 8080, ns: str = "app", port_name: str = "") -> JSON:
    return {
        "metadata": {"name": f"{svc}-x", "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": r}} for a, r in addrs.items()],
    }


def run_build(
    ingresses: list[JSON],
    services: Sequence[JSON] = (),
    slices: Sequence[JSON] = (),
    certs: dict[str, CertInfo | CertError] | None = None,
    **kw: Any,
) -> Built:
    snap = Snapshot(tuple(ingresses), tuple(kw.pop("classes", ())), tuple(services), tuple(slices))
    opts = kw.pop("opts", OPTS)
    table = certs or {}
    return build(snap, opts, lambda k: table.get(k), FAKE, NOW)


def server_block(conf: str, host: str) -> str:
    m = re.search(rf"## start server {re.escape(host)}\n(.*?)## end server {re.escape(host)}", conf, re.S)
    assert m, f"no server block for {host} in:\n{conf}"
    return m.group(1)


def location_block(server: str, head: str) -> str:
    m = re.search(rf"        {re.escape(head)} {{\n(.*?)\n        }}", server, re.S)
    assert m, f"no {head} in:\n{server}"
    return m.group(1)


def notes(built: Built) -> list[str]:
    return [n.text for n in built.notes]


# -- paths ----------------------------------------------------------------------------------------


def test_prefix_becomes_exact_plus_slash_location_exact_stays_exact() -> None:
    ing = ingress(
        "web",
        [
            rule(
                "foo.example",
                ("/foo", "Prefix", "foo"),
                ("/exact", "Exact", "foo"),
                ("/impl", "ImplementationSpecific", "foo"),
                ("/bar/", "Prefix", "foo"),
            )
        ],
    )
    conf = render(run_build([ing], [service("foo")], [eslice("foo", {"10.0.0.1": True})]).model)
    srv = server_block(conf, "foo.example")
    heads = re.findall(r"^        (location .*?) \{$", srv, re.M)
    assert heads == [
        'location = "/foo"',
        'location "/foo/"',
        'location = "/exact"',
        'location "/impl"',
        'location = "/bar"',
        'location "/bar/"',
        'location "/"',
    ]
    assert "proxy_pass http://app-foo-80;" in location_block(srv, 'location = "/foo"')
    assert "return 404" in location_block(srv, 'location "/"')


def test_prefix_root_is_one_location_and_replaces_the_default_backend() -> None:
    ing = ingress("web", [rule("foo.example", ("/", "Prefix", "foo"))])
    srv = server_block(
        render(run_build([ing], [service("foo")], [eslice("foo", {"10.0.0.1": True})]).model), "foo.example"
    )
    assert srv.count('location "/" {') == 1
    assert "proxy_pass http://app-foo-80;" in location_block(srv, 'location "/"')


def test_older_ingress_wins_a_path_conflict() -> None:
    old = ingress("old", [rule("h.example", ("/x", "Exact", "a"))], created="2026-01-01T00:00:00Z")
    new = ingress("new", [rule("h.example", ("/x", "Exact", "b"))], created="2026-02-01T00:00:00Z")
    svcs = [service("a"), service("b")]
    slices = [eslice("a", {"10.0.0.1": True}), eslice("b", {"10.0.0.2": True})]
    srv = server_block(render(run_build([new, old], svcs, slices).model), "h.example")
    assert srv.count('location = "/x"') == 1
    assert "proxy_pass http://app-a-80;" in location_block(srv, 'location = "/x"')


def test_rules_without_host_go_to_the_default_server() -> None:
    ing = ingress("web", [rule(None, ("/api", "Prefix", "foo"))])
    conf = render(run_build([ing], [service("foo")], [eslice("foo", {"10.0.0.1": True})]).model)
    default = server_block(conf, "_")
    assert "listen 80 default_server;" in default
    assert "listen 443 default_server ssl;" in default
    assert "proxy_pass http://app-foo-80;" in location_block(default, 'location "/api/"')
    assert 'return 404 "default backend - 404";' in location_block(default, 'location "/"')
    assert "return 200;" in location_block(default, "location /healthz")


# -- upstreams ------------------------------------------------------------------------------------


def test_upstream_uses_ready_endpoints_at_the_slice_target_port() -> None:
    ing = ingress("web", [rule("foo.example", ("/", "Prefix", "foo"))])
    built = run_build(
        [ing],
        [service("foo", target=9376)],
        [eslice("foo", {"10.0.0.1": True, "10.0.0.2": False, "10.0.0.3": True}, port=9376)],
    )
    conf = render(built.model)
    up = re.search(r"upstream app-foo-80 \{\n(.*?)\n    \}", conf, re.S)
    assert up and up.group(1).split("\n") == [
        "        server 10.0.0.1:9376 max_fails=0;",
        "        server 10.0.0.3:9376 max_fails=0;",
    ]
    assert notes(built) == []


def test_named_port_matches_slice_port_by_name() -> None:
    svc = service("foo", target=8080, port_name="http")
    sl = eslice("foo", {"10.0.0.9": True}, port=8080, port_name="http")
    assert endpoints(svc, "http", [sl]) == ("10.0.0.9:8080",)
    assert endpoints(svc, "80", [sl]) == ("10.0.0.9:8080",)
    assert endpoints(svc, "81", [sl]) == ()


def test_service_without_endpoints_answers_503_and_logs_like_ingress_nginx() -> None:
    ing = ingress("web", [rule("foo.example", ("/foo", "Exact", "foo"))])
    built = run_build([ing], [service("foo")], [eslice("foo", {"10.0.0.1": False})])
    srv = server_block(render(built.model), "foo.example")
    assert "return 503;" in location_block(srv, 'location = "/foo"')
    assert "upstream app-foo-80" not in render(built.model)
    assert notes(built) == ['Service "app/foo" does not have any active Endpoint.']


def test_missing_service_answers_503_and_logs_the_store_error() -> None:
    ing = ingress("web", [rule("foo.example", ("/foo", "Exact", "ghost"))])
    built = run_build([ing])
    srv = server_block(render(built.model), "foo.example")
    assert "return 503;" in location_block(srv, 'location = "/foo"')
    assert notes(built) == [
        'Error obtaining Endpoints for Service "app/ghost": no object matching key "app/ghost" in local store'
    ]


def test_ingress_default_backend_without_rules_takes_the_catch_all() -> None:
    backend = {"service": {"name": "fallback", "port": {"number": 80}}}
    ing = ingress("catch", [], defaultBackend=backend)
    conf = render(run_build([ing], [service("fallback")], [eslice("fallback", {"10.0.0.5": True})]).model)
    assert "proxy_pass http://app-fallback-80;" in location_block(server_block(conf, "_"), 'location "/"')


def test_ingress_default_backend_serves_unmatched_paths_of_its_hosts() -> None:
    backend = {"service": {"name": "fallback", "port": {"number": 80}}}
    ing = ingress("web", [rule("foo.example", ("/foo", "Exact", "foo"))], defaultBackend=backend)
    svcs = [service("foo"), service("fallback")]
    slices = [eslice("foo", {"10.0.0.1": True}), eslice("fallback", {"10.0.0.5": True})]
    conf = render(run_build([ing], svcs, slices).model)
    assert "proxy_pass http://app-fallback-80;" in location_block(
        server_block(conf, "foo.example"), 'location "/"'
    )
    assert 'return 404 "default backend - 404";' in location_block(server_block(conf, "_"), 'location "/"')


# -- TLS ------------------------------------------------------------------------------------------


FOO_SLICES = [eslice("foo", {"10.0.0.1": True})]


def cert(names: tuple[str, ...], cn: str = "", not_after: datetime = NOW + timedelta(days=90)) -> CertInfo:
    return CertInfo(CertFiles("/p/ssl/app-tls.pem", "/p/ssl/app-tls.pem"), cn, names, not_after)


def tls_ingress(secret: str = "tls", host: str = "secure.example", **kw: Any) -> JSON:
    return ingress(
        "web", [rule(host, ("/", "Prefix", "foo"))], tls=[{"hosts": [host], "secretName": secret}], **kw
    )


def test_tls_host_gets_its_certificate_and_redirects_http_with_308() -> None:
    built = run_build(
        [tls_ingress()], [service("foo")], FOO_SLICES, certs={"app/tls": cert(("secure.example",))}
    )
    srv = server_block(render(built.model), "secure.example")
    assert 'ssl_certificate "/p/ssl/app-tls.pem";' in srv
    assert "listen 443 ssl;" in srv
    assert "return 308 https://$host$request_uri;" in location_block(srv, 'location "/"')
    assert built.cert_files == frozenset({"/p/ssl/app-tls.pem"})


def test_redirect_names_the_https_port_when_not_443() -> None:
    opts = Options(prefix="/p", watch_without_class=True, https_port=8443)
    built = run_build(
        [tls_ingress()], [service("foo")], FOO_SLICES, certs={"app/tls": cert(("*.example",))}, opts=opts
    )
    assert "return 308 https://$host:8443$request_uri;" in render(built.model)


def test_ssl_redirect_false_annotation_disables_the_redirect() -> None:
    ing = tls_ingress(annotations={"nginx.ingress.kubernetes.io/ssl-redirect": "false"})
    built = run_build([ing], [service("foo")], FOO_SLICES, certs={"app/tls": cert(("secure.example",))})
    assert "return 308" not in render(built.model)


def test_hosts_without_tls_serve_the_fake_certificate_and_do_not_redirect() -> None:
    conf = render(
        run_build([ingress("web", [rule("plain.example", ("/", "Prefix", "foo"))])], [service("foo")]).model
    )
    srv = server_block(conf, "plain.example")
    assert "ssl_certificate" not in srv  # the http-level default (fake) certificate applies
    assert 'ssl_certificate "/p/ssl/fake.crt";' in conf
    assert "return 308" not in conf


def test_missing_secret_uses_the_default_certificate_with_ingress_nginx_lines() -> None:
    built = run_build([tls_ingress("gone")], [service("foo")], FOO_SLICES)
    srv = server_block(render(built.model), "secure.example")
    assert 'ssl_certificate "/p/ssl/fake.crt";' in srv
    assert "return 308" in srv  # a TLS host still redirects, with the default certificate
    assert (
        'Error getting SSL certificate "app/gone": local SSL certificate app/gone was not found. '
        "Using default certificate" in notes(built)
    )


def test_certificate_not_covering_the_host_falls_back_with_the_exact_lines() -> None:
    built = run_build(
        [tls_ingress()], [service("foo")], FOO_SLICES, certs={"app/tls": cert(("other.example",))}
    )
    assert 'ssl_certificate "/p/ssl/fake.crt";' in server_block(render(built.model), "secure.example")
    assert notes(built) == [
        'Unexpected error validating SSL certificate "app/tls" for server "secure.example": '
        "x509: certificate is valid for other.example, not secure.example",
        "Validating certificate against DNS names. This will be deprecated in a future version",
        'SSL certificate "app/tls" does not contain a Common Name or Subject Alternative Name for server '
        '"secure.example": x509: certificate is valid for other.example, not secure.example',
        "Using default certificate",
    ]


def test_common_name_only_certificate_is_accepted_after_the_legacy_check() -> None:
    built = run_build(
        [tls_ingress()], [service("foo")], FOO_SLICES, certs={"app/tls": cert((), cn="secure.example")}
    )
    assert 'ssl_certificate "/p/ssl/app-tls.pem";' in server_block(render(built.model), "secure.example")
    assert "Using default certificate" not in notes(built)
    assert notes(built)[0].endswith("x509: certificate relies on legacy Common Name field, use SANs instead")


def test_expired_certificate_is_still_served_and_logged() -> None:
    expired = cert(("secure.example",), not_after=datetime(2026, 5, 1, 8, 30, 0, tzinfo=UTC))
    built = run_build([tls_ingress()], [service("foo")], FOO_SLICES, certs={"app/tls": expired})
    assert 'ssl_certificate "/p/ssl/app-tls.pem";' in server_block(render(built.model), "secure.example")
    assert notes(built) == [
        'SSL certificate for server "secure.example" expired (2026-05-01 08:30:00 +0000 UTC)'
    ]


def test_soon_expiring_certificate_is_logged() -> None:
    soon = cert(("secure.example",), not_after=NOW + timedelta(days=3))
    built = run_build([tls_ingress()], [service("foo")], FOO_SLICES, certs={"app/tls": soon})
    assert notes(built) == [
        'SSL certificate for server "secure.example" is about to expire (2026-06-04 12:00:00 +0000 UTC)'
    ]


def test_unusable_secret_is_reported_then_treated_as_missing() -> None:
    built = run_build(
        [tls_ingress()],
        [service("foo")],
        FOO_SLICES,
        certs={"app/tls": CertError("key 'tls.key' missing or empty")},
    )
    assert notes(built)[0] == "Error obtaining X.509 certificate: key 'tls.key' missing or empty"
    assert 'ssl_certificate "/p/ssl/fake.crt";' in server_block(render(built.model), "secure.example")


def test_wildcard_matches_exactly_one_label() -> None:
    wild = cert(("*.example.com",))
    assert verify_hostname(wild, "a.example.com")
    assert not verify_hostname(wild, "a.b.example.com")
    assert not verify_hostname(wild, "example.com")
    assert hostname_error(cert(()), "x.example") == (
        "x509: certificate is not valid for any names, but wanted to match x.example"
    )


# -- classes --------------------------------------------------------------------------------------


def iclass(name: str, controller: str, default: bool = False) -> JSON:
    ann = {"ingressclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {"metadata": {"name": name, "annotations": ann}, "spec": {"controller": controller}}


@pytest.mark.parametrize(
    ("spec_class", "annotation", "without_class", "classes", "ours"),
    [
        ("nginx", None, False, [iclass("nginx", "k8s.io/ingress-nginx")], True),
        ("other", None, True, [iclass("other", "example.com/other")], False),
        ("missing", None, True, [], False),
        (None, None, True, [], True),
        (None, None, False, [iclass("nginx", "k8s.io/ingress-nginx")], False),
        (None, None, False, [iclass("nginx", "k8s.io/ingress-nginx", default=True)], True),
        (None, "nginx", False, [], True),
        (None, "traefik", True, [], False),
    ],
)
def test_ingress_class_selection(
    spec_class: str | None, annotation: str | None, without_class: bool, classes: list[JSON], ours: bool
) -> None:
    ing = ingress("web", [], annotations={"kubernetes.io/ingress.class": annotation} if annotation else {})
    if spec_class:
        ing["spec"]["ingressClassName"] = spec_class
    opts = Options(watch_without_class=without_class)
    assert (class_problem(ing, classes, opts) == "") is ours


def test_foreign_ingresses_are_not_rendered() -> None:
    mine = ingress("mine", [rule("mine.example", ("/", "Prefix", "foo"))])
    theirs = ingress("theirs", [rule("theirs.example", ("/", "Prefix", "foo"))], ingressClassName="other")
    built = run_build([mine, theirs], [service("foo")], classes=[iclass("other", "example.com/other")])
    conf = render(built.model)
    assert "mine.example" in conf and "theirs.example" not in conf
    assert [i["metadata"]["name"] for i in built.ingresses] == ["mine"]
    assert built.ignored == (("app/theirs", 'ingress class "other" is not handled by k8s.io/ingress-nginx'),)


# -- status ---------------------------------------------------------------------------------------


def test_status_addresses_follow_ingress_nginx_per_service_type() -> None:
    lb = {
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.7", "externalIPs": ["192.0.2.9"]},
        "status": {
            "loadBalancer": {
                "ingress": [{"ip": "172.18.255.200", "ipMode": "VIP"}, {"hostname": "lb.example"}]
            }
        },
    }
    assert status_addresses(lb, "") == [
        {"ip": "172.18.255.200"},
        {"ip": "192.0.2.9"},
        {"hostname": "lb.example"},
    ]
    pending = {"spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.7"}, "status": {}}
    assert status_addresses(pending, "") == []
    assert status_addresses({"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.7"}}, "") == [
        {"ip": "10.96.0.7"}
    ]
    assert status_addresses(None, "localhost") == [{"hostname": "localhost"}]
    assert status_addresses(lb, "127.0.0.1") == [{"ip": "127.0.0.1"}]
    assert status_addresses(None, "") is None


# -- flags ----------------------------------------------------------------------------------------


def test_flags_accept_the_kind_manifest_and_ignore_unknown_ones() -> None:
    got = flagmod.parse(
        [
            "/nginx-ingress-controller",
            "--election-id=ingress-nginx-leader",
            "--controller-class=k8s.io/ingress-nginx",
            "--ingress-class=nginx",
            "--configmap=ingress-nginx/ingress-nginx-controller",
            "--validating-webhook=:8443",
            "--watch-ingress-without-class=true",
            "--publish-status-address=localhost",
            "--http-port",
            "8080",
        ]
    )
    assert got.watch_ingress_without_class is True
    assert got.publish_status_address == "localhost"
    assert got.http_port == 8080
    assert set(got.ignored) == {
        "--election-id=ingress-nginx-leader",
        "--configmap=ingress-nginx/ingress-nginx-controller",
        "--validating-webhook=:8443",
    }


def test_flags_reject_a_bad_publish_service_in_one_line() -> None:
    with pytest.raises(UsageProblem, match="expected <namespace>/<name>"):
        flagmod.parse(["--publish-service=ingress-nginx-controller"])
    with pytest.raises(UsageProblem, match="invalid boolean"):
        flagmod.parse(["--watch-ingress-without-class=maybe"])


# -- nginx accepts it -----------------------------------------------------------------------------


def test_nginx_t_accepts_a_rendered_configuration(tmp_path: Path) -> None:
    fake = generate_fake(tmp_path / "ssl")
    opts = Options(prefix=str(tmp_path), watch_without_class=True, http_port=18080, https_port=18443)
    ings = [
        tls_ingress(),
        ingress("web2", [rule("a.example", ("/x", "Prefix", "foo"), ("/y", "Exact", "ghost"))]),
        ingress("catch", [], defaultBackend={"service": {"name": "foo", "port": {"number": 80}}}),
    ]
    snap = Snapshot(tuple(ings), (), (service("foo"),), (eslice("foo", {"127.0.0.1": True}),))
    built = build(snap, opts, lambda _k: None, fake, NOW)
    Nginx(tmp_path).test(render(built.model))  # raises ConfigRejected with nginx's output
    assert (tmp_path / "nginx.conf.new").exists()


def test_nginx_t_rejects_a_broken_configuration_and_the_controller_keeps_the_old_one(tmp_path: Path) -> None:
    nginx = Nginx(tmp_path)
    with pytest.raises(ConfigRejected, match="unknown directive"):
        nginx.test("events {}\nhttp { bogus_directive on; }\n")
    assert not (tmp_path / "nginx.conf").exists()

    class Recorder(Nginx):
        started = 0

        def start(self) -> None:
            self.started += 1

    ctl = Controller(flagmod.Flags(), Kube(cast(Any, None)), tmp_path, Recorder(tmp_path))
    ctl.current = "the running configuration"
    built = run_build([], opts=Options(prefix=str(tmp_path)))
    ctl.apply("http { bogus_directive on; }\n", built)
    assert ctl.current == "the running configuration"
    assert not ctl.loaded.is_set()
    assert cast(Recorder, ctl.nginx).started == 0


def test_files_go_under_the_container_root_or_a_private_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KNETCHECK_ROOTFS", str(tmp_path))
    assert conf_dir(flagmod.parse([])) == (tmp_path / "etc" / "nginx", False)
    assert conf_dir(flagmod.parse(["--conf-dir=/run/ingress"])) == (tmp_path / "run" / "ingress", False)
    monkeypatch.delenv("KNETCHECK_ROOTFS")
    path, temporary = conf_dir(flagmod.parse([]))
    try:
        assert temporary and path.name.startswith("kncl-ingress-") and path != Path("/etc/nginx")
    finally:
        path.rmdir()
