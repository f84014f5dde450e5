"""Model outputs -> JSON-ready results: detections above a score threshold, or the top-k classes."""

from __future__ import annotations

from typing import Any

import numpy as np

from kinfer.server.backends.base import Outputs
from kinfer.server.errors import BackendError
from kinfer.server.labels import label_for
from kinfer.server.modelspec import ModelSpec


def _role(outputs: Outputs, spec: ModelSpec, role: str) -> np.ndarray[Any, Any] | None:
    name = spec.roles.get(role)
    if name is None:
        return None
    if name not in outputs:
        raise BackendError(f"model output {name!r} ({role}) missing; got {sorted(outputs)}")
    return np.asarray(outputs[name])


def detections(outputs: Outputs, spec: ModelSpec, index: int, threshold: float) -> list[dict[str, Any]]:
    """Detections of image ``index`` with score >= ``threshold``, best first.

    Boxes are ``[ymin, xmin, ymax, xmax]`` normalised to [0, 1], as the SSD graphs emit them.
    """
    boxes, scores, classes = (_role(outputs, spec, r) for r in ("boxes", "scores", "classes"))
    if boxes is None or scores is None or classes is None:
        raise BackendError("detection model lacks a boxes/scores/classes output")
    num = _role(outputs, spec, "num")
    count = int(num[index]) if num is not None else scores.shape[1]
    # Few numpy calls, each turning a whole row into Python values: this runs right after the model
    # call, with cold caches, where every distinct numpy entry point costs microseconds.
    row = scores[index].tolist()[:count]
    hits = [j for j, score in enumerate(row) if score >= threshold]
    if not hits:
        return []
    box_rows, class_row = boxes[index].tolist(), classes[index].tolist()
    found = [
        {
            "box": [round(v, 5) for v in box_rows[j]],
            "classId": int(class_row[j]),
            "label": label_for(spec.labels, int(class_row[j])),
            "score": round(row[j], 5),
        }
        for j in hits
    ]
    found.sort(key=lambda d: -d["score"])
    return found


def top_classes(outputs: Outputs, spec: ModelSpec, index: int, top_k: int) -> list[dict[str, Any]]:
    """The ``top_k`` classes of image ``index`` by probability (or the argmax output alone)."""
    probs = _role(outputs, spec, "probabilities")
    if probs is None:
        top1 = _role(outputs, spec, "top1")
        if top1 is None:
            raise BackendError("classification model lacks a probabilities/argmax output")
        class_id = int(np.asarray(top1[index]).reshape(-1)[0])
        return [{"classId": class_id, "label": label_for(spec.labels, class_id), "score": None}]
    row = probs[index].reshape(-1)
    order = np.argsort(-row)[: max(1, top_k)]
    return [
        {"classId": int(i), "label": label_for(spec.labels, int(i)), "score": round(float(row[i]), 5)} for i in order
    ]
