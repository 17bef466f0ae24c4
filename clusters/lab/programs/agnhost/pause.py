"""``agnhost pause``: block until SIGINT or SIGTERM.

Upstream (``pause/pause.go``) prints ``Paused`` with Go's println (stderr, no timestamp) and exits 1 on
SIGINT and 2 on SIGTERM; the lab keeps those codes, they show up as the container's exit code.
This module imports almost nothing: it is the image's default command, so it starts most often.
"""

from __future__ import annotations

import signal
import sys

from clusters.lab.programs.agnhost.flags import Flag, Parsed
from clusters.lab.programs.agnhost.waiting import SignalWait

USE = ""
SHORT = "Pauses the execution"
MAX_ARGS = -1
FLAGS: tuple[Flag, ...] = ()
EXIT_CODES = {signal.SIGINT: 1, signal.SIGTERM: 2}


def main(parsed: Parsed) -> int:
    signals = SignalWait(signal.SIGINT, signal.SIGTERM)
    sys.stderr.write("Paused\n")
    sys.stderr.flush()
    signum = signals.wait()
    code = EXIT_CODES[signal.Signals(signum)]
    sys.stdout.write(f"exiting {code}\n")
    return code
