"""One worker's model: loaded after fork in a background thread, warmed up, then served.

Until ``ready`` the app answers 503 on readiness and inference routes, so a worker is live at once
and ready when its model is. Loading happens in the worker, never in the gunicorn master, because
TensorFlow is not fork-safe; the backend module is imported by the loader thread too, so that even
its framework import does not hold up the worker's first answers.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from kinfer.server import gpu, readiness
from kinfer.server.backends import Backend, create_backend
from kinfer.server.backends.base import Batch, Outputs
from kinfer.server.batching import Batcher, BatchResult
from kinfer.server.config import ServerConfig
from kinfer.server.errors import BackendError, InvalidInput, ModelNotReady
from kinfer.server.metrics import ServerMetrics
from kinfer.server.modelspec import ModelSpec, guess_roles
from kinfer.server.preprocess import decode_image, preprocess

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
BackendFactory = Callable[[ModelSpec], Backend]


class ModelRuntime:
    """The model of this worker, its batcher and its preloaded dataset images."""

    def __init__(
        self,
        spec: ModelSpec,
        config: ServerConfig,
        metrics: ServerMetrics,
        dataset: Path | None = None,
        backend_factory: BackendFactory | None = None,
    ) -> None:
        self.spec = spec
        self.config = config
        self.metrics = metrics
        self.dataset = dataset
        self._factory: BackendFactory = backend_factory or (lambda s: create_backend(s, config.backend_options()))
        self.backend: Backend | None = None
        self.images: list[NDArray[np.generic]] = []
        self.error: str | None = None
        self._ready = threading.Event()
        self._rng = random.Random()
        self.batcher = Batcher(
            self._predict,
            max_batch_size=config.max_batch_size,
            max_delay_s=config.max_delay_ms / 1000.0,
            on_batch=metrics.observe_batch,
        )

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        """Block until loaded (tests, warm-up scripts); False on timeout."""
        return self._ready.wait(timeout)

    def start(self, background: bool = True) -> None:
        """Load the model now, or in a daemon thread so the worker answers (503) meanwhile."""
        if background:
            threading.Thread(target=self.load, name="kinfer-loader", daemon=True).start()
        else:
            self.load()

    def load(self) -> None:
        """Create and load the backend, preload the dataset, warm up; errors keep the worker unready."""
        started = time.perf_counter()
        try:
            log.info("worker sees %s", gpu.describe())
            backend = self._factory(self.spec)
            backend.load()
            self._check_input_shape(backend)
            if not self.spec.roles:
                self.spec = replace(
                    self.spec, roles=guess_roles(self.spec.task, tuple(o.name for o in backend.outputs))
                )
            self.backend = backend
            self.images = self._load_dataset()
            self._warm_up()
        except Exception as exc:  # process boundary: the worker stays up, unready, and says why
            self.error = f"model failed to load: {type(exc).__name__}: {exc}"
            log.exception("model %s failed to load", self.spec.name)
            return
        self._ready.set()
        self.metrics.workers_ready.labels(self.spec.name).inc()
        readiness.mark_ready(os.getpid())
        log.info("model %s (%s) ready in %.2fs", self.spec.name, self.spec.format, time.perf_counter() - started)

    def _check_input_shape(self, backend: Backend) -> None:
        """Refuse a model whose fixed input dimensions contradict the spec's layout and input size.

        Without this a wrong ``--layout`` (MLPerf's SSD-ResNet34 wants NCHW) would surface as the
        runtime's shape error at warm-up; this says which flag to change. Dynamic dimensions (-1) and
        inputs not of rank 4 are not checked.
        """
        shape = backend.input.shape
        expected = self.spec.row_shape
        if len(shape) != 4 or all(d < 0 or d == e for d, e in zip(shape[1:], expected, strict=True)):
            return
        raise ValueError(
            f"model input {backend.input.name} has shape {list(shape)} but the server feeds "
            f"[N, {', '.join(map(str, expected))}] ({self.spec.layout}, input size "
            f"{self.spec.input_size[0]}x{self.spec.input_size[1]}): check --layout and --input-size"
        )

    def _warm_up(self) -> None:
        sizes = {1, self.config.max_batch_size}
        for n in sorted(sizes):
            rows = np.stack([self.images[i % len(self.images)] for i in range(n)])
            self._predict(rows)

    def _load_dataset(self) -> list[NDArray[np.generic]]:
        rows: list[NDArray[np.generic]] = []
        if self.dataset is not None:
            files = sorted(p for p in self.dataset.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            for path in files[: self.config.dataset_limit]:
                try:
                    rows.append(self.prepare(decode_image(path.read_bytes())))
                except (OSError, InvalidInput) as exc:
                    log.warning("dataset image %s skipped: %s", path, exc)
            log.info("preloaded %d dataset images from %s", len(rows), self.dataset)
        if not rows:
            h, w = self.spec.input_size
            noise = np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            rows.append(self.prepare(noise))
            log.info("no dataset images: /gpu uses one random-noise image")
        return rows

    def prepare(self, image: NDArray[np.uint8]) -> NDArray[np.generic]:
        """Pre-process one decoded RGB image into a model input row (no batch axis) in the model's layout.

        Pre-processing works on HWC images; for an ``NCHW`` model the row is transposed to CHW last, as
        MLPerf's dataset code does (``need_transpose``), so that batching stacks (N, 3, H, W). The copy
        is contiguous: a lone row goes to the runtime as it is, without a strided view.
        """
        dtype = self.backend.input_dtype if self.backend is not None else self.spec.input_dtype
        row = preprocess(image, self.spec.preprocess, self.spec.input_size, dtype)
        if self.spec.layout == "NCHW":
            row = np.ascontiguousarray(row.transpose(2, 0, 1))
        return row

    def check_ready(self) -> None:
        if not self.ready:
            raise ModelNotReady(self.error or f"model {self.spec.name} is loading")

    def random_image(self) -> NDArray[np.generic]:
        """A preloaded dataset image (``GET /gpu``)."""
        return self.images[self._rng.randrange(len(self.images))]

    def infer(self, rows: Batch) -> BatchResult:
        """Run rows through the batcher; backend failures become ``BackendError`` (500)."""
        self.check_ready()
        try:
            return self.batcher.submit(rows)
        except Exception as exc:
            self.metrics.inference_errors.labels(self.spec.name).inc()
            raise BackendError(f"inference failed: {type(exc).__name__}: {exc}") from exc

    def _predict(self, rows: Batch) -> Outputs:
        assert self.backend is not None
        return self.backend.predict(rows)

    def close(self) -> None:
        self.batcher.close()
