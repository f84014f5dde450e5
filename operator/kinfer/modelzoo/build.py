"""Build one model directory: model files, ``model.json`` and ``dataset/``.

Layout (``kinfer serve --model DIR`` reads ``model.json`` and needs no other flag)::

    DIR/model.pb          frozen TF1 GraphDef (--format tf-graphdef)
    DIR/model.onnx        the same graph converted by tf2onnx (--format onnx, the default)
    DIR/saved_model/      SavedModel (random-weight models only; --format tf-savedmodel)
    DIR/model.json        format, tensor names, input size, task, labels, weights, note
    DIR/dataset/*.jpg     scikit-image pictures resized to the input size
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kinfer.server.modelspec import KNOWN_MODELS, MODEL_JSON, ModelSpec, spec_to_json

log = logging.getLogger(__name__)

#: Models ``kinfer model build`` knows how to make.
BUILDABLE = ("ssdlite-person", "ssd-mobilenet", "ssd-resnet34", "resnet50")
TINY_NOTE = "tiny random-weight model with the real interface (tests only): outputs are meaningless"


@dataclass(frozen=True)
class BuildResult:
    """What was written, for the command's summary."""

    root: Path
    files: dict[str, str]
    dataset: Path
    images: int
    spec: ModelSpec
    seconds: float
    #: ``--sizes``: the dataset at each square size, by size (pixels).
    sized: dict[int, Path] = field(default_factory=dict)


def _quiet_tensorflow() -> Any:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    return tf


def build(
    name: str, out: Path, tiny: bool = False, onnx: bool = True, savedmodel: bool = True, sizes: tuple[int, ...] = ()
) -> BuildResult:
    """Build model ``name`` into ``out`` (created if missing); ``sizes`` also writes the dataset at those
    square sizes (``dataset-<size>px/``)."""
    if name not in BUILDABLE:
        raise ValueError(f"unknown model {name!r} (one of {', '.join(BUILDABLE)})")
    started = time.perf_counter()
    from kinfer.modelzoo import dataset, graphs

    out.mkdir(parents=True, exist_ok=True)
    spec = KNOWN_MODELS[name]
    files: dict[str, str] = {}
    _quiet_tensorflow()
    if name == "ssdlite-person":
        from kinfer.modelzoo import ssdlite

        ssdlite.write_graph(out / "model.pb")
        graph_def = graphs.read_graphdef(out / "model.pb")
    else:
        module, fn = _build_random(name, tiny)
        graph_def = graphs.freeze(fn)
        graphs.write_graphdef(graph_def, out / "model.pb")
        if savedmodel:
            graphs.write_savedmodel(module, fn, out / "saved_model")
            files["tf-savedmodel"] = "saved_model"
        if tiny:
            spec = replace(spec, note=TINY_NOTE)
    files["tf-graphdef"] = "model.pb"
    if onnx:
        graphs.to_onnx(graph_def, spec.inputs, spec.outputs, out / "model.onnx")
        files = {"onnx": "model.onnx", **files}
    images = dataset.write_dataset(out / "dataset", spec.input_size)
    meta = spec_to_json(spec, files, "dataset")
    (out / MODEL_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    sized = {size: dataset.size_dir(out, size) for size in dataset.write_sizes(out, sizes)}
    return BuildResult(out, files, out / "dataset", len(images), spec, time.perf_counter() - started, sized)


def _build_random(name: str, tiny: bool) -> tuple[Any, Any]:
    if name == "ssd-mobilenet":
        from kinfer.modelzoo import ssd

        return ssd.build(ssd.TINY if tiny else ssd.FULL)
    if name == "ssd-resnet34":
        from kinfer.modelzoo import ssd_resnet34

        return ssd_resnet34.build(ssd_resnet34.TINY if tiny else ssd_resnet34.FULL)
    from kinfer.modelzoo import resnet

    return resnet.build(tiny)
