"""``kinfer operator [--namespace NS] [--metrics-port P] [--verbose]``: run the kopf operator.

Flags override the ``KINFER_OPERATOR_*`` environment; settings are validated before anything starts,
so a bad value is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import sys

from kinfer.controller.settings import SettingsError, from_env

EXIT_BAD_INPUT = 2


def main(argv: list[str]) -> int:
    """Entry point of ``kinfer operator``."""
    parser = argparse.ArgumentParser(prog="kinfer operator", description="Run the kinfer operator (kopf).")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", help="watch only this namespace (KINFER_OPERATOR_NAMESPACE)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (default)")
    parser.add_argument("--metrics-port", type=int, help="port of /healthz and /metrics; 0 = off")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.namespace:
        env["KINFER_OPERATOR_NAMESPACE"] = args.namespace
    if args.all_namespaces:
        env["KINFER_OPERATOR_NAMESPACE"] = ""
    if args.metrics_port is not None:
        env["KINFER_OPERATOR_METRICS_PORT"] = str(args.metrics_port)
    try:
        settings = from_env(env)
    except SettingsError as exc:
        print(f"kinfer operator: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in settings.extra:
        logging.warning("ignoring unknown setting %s", name)
    shown = {k: v for k, v in dataclasses.asdict(settings).items() if k != "extra"}
    logging.info("kinfer operator settings: %s", shown)

    from kinfer.controller.leader import LostLeadership
    from kinfer.controller.operator import run  # kopf is imported only once settings are valid

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(settings))
    except LostLeadership as exc:  # another process may be leading now: never act beside it
        print(f"kinfer operator: {exc}", file=sys.stderr)
        return 1
    return 0
