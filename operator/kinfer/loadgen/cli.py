"""``kinfer loadgen URL [flags]``: parse flags (each also read from ``KINFER_LOADGEN_<FLAG>``), run.

Exit codes: 0 done, 1 an SLO given by ``--slo-p99-ms``/``--min-success-rate`` failed (in capacity
mode: even ``--min-rps`` fails it), 2 bad input (one line on stderr naming the problem).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from kinfer.loadgen.config import ConfigError, build_config

EXIT_OK = 0
EXIT_SLO_FAILED = 1
EXIT_BAD_INPUT = 2
ENV_PREFIX = "KINFER_LOADGEN_"


class _BadInput(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line instead of usage + message + exit."""

    def error(self, message: str) -> NoReturn:
        raise _BadInput(message)


def build_parser() -> argparse.ArgumentParser:
    """The flags of DESIGN.md §9, plus --linger, --control-host, --input-name and the SLO flags."""
    p = _Parser(
        prog="kinfer loadgen",
        description="HTTP load generator. Open loop (--rps/--schedule): latency is measured from each "
        "request's scheduled send time. Closed loop (--concurrency): N clients send back to back, latency "
        "from the actual send. Every flag can also be set as KINFER_LOADGEN_<FLAG> (e.g. KINFER_LOADGEN_RPS=50).",
    )
    p.add_argument("url", nargs="?", help="target URL, http://host[:port]/path")
    rate = p.add_argument_group("rate")
    rate.add_argument("--rps", type=float, help="constant offered rate, requests/s")
    rate.add_argument("--schedule", help="YAML/JSON file: list of {rps, duration} / {rampTo, duration}, "
                      "or (closed loop) {concurrency, duration}")  # fmt: skip
    rate.add_argument("--duration", help="run length: seconds or 10s/2m (default 60 with --rps)")
    rate.add_argument("--arrival", choices=["poisson", "uniform", "burst"], help="default poisson")
    rate.add_argument("--seed", type=int, help="seed for arrivals and payload choice")
    rate.add_argument("--requests", type=int, help="stop after this many requests in total")
    closed = p.add_argument_group("closed loop (clients send back to back; hides queueing)")
    closed.add_argument("--concurrency", type=int, help="clients, each sending when its last response came")
    closed.add_argument("--think-time", help="each client's pause before its next request, seconds (default 0)")
    cap = p.add_argument_group("capacity mode (find the highest rate meeting the SLO)")
    cap.add_argument("--mode", choices=["schedule", "capacity"], help="default schedule")
    cap.add_argument("--min-rps", type=float, help="lowest rate probed (default 1)")
    cap.add_argument("--max-rps", type=float, help="highest rate probed (default 1000)")
    cap.add_argument("--probe-duration", help="a probe's measurement, 3 windows of a third of it, after the "
                     "warm-up, more while they disagree: seconds or 10s/2m (default 10s)")  # fmt: skip
    cap.add_argument("--precision", type=float, help="stop when (hi - lo) / hi < this (default 0.05)")
    cap.add_argument("--warmup", help="sending discarded before a probe's windows (default one window)")
    cap.add_argument("--tolerance", type=float, help="3 windows agree within this fraction (default 0.1)")
    cap.add_argument("--max-windows", type=int, help="most windows per probe, unstable after (default 10)")
    req = p.add_argument_group("requests")
    req.add_argument("--method", choices=["GET", "POST", "PUT", "get", "post", "put"])
    req.add_argument("--payload", help="none | dataset:DIR | file:PATH (default none)")
    req.add_argument("--protocol", choices=["raw", "v2"], help="raw bytes or Open Inference Protocol JSON")
    req.add_argument("--input-name", help="tensor name in v2 requests (default input)")
    req.add_argument("--batch-size", type=int, help="images per request (--protocol v2; default 1)")
    req.add_argument("--timeout-ms", type=float, help="per-request timeout (default 10000)")
    req.add_argument("--max-in-flight", type=int, help="beyond this, requests are counted dropped")
    rec = p.add_argument_group("recording")
    rec.add_argument("--window", help="window of the avg* aggregates, seconds (default 60)")
    rec.add_argument("--interval", help="record interval, seconds (default 1)")
    rec.add_argument("--output", help="results directory (summary.json, records.csv, stages.csv)")
    rec.add_argument("--quiet", action="store_true", default=None, help="no per-record terminal line")
    rec.add_argument("--server-metrics", metavar="URL[,URL...]",
                     help="the target's pods' Prometheus /metrics, scraped every record for the server's "
                     "CPU, memory and GPU (serverCPU, serverMemoryMB, serverGPUUtil, serverGPUMemoryMB)")  # fmt: skip
    rec.add_argument("--slo-p99-ms", type=float, help="exit 1 if the whole-run p99 exceeds this")
    rec.add_argument("--min-success-rate", type=float, help="exit 1 if completed/offered is below (0..1)")
    run = p.add_argument_group("process")
    run.add_argument("--processes", type=int, help="generator processes sharing the rate (default 1)")
    run.add_argument("--control-host", help="control API address (default 127.0.0.1; 0.0.0.0 with --control-token)")
    run.add_argument(
        "--control-token",
        help="bearer token every state-changing control call must carry (without one: loopback only)",
    )
    run.add_argument("--control-port", type=int, help="control API port (default 8089, 0 any, -1 none)")
    run.add_argument("--worker-cpus", help="pin generator processes to these CPUs, e.g. 2,3 or 2-5")
    run.add_argument("--linger", help="keep the control API up this long after the run (default 0)")
    return p


def _apply_env(parser: argparse.ArgumentParser) -> None:
    """Defaults from ``KINFER_LOADGEN_<DEST>``; argparse converts string defaults with the flag's type."""
    defaults: dict[str, Any] = {}
    for action in parser._actions:
        if action.dest in ("help",):
            continue
        value = os.environ.get(ENV_PREFIX + action.dest.upper())
        if value is None:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            defaults[action.dest] = value.strip().lower() in ("1", "true", "yes", "on")
        else:
            if action.choices is not None and value not in action.choices:
                raise _BadInput(
                    f"{ENV_PREFIX}{action.dest.upper()}={value!r}: choose from {', '.join(action.choices)}"
                )
            defaults[action.dest] = value
    parser.set_defaults(**defaults)


def parse(argv: list[str]) -> dict[str, Any]:
    """Flags and environment as a dict keyed by argparse dest; raises ``ConfigError`` on bad input."""
    parser = build_parser()
    try:
        _apply_env(parser)
        ns = parser.parse_args(argv)
    except _BadInput as exc:
        raise ConfigError(str(exc)) from None
    return vars(ns)


def main(argv: list[str]) -> int:
    """Entry point of ``kinfer loadgen``."""
    if any(a in ("-h", "--help") for a in argv):
        build_parser().print_help()
        return EXIT_OK
    try:
        config = build_config(parse(argv))
    except ConfigError as exc:
        print(f"kinfer loadgen: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    if config.mode == "capacity":
        from kinfer.loadgen.capacity import run_main as run_capacity

        return run_capacity(config)

    from kinfer.loadgen.runner import run_main

    return run_main(config)
