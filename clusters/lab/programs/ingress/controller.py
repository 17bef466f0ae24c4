"""The sync loop: informers → model → nginx.conf → ``nginx -t`` → reload, plus status and health.

Like ingress-nginx, every change of an IngressClass, Ingress, Service, EndpointSlice or Secret
marks the state dirty; one worker rebuilds the whole configuration (events arriving together are
coalesced) and reloads nginx only when the rendered text changed. ingress-nginx reloads for
endpoint changes only when its Lua balancer cannot absorb them; the lab has no Lua, so endpoint
changes reload too (same routing, more reloads). The status of every Ingress of ours follows the
``--publish-service`` (or ``--publish-status-address``) through the ``ingresses/status``
subresource; with a single controller instance it is always the leader.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from clusters.lab.controllers.client import MERGE_PATCH, Kube, describe_error
from clusters.lab.controllers.informer import Handlers, Informer, InformerFactory
from clusters.lab.programs.ingress.build import (
    JSON,
    Built,
    Options,
    Snapshot,
    build,
    current_status,
    status_addresses,
)
from clusters.lab.programs.ingress.certs import CertError, CertInfo, CertStore, generate_fake, secret_pems
from clusters.lab.programs.ingress.flags import Flags
from clusters.lab.programs.ingress.nginx import ConfigRejected, Nginx
from clusters.lab.programs.ingress.render import CertFiles, render

log = logging.getLogger(__name__)

INGRESSES = "/apis/networking.k8s.io/v1/ingresses"
CLASSES = "/apis/networking.k8s.io/v1/ingressclasses"
SERVICES = "/api/v1/services"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
SECRETS = "/api/v1/secrets"
SYNC_TIMEOUT = 60.0
COALESCE = 0.1


def _access_log() -> str:
    """``/dev/stdout`` when it can be opened (a file or pipe), as ingress-nginx logs; else off."""
    try:
        with open("/dev/stdout", "a"):
            return "/dev/stdout"
    except OSError:
        return "off"


class Controller:
    def __init__(self, flags: Flags, kube: Kube, conf_dir: Path, nginx: Nginx | None = None) -> None:
        self.flags = flags
        self.kube = kube
        self.conf_dir = conf_dir
        self.nginx = nginx or Nginx(conf_dir)
        self.certs = CertStore(conf_dir / "ssl")
        self.factory = InformerFactory(kube)
        self.informers: dict[str, Informer] = {
            p: self.factory.informer(p) for p in (INGRESSES, CLASSES, SERVICES, SLICES, SECRETS)
        }
        self.dirty = threading.Event()
        for inf in self.informers.values():
            inf.add_handlers(
                Handlers(
                    on_add=lambda _o: self.dirty.set(),
                    on_update=lambda _o, _n: self.dirty.set(),
                    on_delete=lambda _o: self.dirty.set(),
                )
            )
        self.options = Options(
            controller_class=flags.controller_class,
            ingress_class=flags.ingress_class,
            watch_without_class=flags.watch_ingress_without_class,
            prefix=str(conf_dir),
            http_port=flags.http_port,
            https_port=flags.https_port,
            bind_address=flags.bind_address,
            access_log=_access_log(),
            default_backend_service=flags.default_backend_service,
        )
        self.default_cert: CertFiles | None = None
        self.current = ""
        self.loaded = threading.Event()
        self.last: Built | None = None
        self.ignored: dict[str, str] = {}
        self._health: ThreadingHTTPServer | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        try:
            self.default_cert = generate_fake(self.conf_dir / "ssl")
            log.info("Creating default SSL certificate: CN=Kubernetes Ingress Controller Fake Certificate")
            self.start_health()
            self.factory.start()
            if not self.factory.wait_synced(SYNC_TIMEOUT):
                log.error("Timed out waiting for caches to sync after %.0fs", SYNC_TIMEOUT)
                return 1
            log.info("Starting NGINX Ingress controller")
            while not stop.is_set():
                if self.dirty.is_set() or not self.loaded.is_set():
                    if stop.wait(COALESCE):  # let a burst of events land before one rebuild
                        break
                    self.dirty.clear()
                    self.sync()
                self.supervise()
                self.dirty.wait(1.0)
            log.info("Shutting down controller queues")
            self.shutdown_status()
            return 0
        finally:
            self.factory.stop()
            self.nginx.stop()
            log.info("NGINX process has stopped")
            if self._health is not None:
                self._health.shutdown()
                self._health.server_close()

    def supervise(self) -> None:
        """Respawn nginx if it died, as ingress-nginx does."""
        if self.loaded.is_set() and not self.nginx.running():
            log.error("NGINX process has stopped unexpectedly; starting it again")
            self.nginx.start()

    def healthy(self) -> bool:
        return self.loaded.is_set() and self.nginx.running()

    # -- one sync ---------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        ingresses = self.informers[INGRESSES].objects(self.flags.watch_namespace or None)
        return Snapshot(
            ingresses=tuple(ingresses),
            classes=tuple(self.informers[CLASSES].objects()),
            services=tuple(self.informers[SERVICES].objects()),
            slices=tuple(self.informers[SLICES].objects()),
        )

    def lookup_cert(self, secret_key: str) -> CertInfo | CertError | None:
        secret = self.informers[SECRETS].get(secret_key)
        if secret is None:
            return None
        try:
            crt, key = secret_pems(secret)
            return self.certs.load(secret_key, crt, key)
        except CertError as err:
            return err

    def sync(self) -> None:
        assert self.default_cert is not None
        built = build(self.snapshot(), self.options, self.lookup_cert, self.default_cert, datetime.now(UTC))
        self.last = built
        for note in built.notes:
            log.log(note.level, "%s", note.text)
        for ing_key, why in built.ignored:
            if self.ignored.get(ing_key) != why:  # once per Ingress and reason, as its event would
                log.info(
                    "Ignoring ingress because of error while validating ingress class",
                    extra={"kv": {"ingress": ing_key, "error": why}},
                )
        self.ignored = dict(built.ignored)
        text = render(built.model)
        if text != self.current:
            self.apply(text, built)
        if self.loaded.is_set():
            self.update_status(built.ingresses)

    def apply(self, text: str, built: Built) -> None:
        log.info("Configuration changes detected, backend reload required")
        try:
            candidate = self.nginx.test(text)
        except ConfigRejected as err:
            log.error("Unexpected failure reloading the backend: %s", err)
            return
        self.nginx.install(candidate)
        if self.nginx.running():
            self.nginx.reload()
        else:
            self.nginx.start()
        self.current = text
        self.loaded.set()
        log.info("Backend successfully reloaded")
        self.certs.prune(set(built.cert_files))

    # -- status -----------------------------------------------------------------------------

    def wanted_status(self) -> list[JSON] | None:
        svc: JSON | None = None
        if self.flags.publish_service:
            svc = self.informers[SERVICES].get(self.flags.publish_service)
            if svc is None and not self.flags.publish_status_address:
                log.warning('Error getting publish service "%s": not found', self.flags.publish_service)
                return None
        return status_addresses(svc, self.flags.publish_status_address)

    def update_status(self, ingresses: tuple[JSON, ...], want: list[JSON] | None = None) -> None:
        if not self.flags.update_status:
            return
        if want is None:
            want = self.wanted_status()
        if want is None:
            return
        for ing in ingresses:
            cur = current_status(ing)
            if cur == want:
                continue
            m = ing.get("metadata") or {}
            ns, name = str(m.get("namespace", "")), str(m.get("name", ""))
            log.info(
                "updating Ingress status",
                extra={"kv": {"namespace": ns, "ingress": name, "currentValue": cur, "newValue": want}},
            )
            path = f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/{name}/status"
            body = {"status": {"loadBalancer": {"ingress": want or None}}}
            try:
                self.kube.patch(path, body, MERGE_PATCH)
            except Exception as err:
                log.warning("error updating ingress rule: %s", describe_error(err))

    def shutdown_status(self) -> None:
        """ingress-nginx's ``statusSync.Shutdown``: the last instance removes its address."""
        if not self.flags.update_status or self.last is None:
            return
        if not self.flags.update_status_on_shutdown:
            log.warning("skipping update of status of Ingress rules")
            return
        want = self.wanted_status()
        if want is None or len(want) > 1 or self._other_replicas():
            return
        log.info("removing value from ingress status", extra={"kv": {"address": want}})
        fresh = [self.informers[INGRESSES].get(f"{_ns(i)}/{_name(i)}") or i for i in self.last.ingresses]
        self.update_status(tuple(fresh), want=[])

    def _other_replicas(self) -> bool:
        name, ns = os.environ.get("POD_NAME"), os.environ.get("POD_NAMESPACE")
        if not name or not ns:
            return False
        try:
            pod = self.kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")
            labels = (pod.get("metadata") or {}).get("labels") or {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            pods = self.kube.get(f"/api/v1/namespaces/{ns}/pods", [("labelSelector", selector)])
        except Exception as err:
            log.warning("cannot list controller pods: %s", describe_error(err))
            return False
        return len(pods.get("items") or []) > 1

    # -- health -----------------------------------------------------------------------------

    def start_health(self) -> None:
        controller = self

        class Health(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/healthz":
                    self._answer(404, b"404 page not found\n")
                elif controller.healthy():
                    self._answer(200, b"ok")
                else:
                    self._answer(500, b"nginx is not running")

            def _answer(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((self.flags.healthz_host or "0.0.0.0", self.flags.healthz_port), Health)
        server.daemon_threads = True
        self._health = server
        threading.Thread(target=server.serve_forever, name="healthz", daemon=True).start()


def _ns(obj: JSON) -> str:
    return str((obj.get("metadata") or {}).get("namespace", ""))


def _name(obj: JSON) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))
