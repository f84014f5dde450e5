"""``kinfer model build`` end to end (slow: TensorFlow and tf2onnx run in a subprocess), then served."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from kinfer.server.labels import COCO80_LABELS, COCO_LABELS
from tests.app.server.conftest import Server, build_model, start_server

pytestmark = pytest.mark.slow


def test_tiny_resnet50_builds_with_the_mlperf_interface(tmp_path: Path) -> None:
    out = tmp_path / "resnet"
    result = subprocess.run(
        [sys.executable, "-m", "kinfer.cli", "model", "build", "resnet50", "--tiny", "--output", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"dataset        {out / 'dataset'}" in result.stdout  # says where the images went
    assert "meaningless" in result.stdout
    meta = json.loads((out / "model.json").read_text())
    assert meta["task"] == "classification"
    assert meta["inputs"] == ["input_tensor:0"]
    assert meta["outputs"] == ["ArgMax:0", "softmax_tensor:0"]
    assert meta["weights"] == "random"
    assert 10_000 < (out / "model.pb").stat().st_size < 40_000

    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.zeros((2, 224, 224, 3), dtype=np.float32)
    top1, probs = session.run(["ArgMax:0", "softmax_tensor:0"], {"input_tensor:0": x})
    assert top1.shape == (2,)
    assert probs.shape == (2, 1001)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)


@pytest.fixture(scope="module")
def tiny_r34(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight SSD-ResNet34 (1200x1200 interface): frozen graph, SavedModel, ONNX; built once."""
    return build_model("ssd-resnet34", tmp_path_factory.mktemp("tiny-r34"), "--tiny")


def test_tiny_ssd_resnet34_builds_with_the_mlperf_interface(tiny_r34: Path) -> None:
    meta = json.loads((tiny_r34 / "model.json").read_text())
    assert meta["inputs"] == ["image:0"]
    assert meta["outputs"] == ["detection_bboxes:0", "detection_classes:0", "detection_scores:0"]
    assert meta["inputSize"] == [1200, 1200]
    assert meta["layout"] == "NCHW"  # as MLPerf's resnet34_tf.22.1.pb ("data-format": "NCHW")
    assert (meta["preprocess"], meta["inputDtype"], meta["weights"]) == ("coco-resnet34-tf", "float32", "random")
    assert set(meta["files"]) == {"onnx", "tf-graphdef", "tf-savedmodel"}
    import onnxruntime as ort

    session = ort.InferenceSession(str(tiny_r34 / "model.onnx"), providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    assert (image.name, image.type, image.shape[1:]) == ("image:0", "tensor(float)", [3, 1200, 1200])
    x = np.random.default_rng(0).normal(0.0, 60.0, size=(2, 3, 1200, 1200)).astype(np.float32)
    boxes, classes, scores = session.run(meta["outputs"], {"image:0": x})
    assert (boxes.shape, classes.shape, scores.shape) == ((2, 200, 4), (2, 200), (2, 200))
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first
    found = scores > 0
    assert found.sum() >= 50
    assert np.all(scores[found] >= 0.05)  # MLPerf's score cut inside the graph
    assert np.all(classes[~found] == 0)  # empty slots are background, not person
    assert np.all(boxes[~found] == 0)
    # MLPerf's contiguous ids 1..80, not COCO category ids (which reach 90 and skip 12, 26, 29, ...)
    ids = set(classes[found].astype(int))
    assert ids <= set(range(1, 81))
    assert ids - set(COCO_LABELS)
    assert max(ids) > 60


def _predict(server: Server, picture: Path) -> list[dict[str, Any]]:
    resp = requests.post(f"{server.url}/predict?threshold=0.05", data=picture.read_bytes(), timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["model"], body["weights"], body["width"]) == ("ssd-resnet34", "random", 1200)
    detections: list[dict[str, Any]] = body["detections"]
    return detections


def test_tiny_ssd_resnet34_serves_coco_detections_alike_in_every_format(tiny_r34: Path) -> None:
    picture = tiny_r34 / "dataset" / "astronaut.jpg"
    formats = ("onnx", "tf-graphdef", "tf-savedmodel")
    servers: dict[str, Server] = {}
    try:
        for fmt in formats:  # both start at once: TensorFlow's import dominates
            servers[fmt] = start_server(["--model", str(tiny_r34), "--format", fmt, "--workers", "1"])
        found = {}
        for fmt in formats:
            servers[fmt].wait_ready()
            found[fmt] = _predict(servers[fmt], picture)
    finally:
        for server in servers.values():
            server.stop()
    onnx = found["onnx"]
    assert len(onnx) >= 5
    assert {d["label"] for d in onnx} <= set(COCO80_LABELS.values())  # COCO names, never "class_81"
    for d in onnx:
        assert COCO80_LABELS[d["classId"]] == d["label"]
        ymin, xmin, ymax, xmax = d["box"]
        assert 0.0 <= ymin <= ymax <= 1.0
        assert 0.0 <= xmin <= xmax <= 1.0
    for fmt in ("tf-graphdef", "tf-savedmodel"):
        tf = found[fmt]
        assert [d["classId"] for d in tf] == [d["classId"] for d in onnx], fmt
        np.testing.assert_allclose([d["score"] for d in tf], [d["score"] for d in onnx], atol=1e-4, err_msg=fmt)
        np.testing.assert_allclose([d["box"] for d in tf], [d["box"] for d in onnx], atol=1e-4, err_msg=fmt)
