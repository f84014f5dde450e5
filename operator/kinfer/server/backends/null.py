"""The ``null`` backend: no model, a configurable delay, outputs of the right shape.

It serves tests and calibration (how much of a latency is HTTP, decoding and queueing rather than
the model). The delay is per batch, as a model call would be, and sleeping releases the GIL as a
real runtime does.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from kinfer.server.backends.base import Backend, Batch, Outputs, TensorInfo
from kinfer.server.modelspec import ModelSpec

DISTRIBUTIONS = ("fixed", "exponential", "uniform")
#: Detections per image, as SSD graphs pad their outputs to a fixed count.
MAX_DETECTIONS = 10
NULL_CLASSES = 10


class NullBackend(Backend):
    """Sleeps for the configured delay, then answers one centred box (or one top class) per image."""

    def load(self) -> None:
        if self.options.delay_distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown delay distribution {self.options.delay_distribution!r}")
        self._rng = np.random.default_rng()
        self._rng_lock = threading.Lock()
        spec = self.spec
        self._roles = _null_roles(spec)
        n = -1
        if spec.task == "detection":
            self.outputs = [
                TensorInfo(self._roles["num"], "float32", (n,)),
                TensorInfo(self._roles["boxes"], "float32", (n, MAX_DETECTIONS, 4)),
                TensorInfo(self._roles["scores"], "float32", (n, MAX_DETECTIONS)),
                TensorInfo(self._roles["classes"], "float32", (n, MAX_DETECTIONS)),
            ]
        else:
            self.outputs = [TensorInfo(self._roles["probabilities"], "float32", (n, NULL_CLASSES))]

    def _delay_s(self) -> float:
        mean = self.options.delay_ms / 1000.0
        if mean <= 0:
            return 0.0
        match self.options.delay_distribution:
            case "exponential":
                with self._rng_lock:
                    return float(self._rng.exponential(mean))
            case "uniform":
                with self._rng_lock:
                    return float(self._rng.uniform(0.0, 2 * mean))
            case _:
                return mean

    def predict(self, batch: Batch) -> Outputs:
        delay = self._delay_s()
        if delay > 0:
            time.sleep(delay)
        n = batch.shape[0]
        if self.spec.task == "classification":
            probs = np.full((n, NULL_CLASSES), 0.1 / (NULL_CLASSES - 1), dtype=np.float32)
            top = np.asarray(batch, dtype=np.float64).reshape(n, -1).mean(axis=1).astype(np.int64)
            probs[np.arange(n), top % NULL_CLASSES] = 0.9
            return {self._roles["probabilities"]: probs}
        boxes = np.zeros((n, MAX_DETECTIONS, 4), dtype=np.float32)
        boxes[:, 0] = (0.25, 0.25, 0.75, 0.75)
        scores = np.zeros((n, MAX_DETECTIONS), dtype=np.float32)
        scores[:, 0] = 0.9
        classes = np.zeros((n, MAX_DETECTIONS), dtype=np.float32)
        classes[:, 0] = min(self.spec.labels, default=1)
        return {
            self._roles["num"]: np.ones((n,), dtype=np.float32),
            self._roles["boxes"]: boxes,
            self._roles["scores"]: scores,
            self._roles["classes"]: classes,
        }


def _null_roles(spec: ModelSpec) -> dict[str, str]:
    """The spec's output names where it has them, SSD's names otherwise."""
    defaults = {
        "num": "num_detections",
        "boxes": "detection_boxes",
        "scores": "detection_scores",
        "classes": "detection_classes",
        "probabilities": "probabilities",
    }
    return {**defaults, **spec.roles}
