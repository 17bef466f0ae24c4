"""The lab's ingress-nginx controller: watches Ingresses and runs a real nginx with the rendered config.

``python -m clusters.lab.programs.ingress --ingress-class=nginx --controller-class=k8s.io/ingress-nginx
--watch-ingress-without-class=true --publish-service=ingress-nginx/ingress-nginx-controller`` plays
the ``registry.k8s.io/ingress-nginx/controller`` image (``/nginx-ingress-controller``). Modules:
``flags`` (the command line), ``build`` (objects → routing model, pure), ``render`` (model →
nginx.conf, pure), ``certs`` (fake certificate, TLS Secrets), ``nginx`` (the child process),
``controller`` (sync loop, status, health), ``main`` (logging, signals).

Known differences from ingress-nginx v1.15 (on purpose or by necessity):

* no Lua: static upstreams and ``proxy_pass``; endpoint changes reload nginx;
* annotations: only ``nginx.ingress.kubernetes.io/ssl-redirect``; the ConfigMap is not read;
* no leader election (one instance is the leader), no admission webhook, no metrics;
* status is written on every sync instead of every 60 s;
* ExternalName backends answer 503 (not resolved);
* a default backend without ``--default-backend-service`` answers ``default backend - 404``
  (the body of the classic default-http-backend image; v1.x's built-in one sends nginx's HTML 404).
"""
