"""gunicorn, configured from Python: workers, threads, bind, timeouts, graceful shutdown, hooks.

The app (and with it the model) is created in each worker after fork: ``preload_app`` stays off,
because TensorFlow is not fork-safe and each worker needs its own model copy, as in the seed's
``gunicorn -w 8``. More than one thread per worker selects the ``gthread`` worker class, whose
threads feed the dynamic batcher. Both worker classes put a deadline on reading each request
(``--request-read-timeout``, ``kinfer.server.workers``), so a slow client cannot hold a worker.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from kinfer.server import readiness
from kinfer.server.app import create_app
from kinfer.server.config import ServerConfig
from kinfer.server.metrics import mark_worker_dead
from kinfer.server.modelspec import ModelSpec
from kinfer.server.workers import DeadlineSyncWorker, DeadlineThreadWorker, set_read_timeout

log = logging.getLogger(__name__)


def _when_ready(server: Any) -> None:
    """Print the bound address (the real port when ``--port 0``) so scripts and tests can find us."""
    for listener in server.LISTENERS:
        host, port = listener.sock.getsockname()[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        print(f"kinfer serve: listening on http://{shown}:{port}", file=sys.stderr, flush=True)


def _child_exit(_server: Any, worker: Any) -> None:
    """Drop the dead worker's live gauges from the multiprocess aggregate, and its readiness."""
    mark_worker_dead(worker.pid)
    readiness.forget(worker.pid)


def gunicorn_options(config: ServerConfig) -> dict[str, Any]:
    """The gunicorn settings for ``config`` (the hooks included)."""
    return {
        "bind": f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}",
        "workers": config.workers,
        "threads": config.threads,
        # gthread / sync, each with a deadline on reading a request (kinfer.server.workers)
        "worker_class": DeadlineThreadWorker if config.threads > 1 else DeadlineSyncWorker,
        "timeout": config.timeout,
        "graceful_timeout": config.graceful_timeout,
        "keepalive": 5,
        "loglevel": config.log_level,
        "accesslog": None,
        "preload_app": False,
        "control_socket_disable": True,
        "when_ready": _when_ready,
        "child_exit": _child_exit,
        "post_fork": functools.partial(set_read_timeout, config.request_read_timeout),
    }


class KinferApplication(BaseApplication):  # type: ignore[misc]
    """``kinfer serve`` as a gunicorn application; ``load`` runs in every worker."""

    def __init__(self, config: ServerConfig, spec: ModelSpec, dataset: Path | None) -> None:
        self.server_config = config
        self.spec = spec
        self.dataset = dataset
        super().__init__()

    def load_config(self) -> None:
        known = self.cfg.settings
        for key, value in gunicorn_options(self.server_config).items():
            if key in known:
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app(self.server_config, self.spec, self.dataset)
