"""``python -m clusters.lab.programs.coredns -conf /etc/coredns/Corefile``: the image's /coredns."""

from __future__ import annotations

import sys

from clusters.lab.programs.coredns.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
