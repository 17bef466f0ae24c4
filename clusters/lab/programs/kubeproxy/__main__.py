"""``python -m clusters.lab.programs.kubeproxy``: the image's ``/usr/local/bin/kube-proxy``."""

from __future__ import annotations

import sys

from clusters.lab.programs.kubeproxy import main

if __name__ == "__main__":
    sys.exit(main())
