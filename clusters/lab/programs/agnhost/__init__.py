"""The lab's agnhost: the same subcommands, flags and quirks as ``registry.k8s.io/e2e-test-images/agnhost``.

The lab kubelet runs ``python -m clusters.lab.programs.agnhost <args>`` for that image, so probes written
for real clusters (``/dial``, ``/shell``, ``agnhost connect``) see the behaviour they would see on kind.
Subcommand modules are imported lazily: 30 pods must start in seconds on 2 cores.
"""
