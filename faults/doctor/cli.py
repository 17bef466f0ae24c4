"""``knetcheck doctor``: diagnose a running cluster from its kubeconfig, for pre-upgrade checks and
for a person at 3 a.m.

Exit status is the contract scripts rely on: 0 no findings, 1 findings, 2 the doctor could not run
(bad arguments, unreadable kubeconfig, unreachable API), always as one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from clusters.errors import KnetcheckError, UsageProblem

PROG = "knetcheck doctor"
OK, FOUND, USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageProblem(f"{message} (see {self.prog} --help)")


def _parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        description="Diagnose a cluster network: name what is broken, with evidence "
        "and the runbook's fix. Exit 0: no findings; 1: findings; 2: could not run.",
    )
    parser.add_argument(
        "--kubeconfig", type=Path, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    parser.add_argument("--context", help="kubeconfig context (default: its current-context)")
    parser.add_argument(
        "--allow-destructive",
        action="store_true",
        help="allow node access on an existing cluster (privileged debug pods) for node-level checks",
    )
    parser.add_argument(
        "--no-probes",
        action="store_true",
        help="skip the probe pods (no namespace is created; faster, read-only)",
    )
    parser.add_argument("--json", action="store_true", help="print findings as JSON")
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for probe pods to become Ready (default 60)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the doctor reads")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(args_list)
        if args.timeout <= 0:
            raise UsageProblem("--timeout must be > 0 seconds")
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        from clusters.attach import attach
        from faults.doctor import diagnose
        from faults.doctor.render import as_json, text

        cluster = attach(args.kubeconfig, args.context, allow_destructive=args.allow_destructive)
        started = time.monotonic()
        findings = diagnose(cluster, probes=not args.no_probes, timeout=args.timeout)
        elapsed = time.monotonic() - started
    except KnetcheckError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return USAGE
    except Exception as exc:  # API unreachable and the like: one line, not a traceback
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        if not isinstance(exc, HTTPError | ApiException | OSError):
            raise
        detail = " ".join(str(exc).split())[:300]
        print(
            f"{PROG}: cannot read the cluster: {detail}; check the kubeconfig and that the API server "
            "answers",
            file=sys.stderr,
        )
        return USAGE
    print(as_json(findings, elapsed=elapsed) if args.json else text(findings, elapsed=elapsed))
    return FOUND if findings else OK
