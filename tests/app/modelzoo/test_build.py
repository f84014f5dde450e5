"""``kinfer model build`` end to end (slow: TensorFlow and tf2onnx run in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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
