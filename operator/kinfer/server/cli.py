"""``kinfer serve``: parse flags (each also read from ``KINFER_SERVE_<FLAG>``), validate, run gunicorn.

Validation happens here, in the master, so a bad flag is one stderr line and exit code 2 before any
worker starts. ``PROMETHEUS_MULTIPROC_DIR`` is pointed at a fresh temporary directory before the
Prometheus client is imported, so ``/metrics`` aggregates every worker.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any, NoReturn

from kinfer.server.backends.null import DISTRIBUTIONS
from kinfer.server.config import ServerConfig, resolve
from kinfer.server.errors import InvalidInput
from kinfer.server.modelspec import FORMATS, KNOWN_MODELS, LAYOUTS, TASKS
from kinfer.server.preprocess import PREPROCESSORS

ENV_PREFIX = "KINFER_SERVE_"
EXIT_OK, EXIT_BAD_INPUT = 0, 2


class UsageError(Exception):
    """A flag or environment variable cannot be used; the message names it."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _names(raw: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in raw.split(",") if x.strip())


def _size(raw: str) -> tuple[int, int]:
    parts = [p.strip() for p in raw.replace("x", ",").split(",")]
    if len(parts) == 1:
        parts *= 2
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W, got {raw!r}") from None
    if h < 1 or w < 1 or len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected two positive sizes H,W, got {raw!r}")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kinfer serve", description="Serve a model with Flask under gunicorn.")
    add = p.add_argument
    add("--model", help="model file, SavedModel dir, or a dir with model.json (kinfer model build)")
    add("--format", choices=FORMATS, help="backend; default from model.json or the file name")
    add("--known-model", choices=tuple(KNOWN_MODELS), help="MLPerf tensor names and pre-processing")
    add("--model-name", help="name in the v2 API and metrics (default: the known model or file)")
    add("--task", choices=TASKS)
    add("--inputs", type=_names, default=(), help="input tensor names, comma-separated")
    add("--outputs", type=_names, default=(), help="output tensor names, comma-separated")
    add("--input-size", type=_size, help="H,W the pre-processing produces")
    add("--layout", choices=LAYOUTS, help="input tensor layout; default from model.json or the known model, else NHWC")
    add("--preprocess", choices=tuple(PREPROCESSORS))
    add("--dataset", help="directory of images that GET /gpu draws from")
    add("--workers", type=int, default=1, help="gunicorn worker processes (one model copy each)")
    add("--threads", type=int, default=1, help="threads per worker (>1: gthread workers)")
    add("--max-batch-size", type=int, default=1, help="dynamic batching in a worker; 1 = off")
    add("--max-delay-ms", type=float, default=5.0, help="longest wait for a batch to fill")
    add("--host", default="0.0.0.0")
    add("--port", type=int, default=5000, help="0 = any free port (printed on stderr)")
    add("--delay-ms", type=float, default=0.0, help="null backend: mean delay per model call")
    add("--delay-distribution", choices=DISTRIBUTIONS, default="fixed")
    add("--memory-fraction", type=float, help="per-process GPU memory cap (only with a GPU)")
    add("--intra-op-threads", type=int, default=0, help="runtime threads per worker; 0 = its default")
    add("--max-body-bytes", type=int, default=16 * 1024 * 1024)
    add(
        "--max-images-per-request", type=int, help="images (tensor rows) per request; default max(--max-batch-size, 32)"
    )
    add("--max-pixels-per-request", type=int, default=64_000_000, help="decoded pixels per request, all images")
    add("--request-read-timeout", type=float, default=5.0, help="seconds to receive a request's head and body; 0 = off")
    add("--timeout", type=int, default=120, help="gunicorn worker timeout, seconds")
    add("--graceful-timeout", type=int, default=15, help="seconds to finish requests on shutdown")
    add("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    add("--dataset-limit", type=int, default=64, help="images preloaded per worker for /gpu")
    add("--dry-run", action="store_true", help="print the resolved model spec as JSON and exit")
    return p


def _env_defaults(parser: argparse.ArgumentParser, environ: dict[str, str]) -> None:
    """Use ``KINFER_SERVE_<FLAG>`` as each flag's default, parsed and checked like the flag."""
    for action in parser._actions:
        flag = next((o for o in action.option_strings if o.startswith("--")), None)
        if flag is None or action.dest == "help":
            continue
        var = ENV_PREFIX + flag[2:].upper().replace("-", "_")
        raw = environ.get(var)
        if raw is None:
            continue
        if action.nargs == 0:
            value: Any = raw.strip().lower() in ("1", "true", "yes", "on")
        else:
            convert: Callable[[str], Any] = action.type if callable(action.type) else str
            try:
                value = convert(raw)
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise UsageError(f"{var}={raw!r}: {exc}") from None
            if action.choices is not None and value not in action.choices:
                raise UsageError(f"{var}={raw!r}: must be one of {', '.join(map(str, action.choices))}")
        parser.set_defaults(**{action.dest: value})


def parse_config(argv: list[str], environ: dict[str, str] | None = None) -> tuple[ServerConfig, bool]:
    """The ``ServerConfig`` for ``argv`` and the environment, and whether ``--dry-run`` was given."""
    parser = build_parser()
    _env_defaults(parser, dict(os.environ) if environ is None else environ)
    ns = vars(parser.parse_args(argv))
    dry_run = bool(ns.pop("dry_run"))
    ns.pop("help", None)
    known = {f.name for f in fields(ServerConfig)}
    return ServerConfig(**{k: v for k, v in ns.items() if k in known}), dry_run


def _describe(config: ServerConfig) -> str:
    spec, dataset = resolve(config)
    out = asdict(spec)
    out["labels"] = len(spec.labels)
    out["input_shape"] = [-1, *spec.row_shape]
    out["dataset"] = str(dataset) if dataset else None
    return json.dumps(out, indent=2)


def main(argv: list[str]) -> int:
    """Entry point of ``kinfer serve``; returns the exit code."""
    try:
        config, dry_run = parse_config(argv)
        if dry_run:
            print(_describe(config))
            return EXIT_OK
        spec, dataset = resolve(config)
    except (UsageError, InvalidInput) as exc:
        print(f"kinfer serve: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    logging.basicConfig(
        level=config.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )  # fmt: skip
    metrics_dir = tempfile.mkdtemp(prefix="kinfer-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    arbiter = os.getpid()
    try:
        from kinfer.server.gunicorn_app import KinferApplication  # after the env: prometheus reads it

        KinferApplication(config, spec, dataset).run()
    except SystemExit as exc:  # gunicorn's arbiter exits through sys.exit
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    finally:
        # A worker is a fork of this process: its sys.exit unwinds through here too. Only the arbiter
        # removes the directory, once it is done; a worker leaving must not take the other workers'
        # samples (and the file a worker still booting is about to open) with it.
        if os.getpid() == arbiter:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return EXIT_OK
