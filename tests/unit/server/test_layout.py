"""Input layout: NCHW models (MLPerf's SSD-ResNet34) get CHW rows, in /predict, batches and the v2 API."""

from __future__ import annotations

import numpy as np

from kinfer.server.app import runtime_of
from kinfer.server.backends.base import BackendOptions, Batch, Outputs, TensorInfo
from kinfer.server.backends.null import NullBackend
from kinfer.server.modelspec import ModelSpec
from kinfer.server.preprocess import decode_image, preprocess
from tests.unit.server.conftest import MakeApp, image_bytes

#: A custom model declared NCHW by the flag (uint8 input: the null backend's default dtype).
NCHW = {"layout": "NCHW", "input_size": (4, 5)}
#: MLPerf's SSD-ResNet34 (NCHW by its known spec) at 4x5: float32 rows, 1200x1200 would only be slower.
R34 = {"known_model": "ssd-resnet34", "input_size": (4, 5)}


class _Recording(NullBackend):
    """A null backend that keeps the shape of every batch it is given."""

    def __init__(self, spec: ModelSpec, options: BackendOptions) -> None:
        super().__init__(spec, options)
        self.shapes: list[tuple[int, ...]] = []

    def predict(self, batch: Batch) -> Outputs:
        self.shapes.append(tuple(batch.shape))
        return super().predict(batch)


def test_prepare_transposes_the_preprocessed_row_to_chw_for_an_nchw_model(make_app: MakeApp) -> None:
    rt = runtime_of(make_app(**R34))
    image = decode_image(image_bytes(40, 30))
    row = rt.prepare(image)
    assert row.shape == (3, 4, 5)
    assert row.flags["C_CONTIGUOUS"]  # a lone row goes to the runtime as it is
    hwc = preprocess(image, "coco-resnet34-tf", (4, 5), "float32")
    np.testing.assert_array_equal(row, hwc.transpose(2, 0, 1))
    assert runtime_of(make_app(input_size=(4, 5))).prepare(image).shape == (4, 5, 3)  # NHWC by default


def test_nchw_rows_reach_the_backend_and_stack_as_n_c_h_w(make_app: MakeApp) -> None:
    backends: list[_Recording] = []

    def factory(spec: ModelSpec) -> _Recording:
        backends.append(_Recording(spec, BackendOptions()))
        return backends[-1]

    app = make_app(max_batch_size=2, backend_factory=factory, **NCHW)
    assert backends[0].shapes == [(1, 3, 4, 5), (2, 3, 4, 5)]  # warm-up at batch 1 and the largest batch
    client = app.test_client()
    assert client.post("/predict", data=image_bytes()).status_code == 200
    assert client.get("/gpu").status_code == 200  # the random-noise image is transposed too
    assert backends[0].shapes[2:] == [(1, 3, 4, 5), (1, 3, 4, 5)]


def test_v2_numeric_input_must_be_in_the_models_layout(make_app: MakeApp) -> None:
    client = make_app(**NCHW).test_client()
    data = list(range(3 * 4 * 5))

    def infer(shape: list[int]) -> tuple[int, dict[str, object]]:
        body = {"inputs": [{"name": "image", "shape": shape, "datatype": "UINT8", "data": data}]}
        resp = client.post("/v2/models/null/infer", json=body)
        return resp.status_code, resp.get_json()

    assert infer([1, 3, 4, 5])[0] == 200
    assert infer([3, 4, 5])[0] == 200  # one row without the batch axis
    code, body = infer([1, 4, 5, 3])
    assert code == 400
    assert "[N, 3, 4, 5]" in str(body["error"])


def test_v2_metadata_reports_the_nchw_input_shape_of_ssd_resnet34(make_app: MakeApp) -> None:
    client = make_app(known_model="ssd-resnet34").test_client()
    meta = client.get("/v2/models/ssd-resnet34").get_json()
    assert {"name": "image:0", "datatype": "FP32", "shape": [-1, 3, 1200, 1200]} in meta["inputs"]
    assert client.get("/info").get_json()["layout"] == "NCHW"


def test_a_model_whose_input_contradicts_the_layout_stays_unready_naming_the_flag(make_app: MakeApp) -> None:
    class ChannelsFirst(NullBackend):
        """What MLPerf's resnet34_tf.22.1.pb reports: a fixed [N, 3, H, W] input."""

        def load(self) -> None:
            super().load()
            self.input = TensorInfo("image:0", "float32", (-1, 3, 4, 5))

    app = make_app(input_size=(4, 5), backend_factory=lambda spec: ChannelsFirst(spec, BackendOptions()))
    error = runtime_of(app).error
    assert error is not None
    assert "[-1, 3, 4, 5]" in error
    assert "--layout" in error
    assert app.test_client().get("/v2/health/ready").status_code == 503
    nchw = make_app(backend_factory=lambda spec: ChannelsFirst(spec, BackendOptions()), **NCHW)
    assert runtime_of(nchw).ready
