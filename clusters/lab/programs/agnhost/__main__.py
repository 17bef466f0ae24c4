"""``python -m clusters.lab.programs.agnhost <subcommand> [flags]``: the image's ENTRYPOINT /agnhost."""

from __future__ import annotations

import sys

from clusters.lab.programs.agnhost.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
