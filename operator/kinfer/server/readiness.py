"""A server is ready when every one of its workers is: one marker file per warm worker.

gunicorn's workers share one listening socket, and each loads its own model after fork. A worker that
is warm would answer ``/v2/health/ready`` with 200 while a sibling still loads, so the pod would turn
Ready (and a generator start) while some requests still get 503. Each worker therefore writes
``ready-<pid>`` in the multiprocess directory once its model is warm, the master removes it when the
worker exits (``child_exit``), and readiness counts the markers against ``--workers``. A restarted
worker makes the server unready until its model is warm again, which is what a client would meet.

Without ``PROMETHEUS_MULTIPROC_DIR`` (one process: unit tests, the Flask test client) the worker's
own state is the server's.
"""

from __future__ import annotations

import os
from pathlib import Path

from kinfer.server.metrics import MULTIPROC_ENV

_PREFIX = "ready-"


def _directory() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def mark_ready(pid: int) -> None:
    """This worker's model is loaded and warm."""
    directory = _directory()
    if directory is not None:
        (directory / f"{_PREFIX}{pid}").touch()


def forget(pid: int) -> None:
    """Gunicorn ``child_exit``: a dead worker is no longer ready."""
    directory = _directory()
    if directory is not None:
        (directory / f"{_PREFIX}{pid}").unlink(missing_ok=True)


def workers_ready() -> int | None:
    """How many workers are warm now; ``None`` when there is only this process to ask."""
    directory = _directory()
    if directory is None:
        return None
    try:
        return sum(1 for path in directory.iterdir() if path.name.startswith(_PREFIX))
    except OSError:
        return 0
