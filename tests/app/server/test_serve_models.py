"""``kinfer serve`` with real runtimes: tiny generated graphs and the real person detector (slow)."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.app.server.conftest import Server, ServerFactory, build_model

pytestmark = pytest.mark.slow

SKIMAGE = Path(__import__("skimage.data", fromlist=["data"]).__file__).parent


@pytest.fixture(scope="session")
def tiny_ssd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight SSD-MobileNet (same interface), built once per session."""
    return build_model("ssd-mobilenet", tmp_path_factory.mktemp("tiny-ssd"), "--tiny")


@pytest.fixture(scope="session")
def person(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SSDLite person detector (frozen graph + ONNX), built once per session."""
    return build_model("ssdlite-person", tmp_path_factory.mktemp("person"))


def _raw_tensor_body(seed: int = 0) -> dict[str, object]:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(1, 300, 300, 3), dtype=np.uint8)
    tensor = {"name": "image_tensor:0", "shape": [1, 300, 300, 3], "datatype": "UINT8", "data": pixels.ravel().tolist()}
    return {"inputs": [tensor]}


def _outputs(server: Server, model: str) -> dict[str, np.ndarray]:
    resp = server.post(f"/v2/models/{model}/infer", json=_raw_tensor_body())
    assert resp.status_code == 200, resp.text
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in resp.json()["outputs"]}


def test_tiny_model_files_and_model_json(tiny_ssd: Path) -> None:
    assert 10_000 < (tiny_ssd / "model.pb").stat().st_size < 40_000
    assert (tiny_ssd / "model.onnx").exists()
    assert (tiny_ssd / "saved_model" / "saved_model.pb").exists()
    assert len(list((tiny_ssd / "dataset").glob("*.jpg"))) >= 6


@pytest.mark.parametrize("fmt", ["tf-graphdef", "onnx", "tf-savedmodel"])
def test_tiny_graph_serves_the_ssd_interface(serve: ServerFactory, tiny_ssd: Path, fmt: str) -> None:
    server = serve("--model", str(tiny_ssd), "--format", fmt, "--threads", "2", "--max-batch-size", "2")
    assert server.get("/gpu").text == "ok"
    meta = server.get("/v2/models/ssd-mobilenet").json()
    assert {"name": "image_tensor:0", "datatype": "UINT8", "shape": [-1, 300, 300, 3]} in meta["inputs"]
    out = _outputs(server, "ssd-mobilenet")
    assert out["detection_boxes:0"].shape == (1, 100, 4)
    assert out["num_detections:0"].shape == (1,)
    resp = server.post("/predict?threshold=0", data=(tiny_ssd / "dataset" / "astronaut.jpg").read_bytes())
    body = resp.json()
    assert resp.status_code == 200
    assert body["weights"] == "random"
    assert "meaningless" in body["note"]
    assert len(body["detections"]) == 100


def test_onnx_conversion_reproduces_tensorflow(serve: ServerFactory, tiny_ssd: Path) -> None:
    tf_out = _outputs(serve("--model", str(tiny_ssd), "--format", "tf-graphdef"), "ssd-mobilenet")
    onnx_out = _outputs(serve("--model", str(tiny_ssd), "--format", "onnx"), "ssd-mobilenet")
    np.testing.assert_allclose(
        np.sort(tf_out["detection_scores:0"]), np.sort(onnx_out["detection_scores:0"]), atol=1e-4
    )


@pytest.mark.parametrize("fmt", ["onnx", "tf-graphdef"])
def test_real_person_detector_finds_the_astronaut(serve: ServerFactory, person: Path, fmt: str) -> None:
    server = serve("--model", str(person), "--format", fmt)
    resp = server.post("/predict", data=(SKIMAGE / "astronaut.png").read_bytes())
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == "ssdlite-mobilenetv2-person"
    top = body["detections"][0]
    assert top["label"] == "person"
    assert top["score"] > 0.5
    ymin, _, ymax, _ = top["box"]
    assert ymax - ymin > 0.5  # she fills most of the picture's height
    # the cat is not a person
    cat = server.post("/predict", data=(SKIMAGE / "chelsea.png").read_bytes()).json()
    assert cat["detections"] == []


def test_real_person_detector_over_v2_with_a_base64_image(serve: ServerFactory, person: Path) -> None:
    server = serve("--model", str(person))  # model.json: onnx by default
    image = base64.b64encode((SKIMAGE / "camera.png").read_bytes()).decode()
    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [image]}]}
    resp = server.post("/v2/models/ssdlite-mobilenetv2-person/infer", json=body)
    assert resp.status_code == 200
    out = {o["name"]: o for o in resp.json()["outputs"]}
    assert out["detection_scores:0"]["data"][0] > 0.5
    assert out["detection_classes:0"]["data"][0] == 1.0
    with Image.open(SKIMAGE / "camera.png") as img:
        assert img.mode == "L"  # grayscale in, converted to RGB by the server
