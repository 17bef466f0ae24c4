"""``python -m clusters.lab.api --port N --state-dir D --kubeconfig PATH``: the lab API in the foreground."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from clusters.lab.api.server import start_api_server, write_kubeconfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clusters.lab.api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--kubeconfig", type=Path, default=None)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    server = start_api_server(host=args.host, port=args.port, state_dir=args.state_dir)
    if args.kubeconfig is not None:
        write_kubeconfig(args.kubeconfig, server.url)
    logging.getLogger("clusters.lab.api").info("serving %s (Ctrl-C to stop)", server.url)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        done.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
