"""``python -m clusters.lab.programs.ingress``: the image's ``/nginx-ingress-controller``."""

from __future__ import annotations

import sys

from clusters.lab.programs.ingress.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
