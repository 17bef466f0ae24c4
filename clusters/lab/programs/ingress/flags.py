"""ingress-nginx's command line (``/nginx-ingress-controller``), leniently.

Manifests for the real image pass many flags (``--election-id``, ``--configmap``,
``--validating-webhook`` …); the lab honours the ones that change routing or status and logs
the rest as ignored instead of failing, so the upstream kind manifest runs unchanged.
Booleans take pflag's forms: ``--flag``, ``--flag=true|false``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from clusters.errors import UsageProblem


@dataclass(frozen=True)
class Flags:
    ingress_class: str = "nginx"
    controller_class: str = "k8s.io/ingress-nginx"
    watch_ingress_without_class: bool = False
    publish_service: str = ""
    publish_status_address: str = ""
    update_status: bool = True
    update_status_on_shutdown: bool = True
    http_port: int = 80
    https_port: int = 443
    healthz_port: int = 10254
    healthz_host: str = ""
    kubeconfig: str = ""
    default_backend_service: str = ""
    watch_namespace: str = ""
    conf_dir: str = ""
    bind_address: str = ""
    ignored: tuple[str, ...] = ()


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "t", "true", "yes"):
        return True
    if lowered in ("0", "f", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port {value} out of range 1-65535")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageProblem(f"nginx-ingress-controller: {message}; see --help")


def parse(argv: Sequence[str]) -> Flags:
    p = _Parser(prog="nginx-ingress-controller", allow_abbrev=False)
    p.add_argument("--ingress-class", default="nginx")
    p.add_argument("--controller-class", default="k8s.io/ingress-nginx")
    for name, default in (
        ("--watch-ingress-without-class", False),
        ("--update-status", True),
        ("--update-status-on-shutdown", True),
    ):
        p.add_argument(name, type=_bool, nargs="?", const=True, default=default)
    p.add_argument("--publish-service", default="")
    p.add_argument("--publish-status-address", default="")
    p.add_argument("--http-port", type=_port, default=80)
    p.add_argument("--https-port", type=_port, default=443)
    p.add_argument("--healthz-port", type=_port, default=10254)
    p.add_argument("--healthz-host", default="")
    p.add_argument("--kubeconfig", default="")
    p.add_argument("--default-backend-service", default="")
    p.add_argument("--watch-namespace", default="")
    p.add_argument("--conf-dir", default="", help="lab only: where nginx.conf and its files go")
    p.add_argument("--bind-address", default="", help="lab only: the ConfigMap key bind-address")
    words = list(argv)
    if words and words[0].rsplit("/", 1)[-1] == "nginx-ingress-controller":
        words = words[1:]  # the kind manifest repeats the entrypoint as the first arg
    ns, rest = p.parse_known_args(words)
    if ns.publish_service and "/" not in ns.publish_service:
        raise UsageProblem(
            f"--publish-service={ns.publish_service}: expected <namespace>/<name>, "
            "e.g. ingress-nginx/ingress-nginx-controller"
        )
    return Flags(
        ingress_class=ns.ingress_class,
        controller_class=ns.controller_class,
        watch_ingress_without_class=ns.watch_ingress_without_class,
        publish_service=ns.publish_service,
        publish_status_address=ns.publish_status_address,
        update_status=ns.update_status,
        update_status_on_shutdown=ns.update_status_on_shutdown,
        http_port=ns.http_port,
        https_port=ns.https_port,
        healthz_port=ns.healthz_port,
        healthz_host=ns.healthz_host,
        kubeconfig=ns.kubeconfig,
        default_backend_service=ns.default_backend_service,
        watch_namespace=ns.watch_namespace,
        conf_dir=ns.conf_dir,
        bind_address=ns.bind_address,
        ignored=tuple(rest),
    )
