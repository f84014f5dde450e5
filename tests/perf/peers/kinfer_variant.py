"""``kinfer serve`` with one of its per-request parts taken out, or profiled, to measure what each costs
(bench_peer_servers.py's ``cpu`` block). Not a product entry point: the variants exist only here.

    python kinfer_variant.py VARIANT [kinfer serve flags...]

VARIANT: ``asis`` (``kinfer serve`` itself), ``no-middleware`` (the Flask app without
``MetricsMiddleware``: no Server-Timing header, no request metrics), ``cprofile:DIR`` (as is, each
worker under cProfile with a CPU-time clock, ``time.thread_time``: the worker's own thread, on-CPU time
only; its stats written to DIR/<pid>.prof when the worker exits). The read deadline (DeadlineSocket)
is taken out with ``kinfer serve``'s own flag, ``--request-read-timeout 0``.
"""

from __future__ import annotations

import cProfile
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kinfer.server.cli import parse_config
from kinfer.server.config import resolve


def main(variant: str, argv: list[str]) -> None:
    config, _ = parse_config(argv)
    spec, dataset = resolve(config)
    metrics_dir = tempfile.mkdtemp(prefix="kinfer-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from kinfer.server.gunicorn_app import KinferApplication  # after the env, as the CLI does

    profiles = variant.split(":", 1)[1] if variant.startswith("cprofile:") else None
    profiler = cProfile.Profile(time.thread_time)

    def post_worker_init(worker: Any) -> None:
        profiler.enable()

    def worker_exit(server: Any, worker: Any) -> None:
        profiler.disable()
        profiler.dump_stats(Path(str(profiles)) / f"{os.getpid()}.prof")

    class Variant(KinferApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            super().load_config()
            if profiles:
                self.cfg.set("post_worker_init", post_worker_init)
                self.cfg.set("worker_exit", worker_exit)

        def load(self) -> Any:
            app = super().load()
            if variant == "no-middleware":
                app.wsgi_app = app.wsgi_app.app
            return app

    try:
        Variant(config, spec, dataset).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
